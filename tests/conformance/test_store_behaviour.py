"""What every store does alike, in memory, on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from tests.conformance.conftest import Backend
from wagate.adapters.memory import MemoryQueue
from wagate.adapters.store import tables
from wagate.adapters.store.queue import SqlQueue
from wagate.core import admin
from wagate.core.access import hash_key
from wagate.domain import pacing
from wagate.domain.delivery import MAX_REAPS, Claimed, Outcome, Waiting
from wagate.domain.errors import DELIVERY_ABANDONED, MESSAGE_EXPIRED
from wagate.domain.model import (
    KeyOwner,
    MessageQuery,
    NewMessage,
    PhoneNumber,
    Status,
    StoredMessage,
)
from wagate.domain.statuses import EventRow, PreferenceRow, StatusRow, status_row
from wagate.ports import IdempotencyConflict, PhoneNumberGone, SystemClock

T0 = 1_800_000_000.0
T0_MS = int(T0 * 1000)
OWNER = "worker-a"
_ids = itertools.count(1)


async def new_number(backend: Backend, *, mps: int = 80, upstream: str = "sandbox") -> PhoneNumber:
    """A phone number in a new project."""
    project, _ = await admin.create_project(backend.store, SystemClock(), "conformance")
    return await admin.add_number(
        backend.store,
        SystemClock(),
        project_id=project.id,
        phone_number_id=f"10{next(_ids):013d}",
        waba_id="102290129340398",
        mps=mps,
        upstream="meta" if upstream == "meta" else "sandbox",
        access_token="token",
    )


def new_message(
    number: PhoneNumber,
    *,
    at_ms: int = T0_MS,
    recipient: str = "447700900123",
    key: str | None = None,
    ttl_ms: int = 86_400_000,
) -> NewMessage:
    """A message for a number, created at `at_ms`."""
    return NewMessage(
        id=f"wamid.gateway{next(_ids)}",
        project_id=number.project_id,
        phone_number_id=number.phone_number_id,
        recipient_input="+" + recipient,
        recipient=recipient,
        recipient_kind="phone",
        request=json.dumps({"template": {"name": "promo", "language": {"code": "en_US"}}}),
        template_name="promo",
        template_language="en_US",
        biz_opaque_callback_data=None,
        created_at=at_ms,
        expires_at=at_ms + ttl_ms,
        idempotency_key=key,
        request_hash=None if key is None else "h" * 64,
    )


async def forwarded(backend: Backend, number: PhoneNumber, wamid: str) -> NewMessage:
    """A message Meta accepted under `wamid`."""
    message = new_message(number)
    await backend.store.add_message(message)
    [claimed] = await claim(backend, number, T0)
    await backend.queue.record(Outcome(claimed.seq, OWNER, "forwarded", T0_MS, wamid=wamid))
    return message


async def claim(
    backend: Backend, number: PhoneNumber, now: float, *, owner: str = OWNER
) -> list[Claimed]:
    """A claim with a long lease and a half-second horizon."""
    return await backend.queue.claim(
        number.phone_number_id, owner, now, lease_s=60.0, horizon_s=0.5, limit=100
    )


async def status_of(backend: Backend, message: NewMessage) -> Status:
    """The message's status as read back."""
    stored = await backend.store.get_message(message.phone_number_id, message.id)
    assert stored is not None
    return stored.status


def report(wamid: str, status: Status, at_s: int, errors: object = None) -> StatusRow:
    """A status as ingest builds it from Meta's webhook."""
    return status_row(wamid, status, at_s * 1000, json.dumps(errors) if errors else None)


# ---- messages ------------------------------------------------------------------------


async def test_a_message_reads_back_as_it_was_stored(backend: Backend) -> None:
    number = await new_number(backend)
    message = new_message(number, key="k-1")
    await backend.store.add_message(message)
    stored = await backend.store.get_message(number.phone_number_id, message.id)
    assert stored is not None
    assert (stored.id, stored.status, stored.created_at, stored.updated_at) == (
        message.id,
        "pending",
        T0_MS,
        T0_MS,
    )
    assert (stored.recipient, stored.idempotency_key, stored.upstream_wamid) == (
        "447700900123",
        "k-1",
        None,
    )
    assert await backend.store.get_message("another-number", message.id) is None


async def test_a_listing_pages_newest_first_with_cursors_both_ways(backend: Backend) -> None:
    number = await new_number(backend)
    messages = [new_message(number, at_ms=T0_MS + i) for i in range(5)]
    for message in messages:
        await backend.store.add_message(message)
    phone = number.phone_number_id
    first = await backend.store.list_messages(MessageQuery(phone, limit=2))
    assert [m.id for m in first] == [messages[4].id, messages[3].id]
    older = await backend.store.list_messages(MessageQuery(phone, limit=2, after_seq=first[-1].seq))
    assert [m.id for m in older] == [messages[2].id, messages[1].id]
    newer = await backend.store.list_messages(MessageQuery(phone, limit=2, before_seq=older[0].seq))
    assert [m.id for m in newer] == [messages[3].id, messages[4].id]  # oldest first


async def test_a_listing_filters_by_status_and_time(backend: Backend) -> None:
    number = await new_number(backend)
    messages = [new_message(number, at_ms=T0_MS + i * 1000) for i in range(3)]
    for message in messages:
        await backend.store.add_message(message)
    phone = number.phone_number_id
    window = MessageQuery(phone, since=T0_MS + 1000, until=T0_MS + 1000)
    assert [m.id for m in await backend.store.list_messages(window)] == [messages[1].id]
    assert await backend.store.list_messages(MessageQuery(phone, status="failed")) == []
    pending = await backend.store.list_messages(MessageQuery(phone, status="pending"))
    assert len(pending) == 3


async def test_an_idempotency_key_is_taken_once_per_project_until_released(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    first = new_message(number, key="same")
    await backend.store.add_message(first)
    with pytest.raises(IdempotencyConflict):
        await backend.store.add_message(new_message(number, key="same"))
    found = await backend.store.find_by_idempotency_key(number.project_id, "same")
    assert found is not None
    assert found.id == first.id
    other_project = await new_number(backend)
    await backend.store.add_message(new_message(other_project, key="same"))
    await backend.store.release_idempotency_key(first.id)
    assert await backend.store.find_by_idempotency_key(number.project_id, "same") is None
    await backend.store.add_message(new_message(number, key="same"))


# ---- keys, projects, numbers -----------------------------------------------------------


async def test_a_live_key_names_its_project_and_rate_limit_and_a_revoked_one_nothing(
    backend: Backend,
) -> None:
    clock = SystemClock()
    project, issued = await admin.create_project(backend.store, clock, "p", rate_limit=30)
    key_hash = hash_key(issued.secret)
    assert await backend.store.find_project_by_key_hash(key_hash) == KeyOwner(project.id, 30)
    assert await backend.store.set_project_rate_limit(project.id, None)
    assert await backend.store.find_project_by_key_hash(key_hash) == KeyOwner(project.id, None)
    assert not await backend.store.set_project_rate_limit("prj_missing", 5)
    assert await backend.store.revoke_api_key(issued.key.id, T0_MS)
    assert not await backend.store.revoke_api_key(issued.key.id, T0_MS)
    assert await backend.store.find_project_by_key_hash(key_hash) is None
    assert await backend.store.find_project_by_key_hash(hash_key("wg_unknown")) is None
    [listed] = await backend.store.list_api_keys(project.id)
    assert listed.revoked_at == T0_MS


async def test_a_phone_number_reads_back_and_its_id_is_taken_once(backend: Backend) -> None:
    number = await new_number(backend, mps=7)
    assert await backend.store.get_phone_number(number.phone_number_id) == number
    assert await backend.store.get_phone_number("missing") is None
    with pytest.raises(ValueError, match="exists already"):
        await backend.store.add_phone_number(number, created_at=T0_MS)
    with pytest.raises(ValueError, match="its project does not"):
        await backend.store.add_phone_number(
            PhoneNumber("999", "1", "prj_missing", "sandbox", "t", 1), created_at=T0_MS
        )


async def test_numbers_list_by_project_and_update_only_what_is_given(backend: Backend) -> None:
    first = await new_number(backend, mps=7)
    second = await new_number(backend)
    assert await backend.store.list_phone_numbers(first.project_id) == [first]
    everything = await backend.store.list_phone_numbers(None)
    assert {first, second} <= set(everything)
    ids = [n.phone_number_id for n in everything]
    assert ids == sorted(ids)
    store = backend.store
    assert await store.update_phone_number(
        first.phone_number_id, access_token="rotated", mps=None, waba_id=None
    )
    assert await store.get_phone_number(first.phone_number_id) == replace(
        first, access_token="rotated"
    )
    assert await store.update_phone_number(
        first.phone_number_id, access_token=None, mps=20, waba_id="42"
    )
    assert await store.get_phone_number(first.phone_number_id) == replace(
        first, access_token="rotated", mps=20, waba_id="42"
    )
    assert not await store.update_phone_number("404", access_token="x", mps=None, waba_id=None)
    assert await store.get_phone_number(second.phone_number_id) == second


async def test_a_number_with_undelivered_messages_is_removed_only_when_forced(
    backend: Backend,
) -> None:
    number, other = await new_number(backend), await new_number(backend)
    delivered = await forwarded(backend, number, "wamid.R1")
    await backend.statuses.ingest([report("wamid.R1", "delivered", 1)], [], [], T0_MS)
    await backend.store.add_message(new_message(number))  # queued
    await backend.store.add_message(new_message(number))
    await claim(backend, number, T0 + 1)  # ... and both now being sent
    kept = new_message(other)
    await backend.store.add_message(kept)

    assert await backend.store.remove_phone_number(number.phone_number_id, force=False) == 2
    assert await backend.store.get_phone_number(number.phone_number_id) == number
    assert await backend.store.remove_phone_number(number.phone_number_id, force=True) == 2
    assert await backend.store.get_phone_number(number.phone_number_id) is None
    assert await backend.store.get_message(number.phone_number_id, delivered.id) is None
    assert await backend.statuses.timeline(["wamid.R1"]) in ({}, {"wamid.R1": []})
    assert await waiting(backend) == [Waiting(other, T0)]
    assert await backend.store.get_message(other.phone_number_id, kept.id) is not None
    assert await backend.store.remove_phone_number(number.phone_number_id, force=True) is None
    # A send that passed the door before the removal is not stored.
    with pytest.raises(PhoneNumberGone):
        await backend.store.add_message(new_message(number))
    # Its id can be registered again, from scratch.
    await backend.store.add_phone_number(number, created_at=T0_MS)


async def test_only_numbers_with_queued_messages_wait_each_with_its_earliest_due_time(
    backend: Backend,
) -> None:
    await new_number(backend)  # idle
    busy, held = await new_number(backend), await new_number(backend)
    assert await waiting(backend) == []
    for at_ms in (T0_MS + 5_000, T0_MS, T0_MS + 9_000):
        await backend.store.add_message(new_message(busy, at_ms=at_ms))
    # Due in 30 s (as a retry or a put-off message would be).
    await backend.store.add_message(new_message(held, at_ms=T0_MS + 30_000))
    assert await waiting(backend) == [Waiting(busy, T0), Waiting(held, T0 + 30)]
    # Claimed (sending) and finished messages wait no more.
    assert len(await claim(backend, busy, T0 + 10)) == 3
    assert await waiting(backend) == [Waiting(held, T0 + 30)]


async def waiting(backend: Backend) -> list[Waiting]:
    """The numbers with queued work, in the order of their ids."""
    return sorted(await backend.queue.waiting(), key=lambda w: w.number.phone_number_id)


class Ticks:
    """A clock a second later on every reading."""

    def __init__(self) -> None:
        self.at = T0

    def now(self) -> float:
        """The next second."""
        self.at += 1.0
        return self.at

    async def sleep(self, seconds: float) -> None:
        """Nothing waits."""


async def test_projects_list_oldest_first(backend: Backend) -> None:
    clock = Ticks()
    for name in ("b", "a"):
        await admin.create_project(backend.store, clock, name)
    names = [p.name for p in await backend.store.list_projects()]
    assert names[-2:] == ["b", "a"]


# ---- the queue -----------------------------------------------------------------------


async def test_a_claim_takes_due_messages_once_at_slots_spaced_by_the_rate(
    backend: Backend,
) -> None:
    number = await new_number(backend, mps=4)
    for i in range(3):
        await backend.store.add_message(new_message(number, at_ms=T0_MS + i))
    await backend.store.add_message(new_message(number, at_ms=T0_MS + 60_000))  # not due
    claimed = await backend.queue.claim(
        number.phone_number_id, OWNER, T0 + 0.01, lease_s=60.0, horizon_s=1.0, limit=100
    )
    # 4 msg/s over a 1 s horizon: slots at 0, 0.25, 0.5 s (all three due messages).
    assert [c.slot - (T0 + 0.01) for c in claimed] == pytest.approx([0.0, 0.25, 0.5])
    assert [c.attempts for c in claimed] == [1, 1, 1]
    assert claimed[0].interval == pytest.approx(0.25)
    assert await claim(backend, number, T0 + 0.02, owner="worker-b") == []


async def test_the_horizon_bounds_a_claim_and_the_next_one_goes_on_from_its_slots(
    backend: Backend,
) -> None:
    number = await new_number(backend, mps=4)
    for _ in range(6):
        await backend.store.add_message(new_message(number))
    first = await claim(backend, number, T0)
    assert [c.slot for c in first] == pytest.approx([T0, T0 + 0.25, T0 + 0.5])
    second = await claim(backend, number, T0 + 0.5)
    assert [c.slot for c in second] == pytest.approx([T0 + 0.75, T0 + 1.0])


async def test_a_claim_of_a_slow_number_books_two_intervals_ahead(backend: Backend) -> None:
    # 1 msg/s against a half-second horizon: one slot per claim would send once per
    # round of claims over every number, far below the number's rate.
    number = await new_number(backend, mps=1)
    for _ in range(5):
        await backend.store.add_message(new_message(number))
    first = await claim(backend, number, T0)
    assert [c.slot for c in first] == pytest.approx([T0, T0 + 1.0, T0 + 2.0])


async def test_a_throttle_halves_the_numbers_rate(backend: Backend) -> None:
    number = await new_number(backend, mps=10)
    for _ in range(2):
        await backend.store.add_message(new_message(number))
    await backend.queue.throttle(number.phone_number_id, T0)
    claimed = await claim(backend, number, T0)
    assert claimed[0].interval == pytest.approx(0.2)


async def test_outcomes_forward_fail_or_requeue_and_only_the_lease_holder_writes_them(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    messages = [new_message(number) for _ in range(3)]
    for message in messages:
        await backend.store.add_message(message)
    a, b, c = await claim(backend, number, T0)
    await backend.queue.record(Outcome(a.seq, "someone-else", "failed", T0_MS, error_code=1))
    await backend.queue.record(Outcome(a.seq, OWNER, "forwarded", T0_MS, wamid="wamid.M1"))
    await backend.queue.record(
        Outcome(b.seq, OWNER, "failed", T0_MS, error_code=131026, error_title="Undeliverable")
    )
    await backend.queue.record(
        Outcome(c.seq, OWNER, "retry", T0_MS, error_code=131000, due_at_ms=T0_MS + 5000)
    )
    first = await backend.store.get_message(number.phone_number_id, messages[0].id)
    assert first is not None
    assert (first.status, first.upstream_wamid) == ("pending", "wamid.M1")
    second = await backend.store.get_message(number.phone_number_id, messages[1].id)
    assert second is not None
    assert (second.status, second.error_code, second.error_title) == (
        "failed",
        131026,
        "Undeliverable",
    )
    assert await claim(backend, number, T0 + 4) == []
    [again] = await claim(backend, number, T0 + 5)
    assert (again.id, again.attempts) == (messages[2].id, 2)


async def test_a_hold_keeps_back_one_recipient_only(backend: Backend) -> None:
    number = await new_number(backend)
    held = new_message(number, recipient="447700900001")
    free = new_message(number, recipient="447700900002")
    for message in (held, free):
        await backend.store.add_message(message)
    await backend.queue.hold_recipient(number.phone_number_id, "447700900001", T0_MS + 10_000)
    [claimed] = await claim(backend, number, T0)
    assert claimed.id == free.id
    [later] = await claim(backend, number, T0 + 10)
    assert later.id == held.id


async def test_an_ended_lease_requeues_the_message_until_the_reap_limit_fails_it(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    message = new_message(number)
    await backend.store.add_message(message)
    now = T0
    for reap in range(1, MAX_REAPS + 1):
        [claimed] = await backend.queue.claim(
            number.phone_number_id, OWNER, now, lease_s=1.0, horizon_s=0.5, limit=10
        )
        assert claimed.attempts == reap
        assert await backend.queue.reap_leases(now + 0.5) == 0
        now += 2.0
        assert await backend.queue.reap_leases(now) == 1
    stored = await backend.store.get_message(number.phone_number_id, message.id)
    assert stored is not None
    assert (stored.status, stored.error_code) == ("failed", DELIVERY_ABANDONED)
    assert await claim(backend, number, now) == []


async def test_a_queued_message_past_its_ttl_expires_and_a_claimed_one_does_not(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    claimed_one = new_message(number, ttl_ms=1000)
    await backend.store.add_message(claimed_one)
    await claim(backend, number, T0)
    queued_one = new_message(number, ttl_ms=1000)
    await backend.store.add_message(queued_one)
    assert await backend.queue.expire(T0 + 1.0) == 0  # at its expiry instant it still lives
    assert await backend.queue.expire(T0 + 2.0) == 1
    stored = await backend.store.get_message(number.phone_number_id, queued_one.id)
    assert stored is not None
    assert (stored.status, stored.error_code) == ("failed", MESSAGE_EXPIRED)
    assert await status_of(backend, claimed_one) == "pending"


# ---- statuses from Meta ----------------------------------------------------------------


async def test_statuses_move_a_message_forward_only_and_duplicates_are_stored_once(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    message = await forwarded(backend, number, "wamid.S1")
    ingest = backend.statuses.ingest
    both = [report("wamid.S1", "sent", 1), report("wamid.S1", "delivered", 2)]
    result = await ingest(both, [], [], T0_MS)
    assert (result.stored, result.duplicates, result.moved) == (2, 0, 1)
    assert await status_of(backend, message) == "delivered"
    again = await ingest([report("wamid.S1", "delivered", 2)], [], [], T0_MS)
    assert (again.stored, again.duplicates, again.moved) == (0, 1, 0)
    await ingest([report("wamid.S1", "read", 3)], [], [], T0_MS)
    await ingest([report("wamid.S1", "failed", 4, [{"code": 131026}])], [], [], T0_MS)
    assert await status_of(backend, message) == "read"


async def test_a_failed_status_carries_metas_error(backend: Backend) -> None:
    number = await new_number(backend)
    message = await forwarded(backend, number, "wamid.F1")
    errors = [{"code": 131026, "title": "Message undeliverable"}]
    await backend.statuses.ingest([report("wamid.F1", "failed", 1, errors)], [], [], T0_MS)
    stored = await backend.store.get_message(number.phone_number_id, message.id)
    assert stored is not None
    assert (stored.status, stored.error_code, stored.error_title) == (
        "failed",
        131026,
        "Message undeliverable",
    )


async def test_a_status_that_beats_its_wamid_is_applied_once_the_wamid_is_recorded(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    early = await backend.statuses.ingest([report("wamid.E1", "delivered", 1)], [], [], T0_MS)
    assert (early.stored, early.moved) == (1, 0)
    message = await forwarded(backend, number, "wamid.E1")
    assert await status_of(backend, message) == "delivered"
    assert await backend.queue.reconcile(T0 + 10) == 0


async def test_a_timeline_lists_each_status_once_in_metas_time_order(backend: Backend) -> None:
    number = await new_number(backend)
    await forwarded(backend, number, "wamid.T1")
    pricing = StatusRow("wamid.T1", "sent", 1000, '{"billable":true}', None, None, None, None)
    await backend.statuses.ingest([report("wamid.T1", "read", 3), pricing], [], [], T0_MS)
    await backend.statuses.ingest([report("wamid.T1", "sent", 9)], [], [], T0_MS)
    timeline = await backend.statuses.timeline(["wamid.T1", "wamid.none"])
    assert list(timeline) == ["wamid.T1"]
    assert [(e.status, e.timestamp_ms, e.pricing) for e in timeline["wamid.T1"]] == [
        ("sent", 1000, '{"billable":true}'),
        ("read", 3000, None),
    ]
    assert await backend.statuses.timeline([]) == {}


async def test_a_click_is_stored_once_however_often_meta_retries_it(backend: Backend) -> None:
    number = await new_number(backend)
    await forwarded(backend, number, "wamid.C1")
    click = EventRow("wamid.C1", "click", "447700900123", '{"click_id":"c1"}', T0_MS, "k" * 64)
    for _ in range(2):
        await backend.statuses.ingest([], [], [click], T0_MS)
    assert await backend.statuses.events("wamid.C1") == [("click", '{"click_id":"c1"}')]


async def test_the_newest_preference_wins_whatever_order_it_comes_in(backend: Backend) -> None:
    newer = PreferenceRow("waba-1", "447700900123", "resume", T0_MS + 1000)
    older = PreferenceRow("waba-1", "447700900123", "stop", T0_MS)
    await backend.statuses.ingest([], [newer], [], T0_MS)
    await backend.statuses.ingest([], [older], [], T0_MS)
    assert await backend.statuses.preference("waba-1", "447700900123") == "resume"


async def test_rows_no_store_can_hold_are_refused_and_the_rest_stored(backend: Backend) -> None:
    number = await new_number(backend)
    await forwarded(backend, number, "wamid.R1")
    result = await backend.statuses.ingest(
        [report("wamid.R1", "sent", 1), report("wamid.\x00bad", "sent", 1)], [], [], T0_MS
    )
    assert (result.stored, result.rejected) == (1, 1)


async def test_a_sandbox_signed_body_cannot_move_a_meta_numbers_message(backend: Backend) -> None:
    number = await new_number(backend, upstream="meta")
    message = await forwarded(backend, number, "wamid.X1")
    result = await backend.statuses.ingest(
        [report("wamid.X1", "read", 1)], [], [], T0_MS, sandbox_only=True
    )
    assert (result.stored, result.moved) == (0, 0)
    assert await status_of(backend, message) == "pending"


# ---- pair pacing (Meta: about one message per 6 s to a user, bursts of 45) ------------

PAIR = pacing.pair_rate(pacing.PAIR_INTERVAL_S, pacing.PAIR_BURST)


async def due_at(backend: Backend, messages: Sequence[NewMessage]) -> list[int]:
    """The queue's `due_at` of each message (what a rewrite of a backlog would change)."""
    ids = [message.id for message in messages]
    if isinstance(backend.queue, MemoryQueue):
        rows = {row.message.id: row.due_at for row in backend.queue.database.messages.values()}
        return [rows[i] for i in ids]
    assert isinstance(backend.queue, SqlQueue)
    async with backend.queue.engine.connect() as connection:
        found = await connection.execute(
            select(tables.messages.c.id, tables.messages.c.due_at).where(
                tables.messages.c.id.in_(ids)
            )
        )
        stored = {row.id: row.due_at for row in found}
    return [stored[i] for i in ids]


async def pair_rows(backend: Backend) -> int:
    """How many pairs have pacing stored."""
    if isinstance(backend.queue, MemoryQueue):
        return len(backend.queue.database.pairs)
    assert isinstance(backend.queue, SqlQueue)
    async with backend.queue.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(tables.pair_pacing))
    return int(count or 0)


def slots_of(claimed: Sequence[Claimed], recipient: str) -> list[float]:
    return [c.slot for c in claimed if c.recipient == recipient]


async def test_a_flood_to_one_recipient_goes_at_the_pair_rate_and_the_others_pass_it(
    backend: Backend,
) -> None:
    number = await new_number(backend, mps=1000)
    flood, other = "447700900001", "447700900002"
    for _ in range(60):
        await backend.store.add_message(new_message(number, at_ms=T0_MS - 1, recipient=flood))
    for _ in range(5):
        await backend.store.add_message(new_message(number, recipient=other))

    first = await claim(backend, number, T0)
    # Meta's burst of 45 less the spare one at once; the other recipient is not held up
    # by the 16 flood messages that had no turn (they took no slot of the number).
    assert len(slots_of(first, flood)) == PAIR.burst
    assert len(slots_of(first, other)) == 5
    sent = slots_of(first, flood)
    for turn in range(1, 17):
        at = T0 + turn * pacing.PAIR_INTERVAL_S
        assert await claim(backend, number, at - 0.5) == []
        claimed = await claim(backend, number, at)
        assert [c.recipient for c in claimed] == [flood]
        sent += slots_of(claimed, flood)
    assert await claim(backend, number, T0 + 200) == []
    micros = [pacing.to_micros(slot) for slot in sent]
    assert all(
        micros[j] - micros[i] >= (j - i) * PAIR.interval - PAIR.tolerance
        for i in range(len(micros))
        for j in range(i + 1, len(micros))
    )


async def test_a_pair_hold_writes_one_row_and_no_queued_message(backend: Backend) -> None:
    number = await new_number(backend)
    held = [new_message(number, at_ms=T0_MS + i, recipient="447700900001") for i in range(5)]
    free = new_message(number, recipient="447700900002")
    for message in [*held, free]:
        await backend.store.add_message(message)
    before = await due_at(backend, held)

    await backend.queue.hold_recipient(number.phone_number_id, "447700900001", T0_MS + 10_000)

    assert await due_at(backend, held) == before
    assert await pair_rows(backend) == 1
    assert [c.id for c in await claim(backend, number, T0 + 9.9)] == [free.id]
    [first] = await claim(backend, number, T0 + 10)
    assert first.id == held[0].id
    assert first.slot == pytest.approx(T0 + 10)


async def test_pair_pacing_that_has_run_out_is_forgotten(backend: Backend) -> None:
    number = await new_number(backend)
    await backend.store.add_message(new_message(number, recipient="447700900001"))
    await claim(backend, number, T0)
    await backend.queue.expire(T0 + pacing.PAIR_INTERVAL_S - 1)
    assert await pair_rows(backend) == 1
    await backend.queue.expire(T0 + pacing.PAIR_INTERVAL_S + 1)
    assert await pair_rows(backend) == 0


# ---- what the read API shows of Meta: its wamid, the last upstream error ------------------


async def stored(backend: Backend, message: NewMessage) -> StoredMessage:
    """The message as read back."""
    found = await backend.store.get_message(message.phone_number_id, message.id)
    assert found is not None
    return found


def last_error(message: StoredMessage) -> tuple[object, ...]:
    return (
        message.last_error_code,
        message.last_error_title,
        message.last_error_details,
        message.last_error_at,
    )


async def test_the_last_upstream_error_shows_while_a_message_retries_and_goes_once_accepted(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    message = new_message(number)
    await backend.store.add_message(message)
    assert last_error(await stored(backend, message)) == (None, None, None, None)
    [first] = await claim(backend, number, T0)
    unreachable = Outcome(
        first.seq,
        OWNER,
        "retry",
        T0_MS + 10,
        error_code=-1,
        error_title="Network error",
        error_details="ClientConnectorError: refused",
        due_at_ms=T0_MS + 1000,
    )
    await backend.queue.record(unreachable)
    retrying = await stored(backend, message)
    assert retrying.status == "pending"
    assert last_error(retrying) == (
        -1,
        "Network error",
        "ClientConnectorError: refused",
        T0_MS + 10,
    )
    [second] = await claim(backend, number, T0 + 1)
    await backend.queue.record(Outcome(second.seq, OWNER, "forwarded", T0_MS + 1010, wamid="w.L1"))
    accepted = await stored(backend, message)
    assert (accepted.upstream_wamid, last_error(accepted)) == ("w.L1", (None, None, None, None))


async def test_a_message_that_expires_after_retries_keeps_the_upstream_error_as_its_last(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    message = new_message(number, ttl_ms=5000)
    await backend.store.add_message(message)
    [claimed] = await claim(backend, number, T0)
    title = "Something went wrong"
    retry = Outcome(claimed.seq, OWNER, "retry", T0_MS, error_code=131000, error_title=title)
    await backend.queue.record(
        dataclasses.replace(retry, error_details="boom", due_at_ms=T0_MS + 60_000)
    )
    assert await backend.queue.expire(T0 + 10) == 1
    expired = await stored(backend, message)
    assert (expired.status, expired.error_code) == ("failed", MESSAGE_EXPIRED)
    assert last_error(expired) == (131000, title, "boom", T0_MS)
    # The dispatcher's own expiry at send time is the gateway's error, not the upstream's.
    other = new_message(number, ttl_ms=5000)
    await backend.store.add_message(other)
    [late] = await claim(backend, number, T0 + 1)
    await backend.queue.record(
        Outcome(
            late.seq, OWNER, "failed", T0_MS + 6000, error_code=MESSAGE_EXPIRED, error_title="x"
        )
    )
    assert last_error(await stored(backend, other)) == (None, None, None, None)


async def test_a_listing_finds_a_message_by_metas_wamid(backend: Backend) -> None:
    number = await new_number(backend)
    wanted = await forwarded(backend, number, "wamid.FIND1")
    await forwarded(backend, number, "wamid.FIND2")
    await backend.store.add_message(new_message(number))
    phone = number.phone_number_id
    found = await backend.store.list_messages(MessageQuery(phone, upstream_wamid="wamid.FIND1"))
    assert [(m.id, m.upstream_wamid) for m in found] == [(wanted.id, "wamid.FIND1")]
    assert await backend.store.list_messages(MessageQuery(phone, upstream_wamid="wamid.NONE")) == []
    elsewhere = MessageQuery(
        (await new_number(backend)).phone_number_id, upstream_wamid="wamid.FIND1"
    )
    assert await backend.store.list_messages(elsewhere) == []


# ---- retention ----------------------------------------------------------------------------


async def settled_message(
    backend: Backend, number: PhoneNumber, wamid: str, statuses: Sequence[Status], at_s: int
) -> NewMessage:
    """A message Meta accepted as `wamid` and then reported `statuses` of, at `at_s`."""
    message = new_message(number)
    await backend.store.add_message(message)
    [claimed] = await claim(backend, number, T0)
    await backend.queue.record(Outcome(claimed.seq, OWNER, "forwarded", T0_MS, wamid=wamid))
    rows = [report(wamid, status, at_s) for status in statuses]
    await backend.statuses.ingest(rows, [], [], at_s * 1000)
    click = EventRow(wamid, "click", "447700900123", "{}", at_s * 1000, wamid.ljust(64, "k")[:64])
    await backend.statuses.ingest([], [], [click], at_s * 1000)
    return message


async def present(backend: Backend, message: NewMessage) -> bool:
    return await backend.store.get_message(message.phone_number_id, message.id) is not None


async def test_retention_prunes_final_messages_past_the_cutoff_with_their_statuses_and_events(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    t0_s = int(T0)
    old_s, young_s = t0_s + 10, t0_s + 100 * 86_400
    cutoff_ms = (t0_s + 50 * 86_400) * 1000
    old_read = await settled_message(backend, number, "w.R1", ["sent", "delivered", "read"], old_s)
    old_failed = await settled_message(backend, number, "w.F1", ["failed"], old_s)
    young_read = await settled_message(backend, number, "w.R2", ["sent", "read"], young_s)
    # Not final: delivered (a read may come), sent, and a message still queued.
    old_delivered = await settled_message(backend, number, "w.D1", ["sent", "delivered"], old_s)
    old_sent = await settled_message(backend, number, "w.S1", ["sent"], old_s)
    queued = new_message(number, at_ms=T0_MS)
    await backend.store.add_message(queued)

    assert await backend.queue.prune(cutoff_ms, 500) == 2
    for message in (old_read, old_failed):
        assert not await present(backend, message)
    for message in (young_read, old_delivered, old_sent, queued):
        assert await present(backend, message)
    timelines = await backend.statuses.timeline(["w.R1", "w.F1", "w.R2", "w.D1"])
    assert sorted(timelines) == ["w.D1", "w.R2"]
    assert await backend.statuses.events("w.R1") == []
    assert await backend.statuses.events("w.R2") != []
    assert await backend.queue.prune(cutoff_ms, 500) == 0


async def test_retention_prunes_in_batches_of_the_size_asked(backend: Backend) -> None:
    number = await new_number(backend)
    for n in range(5):
        await settled_message(backend, number, f"w.B{n}", ["read"], int(T0) + n)
    cutoff_ms = T0_MS + 86_400_000
    assert [await backend.queue.prune(cutoff_ms, 2) for _ in range(4)] == [2, 2, 1, 0]
