"""Retry timing: seeded random generators and plain floats, nothing sleeps."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wagate.domain import retry
from wagate.domain.errors import CATALOGUE, MESSAGE_EXPIRED, NETWORK_ERROR
from wagate.domain.retry import (
    DEFAULT_RETRY_POLICY,
    RetryDecision,
    RetryPolicy,
    decide,
)


def delay_of(
    attempt: int,
    code: int,
    http_status: int | None,
    rng: random.Random,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> float | None:
    """The delay `decide` gives, or None when it gives up."""
    decision = decide(attempt, code, http_status, rng, policy)
    return None if decision is None else decision.delay


PERMANENT = sorted(code for code, kind in CATALOGUE.items() if not kind.transient)
TRANSIENT = sorted(code for code, kind in CATALOGUE.items() if kind.transient)
NO_JITTER = RetryPolicy(jitter=0.0)


def test_the_catalogue_has_both_kinds_of_code() -> None:
    # Guards the parametrised tests below against silently running on nothing.
    assert {130429, 131056, 131000, 131016, 133004, 2} <= set(TRANSIENT)
    assert {0, 100, 131026, 131049, 131050, 132001, MESSAGE_EXPIRED} <= set(PERMANENT)


@pytest.mark.parametrize("code", PERMANENT)
def test_a_permanent_code_gets_no_retry(code: int) -> None:
    assert decide(1, code, None, random.Random(0)) is None


def test_a_permanent_code_stays_permanent_on_a_5xx() -> None:
    # 134102 comes back as HTTP 500 yet the catalogue says retrying cannot help.
    assert decide(1, 134102, 500, random.Random(0)) is None


@pytest.mark.parametrize("code", TRANSIENT)
def test_a_transient_code_is_retried(code: int) -> None:
    decision = decide(1, code, None, random.Random(0))
    assert decision is not None
    assert decision.delay > 0


def test_a_network_error_is_a_transient_catalogue_code() -> None:
    assert CATALOGUE[NETWORK_ERROR].transient
    assert decide(1, NETWORK_ERROR, None, random.Random(0), NO_JITTER) == RetryDecision(
        1.0, "message"
    )


@pytest.mark.parametrize(
    ("status", "retried"), [(500, True), (503, True), (400, False), (None, False)]
)
def test_an_unknown_code_is_retried_only_on_a_5xx(status: int | None, retried: bool) -> None:
    assert (decide(1, 999_999, status, random.Random(0)) is not None) is retried


def test_attempts_run_out_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(0)
    assert decide(1, 131000, None, rng, policy) is not None
    assert decide(2, 131000, None, rng, policy) is not None
    assert decide(3, 131000, None, rng, policy) is None
    assert decide(4, 131000, None, rng, policy) is None
    assert decide(9, 131056, None, rng) is not None
    assert decide(10, 131056, None, rng) is None


def test_backoff_doubles_from_one_second_up_to_the_cap() -> None:
    delays = [delay_of(n, 131000, None, random.Random(0), NO_JITTER) for n in range(1, 11)]
    assert delays[:-1] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert delays[-1] is None
    capped = RetryPolicy(jitter=0.0, max_attempts=20)
    assert delay_of(10, 131000, None, random.Random(0), capped) == 300
    assert delay_of(19, 131000, None, random.Random(0), capped) == 300


@pytest.mark.parametrize("seed", range(5))
def test_pair_rate_limit_waits_4_to_the_n_for_the_recipient(seed: int) -> None:
    rng = random.Random(seed)
    decisions = [decide(n, 131056, None, rng) for n in range(1, 7)]
    assert decisions == [
        RetryDecision(4.0, "recipient"),
        RetryDecision(16.0, "recipient"),
        RetryDecision(64.0, "recipient"),
        RetryDecision(256.0, "recipient"),
        RetryDecision(300.0, "recipient"),  # 1024 s, capped at max_delay_s
        RetryDecision(300.0, "recipient"),
    ]


def test_throughput_limit_slows_the_whole_number() -> None:
    decision = decide(1, 130429, 429, random.Random(0))
    assert decision is not None
    assert decision.scope == "number"


@pytest.mark.parametrize("code", [131000, 131016, 133004, 2, NETWORK_ERROR])
def test_other_transient_errors_concern_only_the_message(code: int) -> None:
    decision = decide(1, code, None, random.Random(0))
    assert decision is not None
    assert decision.scope == "message"


def test_jitter_stays_within_its_band_over_many_seeds() -> None:
    for attempt in (1, 4, 9):
        nominal = min(300.0, 2.0 ** (attempt - 1))
        delays = [delay_of(attempt, 131000, None, random.Random(seed)) for seed in range(2000)]
        assert all(d is not None and 0.8 * nominal <= d <= nominal for d in delays)
        spread = [d for d in delays if d is not None]
        # The draws must actually cover the band, not sit at one end of it.
        assert min(spread) < 0.81 * nominal
        assert max(spread) > 0.99 * nominal


def test_the_same_seed_gives_the_same_delay() -> None:
    first = [delay_of(n, 131000, None, random.Random(42)) for n in range(1, 10)]
    second = [delay_of(n, 131000, None, random.Random(42)) for n in range(1, 10)]
    assert first == second
    assert first != [delay_of(n, 131000, None, random.Random(43)) for n in range(1, 10)]


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        decide(0, 131000, None, random.Random(0))


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=10**9)
    assert delay_of(100_000, 131000, None, random.Random(0), policy) == pytest.approx(
        300.0, rel=0.2
    )
    assert delay_of(100_000, 131056, None, random.Random(0), policy) == 300.0


@settings(max_examples=500, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=5000),
    code=st.one_of(st.sampled_from([*CATALOGUE, NETWORK_ERROR]), st.integers(-10, 2_000_000)),
    status=st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    seed=st.integers(min_value=0, max_value=2**32),
    base=st.floats(min_value=0.01, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    cap=st.floats(min_value=10.0, max_value=100_000.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_delay_never_exceeds_the_maximum(
    attempt: int,
    code: int,
    status: int | None,
    seed: int,
    base: float,
    factor: float,
    cap: float,
    jitter: float,
) -> None:
    policy = RetryPolicy(
        base_delay_s=base, factor=factor, max_delay_s=cap, max_attempts=10_000, jitter=jitter
    )
    delay = delay_of(attempt, code, status, random.Random(seed), policy)
    if delay is not None:
        assert 0 <= delay <= cap


def test_default_policy() -> None:
    assert dataclasses.asdict(DEFAULT_RETRY_POLICY) == {
        "base_delay_s": 1.0,
        "factor": 2.0,
        "max_delay_s": 300.0,
        "max_attempts": 10,
        "jitter": 0.2,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_RETRY_POLICY.max_attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_delay_s": 0.0}, "base_delay_s"),
        ({"factor": 0.5}, "factor"),
        ({"max_delay_s": 0.5}, "max_delay_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_policy_rejects_invalid_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_module_reads_no_clock() -> None:
    tree = ast.parse(inspect.getsource(retry))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "datetime", "asyncio", "threading"}
