"""What a worker says about its sends: each upstream error and retry decision, and loudly,
without flooding, an upstream it cannot reach."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from tests.unit.test_dispatch import NUMBER, POLICY, claimed, error, ok, rig
from wagate.core.dispatch import UNREACHABLE_WARNING_S
from wagate.domain.delivery import UpstreamResult
from wagate.domain.errors import NETWORK_ERROR

REFUSED = UpstreamResult(
    error_code=NETWORK_ERROR,
    error_title="Network error",
    error_details="ClientConnectorError: Cannot connect to host 127.0.0.1:9",
)


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The dispatcher's messages logged at exactly `level`."""
    return [
        r.getMessage() for r in caplog.records if r.name == "wagate.dispatch" and r.levelno == level
    ]


async def test_a_retried_error_is_logged_at_info_with_the_message_id_and_the_decision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.dispatch")
    r = rig(error(131000, 500))
    await r.dispatcher.send(NUMBER, claimed(seq=4, attempts=2))
    [line] = lines(caplog, logging.INFO)
    assert "wamid.gateway4" in line
    assert NUMBER.phone_number_id in line
    assert "attempt 2" in line
    assert "131000" in line
    assert "details of 131000" in line
    assert "retry in 4.0 s" in line  # the policy's second delay, unjittered


async def test_a_final_failure_is_logged_as_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.dispatch")
    r = rig(error(131000, 500))
    await r.dispatcher.send(NUMBER, claimed(seq=5, attempts=POLICY.max_attempts))
    [line] = lines(caplog, logging.INFO)
    assert "wamid.gateway5" in line
    assert "failed, not retried" in line


async def test_a_throughput_limit_says_the_number_is_slowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.dispatch")
    r = rig(error(130429, 429))
    await r.dispatcher.send(NUMBER, claimed(seq=6))
    [line] = lines(caplog, logging.INFO)
    assert "130429" in line
    assert "the number slowed down" in line


async def test_an_unreachable_upstream_is_a_warning_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.dispatch")
    r = rig(REFUSED)
    for seq in range(1, 6):
        await r.dispatcher.send(NUMBER, claimed(seq=seq))
    [first] = lines(caplog, logging.WARNING)
    assert "UPSTREAM UNREACHABLE" in first
    assert NUMBER.phone_number_id in first
    assert "http://127.0.0.1:9/sandbox" in first  # where it tried: a wrong URL shows
    assert "WAGATE_SANDBOX_URL" in first
    assert "Cannot connect" in first
    # Every failed send is still told at INFO, as a retry of its message.
    assert len(lines(caplog, logging.INFO)) == 5

    caplog.clear()
    r.clock.at += UNREACHABLE_WARNING_S
    await r.dispatcher.send(NUMBER, claimed(seq=6))
    [again] = lines(caplog, logging.WARNING)
    assert "5 send(s) failed in the last 60 s" in again


async def test_an_upstream_reached_again_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.dispatch")
    r = rig(REFUSED, REFUSED, ok(), ok())
    for seq in range(1, 5):
        await r.dispatcher.send(NUMBER, claimed(seq=seq))
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 2, warnings
    assert "reaches http://127.0.0.1:9/sandbox again" in warnings[1]
    assert "1 more failed send(s)" in warnings[1]


async def test_a_meta_numbers_warning_names_metas_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.dispatch")
    r = rig(REFUSED)
    await r.dispatcher.send(dataclasses.replace(NUMBER, upstream="meta"), claimed())
    [warning] = lines(caplog, logging.WARNING)
    assert "WAGATE_META_BASE_URL" in warning


async def test_a_message_accepted_after_retries_says_so_with_metas_wamid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "wagate.dispatch")
    r = rig(ok("wamid.FROM_META"))
    await r.dispatcher.send(NUMBER, claimed(seq=1))  # a first attempt: nothing to tell
    assert lines(caplog, logging.INFO) == []
    await r.dispatcher.send(NUMBER, claimed(seq=2, attempts=3))
    [line] = lines(caplog, logging.INFO)
    assert "wamid.gateway2" in line
    assert "attempt 3" in line
    assert "wamid.FROM_META" in line
