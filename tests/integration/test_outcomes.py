"""Outcomes in the queue on SQLite and PostgreSQL: reaped leases, late records, hostile texts."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.test_store import new_message, new_number
from wagate.adapters.store.queue import MAX_REAPS, SqlQueue
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.tables import messages, phone_numbers
from wagate.domain.delivery import Claimed, Outcome
from wagate.domain.errors import DELIVERY_ABANDONED

NOW = 1_700_000_100.0
LEASE_S = 10.0


async def _row(store: SqlStore, message_id: str) -> Any:
    async with store.engine.connect() as connection:
        return (await connection.execute(select(messages).where(messages.c.id == message_id))).one()


async def _claim(queue: SqlQueue, phone_number_id: str, owner: str, now: float) -> list[Claimed]:
    return await queue.claim(phone_number_id, owner, now, lease_s=LEASE_S, horizon_s=1.0, limit=10)


def _forwarded(message: Claimed, owner: str, wamid: str, at: float) -> Outcome:
    return Outcome(
        message.seq, owner, "forwarded", int(at * 1000), wamid=wamid, upstream_status="accepted"
    )


async def test_a_message_whose_lease_ends_three_times_fails_instead_of_being_sent_again(
    store: SqlStore,
) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    queue = SqlQueue(store.engine)
    now = NOW
    for reap in range(1, MAX_REAPS + 1):
        [claimed] = await _claim(queue, number.phone_number_id, f"worker-{reap}", now)
        assert claimed.id == message.id
        now += LEASE_S + 2  # the worker died (or lost its database) before recording
        assert await queue.reap_leases(now) == 1
        row = await _row(store, message.id)
        assert row.reaps == reap
        if reap < MAX_REAPS:
            assert (row.state, row.status) == ("queued", "pending")
    assert (row.state, row.status, row.error_code) == ("done", "failed", DELIVERY_ABANDONED)
    assert row.error_title == "Delivery abandoned: the outcome could not be recorded"
    assert "may or may not have reached Meta" in row.error_details
    assert await _claim(queue, number.phone_number_id, "worker-x", now + 1) == []
    await queue.close()


async def test_a_late_record_of_a_reaped_lease_still_lands_if_nobody_claimed_since(
    store: SqlStore,
) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    queue = SqlQueue(store.engine)
    [claimed] = await _claim(queue, number.phone_number_id, "slow-worker", NOW)
    assert await queue.reap_leases(NOW + LEASE_S + 2) == 1
    # The worker's database came back: its retried record lands, so nobody sends again.
    await queue.record(_forwarded(claimed, "slow-worker", "wamid.LATE", NOW + LEASE_S + 3))
    row = await _row(store, message.id)
    assert (row.state, row.upstream_wamid) == ("forwarded", "wamid.LATE")
    assert await _claim(queue, number.phone_number_id, "other", NOW + LEASE_S + 4) == []
    await queue.close()


async def test_a_late_record_loses_to_a_newer_claim(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    queue = SqlQueue(store.engine)
    [first] = await _claim(queue, number.phone_number_id, "slow-worker", NOW)
    await queue.reap_leases(NOW + LEASE_S + 2)
    [second] = await _claim(queue, number.phone_number_id, "new-worker", NOW + LEASE_S + 3)
    await queue.record(_forwarded(first, "slow-worker", "wamid.OLD", NOW + LEASE_S + 4))
    assert (await _row(store, message.id)).state == "sending"
    await queue.record(_forwarded(second, "new-worker", "wamid.NEW", NOW + LEASE_S + 5))
    assert (await _row(store, message.id)).upstream_wamid == "wamid.NEW"
    await queue.close()


async def test_metas_texts_with_nul_are_stored_cleaned(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    queue = SqlQueue(store.engine)
    [claimed] = await _claim(queue, number.phone_number_id, "w", NOW)
    await queue.record(
        Outcome(
            claimed.seq,
            "w",
            "failed",
            int(NOW * 1000),
            upstream_status="x" * 100 + "\x00",
            error_code=131026,
            error_title="Message\x00 undeliverable",
            error_details="bad\x00details",
        )
    )
    row = await _row(store, message.id)
    assert (row.status, row.error_code) == ("failed", 131026)
    assert (row.error_title, row.error_details) == ("Message undeliverable", "baddetails")
    await queue.close()


async def test_a_long_wamid_is_recorded(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    queue = SqlQueue(store.engine)
    [claimed] = await _claim(queue, number.phone_number_id, "w", NOW)
    wamid = "wamid." + "Q" * 1000  # what a 128-character BSUID and more could make
    await queue.record(_forwarded(claimed, "w", wamid, NOW))
    row = await _row(store, message.id)
    assert (row.state, row.upstream_wamid) == ("forwarded", wamid)
    await queue.close()


async def test_a_130429_halves_the_numbers_shared_rate_once_per_hold(store: SqlStore) -> None:
    number = await new_number(store)
    assert number.mps == 80
    for _ in range(20):
        await store.add_message(new_message(number))
    queue = SqlQueue(store.engine)
    await queue.throttle(number.phone_number_id, NOW)
    # Answers to sends already in flight are the same overload: they count once.
    await queue.throttle(number.phone_number_id, NOW + 0.5)
    async with store.engine.connect() as connection:
        row = (
            await connection.execute(
                select(phone_numbers.c.throttle_factor, phone_numbers.c.throttled_at).where(
                    phone_numbers.c.phone_number_id == number.phone_number_id
                )
            )
        ).one()
    assert (row.throttle_factor, row.throttled_at) == (0.5, int(NOW * 1_000_000))
    claimed = await _claim(queue, number.phone_number_id, "worker-1", NOW)
    # Slots are float seconds of a Unix time: equal to within a microsecond.
    assert [c.slot - NOW for c in claimed] == pytest.approx(
        [k * 0.025 for k in range(10)], abs=1e-6
    )
    assert {c.interval for c in claimed} == {0.025}
    # Ten seconds later the rate is back to 80/s.
    later = await _claim(queue, number.phone_number_id, "worker-1", NOW + 10)
    assert {c.interval for c in later} == {0.0125}
    await queue.close()
