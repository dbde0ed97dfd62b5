"""Customer webhooks in the store, on SQLite and PostgreSQL: endpoints, the deliveries
each status move writes in its own transaction, and claiming them in order."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.integration.test_store import new_message, new_number
from wagate.adapters.store.engine import begin_write, create_engine, run_batch
from wagate.adapters.store.notify import SqlNotifications
from wagate.adapters.store.queue import SqlQueue
from wagate.adapters.store.secrets import SecretBox
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.statuses import (
    EventRow,
    PreferenceRow,
    SqlStatusStore,
    StatusRow,
    _store,
)
from wagate.adapters.store.tables import (
    messages,
    phone_numbers,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from wagate.domain.delivery import Outcome
from wagate.domain.errors import DELIVERY_ABANDONED, MESSAGE_EXPIRED
from wagate.domain.model import NewMessage, PhoneNumber
from wagate.domain.notifications import (
    EVENT_TYPES,
    OPTED_OUT_CODE,
    OUTAGE_S,
    AttemptRecord,
    ClaimedDelivery,
    EventType,
    WebhookEndpoint,
)
from wagate.domain.statuses import status_row

NOW = 1_700_000_100_000
LEASE_MS = 30_000


@pytest.fixture
async def notifications(store: SqlStore) -> SqlNotifications:
    """The webhook store on the test's database, sealing with the store's key."""
    return SqlNotifications(store.engine, store.secrets)


def endpoint_for(
    number: PhoneNumber,
    events: Sequence[EventType] = EVENT_TYPES,
    *,
    active: bool = True,
    paused_at: int | None = None,
    created_at: int = NOW,
) -> WebhookEndpoint:
    """An endpoint of a number subscribed to `events`."""
    return WebhookEndpoint(
        id="whe_" + uuid.uuid4().hex[:20],
        project_id=number.project_id,
        phone_number_id=number.phone_number_id,
        url="https://example.com/hook",
        kind="standard",
        events=tuple(events),
        active=active,
        secret="whsec_" + uuid.uuid4().hex,
        headers={"Authorization": "Bearer customer-token"},
        created_at=created_at,
        updated_at=created_at,
        paused_at=paused_at,
    )


async def forwarded_message(store: SqlStore, number: PhoneNumber) -> tuple[NewMessage, str]:
    """A stored message Meta accepted, and its wamid."""
    message = new_message(number)
    await store.add_message(message)
    wamid = "wamid.UP" + uuid.uuid4().hex
    async with store.engine.begin() as connection:
        await connection.execute(
            update(messages)
            .where(messages.c.id == message.id)
            .values(state="forwarded", upstream_wamid=wamid)
        )
    return message, wamid


def status(wamid: str, kind: str, at_ms: int, code: int | None = None) -> StatusRow:
    """A status as ingest builds it (with Meta's errors for a failure)."""
    errors = None if code is None else json.dumps([{"code": code, "title": "Undeliverable"}])
    return status_row(wamid, kind, at_ms, errors)  # type: ignore[arg-type]


async def deliveries(store: SqlStore, **where: Any) -> list[Any]:
    """Delivery rows (optionally filtered by column), in order."""
    query = select(webhook_deliveries).order_by(webhook_deliveries.c.seq)
    for name, value in where.items():
        query = query.where(webhook_deliveries.c[name] == value)
    async with store.engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def claim(
    notifications: SqlNotifications,
    owner: str = "notifier-a",
    now_ms: int = NOW,
    *,
    limit: int = 50,
    per_endpoint: int = 50,
) -> list[ClaimedDelivery]:
    return await notifications.claim_deliveries(
        owner, now_ms, limit=limit, per_endpoint=per_endpoint, lease_ms=LEASE_MS
    )


def attempt(
    delivery: ClaimedDelivery,
    owner: str,
    state: Any = "delivered",
    at: int = NOW,
    status_code: int | None = 200,
    next_attempt_at: int | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        delivery.seq,
        delivery.endpoint.id,
        owner,
        at,
        12,
        status_code,
        None if state == "delivered" else "HTTP 500",
        state,
        next_attempt_at,
    )


async def with_deliveries(
    store: SqlStore, notifications: SqlNotifications, count: int, **endpoint: Any
) -> WebhookEndpoint:
    """An endpoint with `count` pending deliveries (each message's `sent`)."""
    number = await new_number(store)
    hook = endpoint_for(number, **endpoint)
    await notifications.add_endpoint(hook)
    statuses = SqlStatusStore(store.engine)
    for _ in range(count):
        _, wamid = await forwarded_message(store, number)
        await statuses.ingest([status(wamid, "sent", NOW - 5000)], [], [], NOW - 5000)
    return hook


# ---- endpoints -----------------------------------------------------------------------------


async def test_an_endpoints_secrets_are_sealed_in_the_row_and_opened_on_read(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    hook = replace(endpoint_for(number), previous_secret="whsec_old", previous_secret_until=NOW)
    await notifications.add_endpoint(hook)
    async with store.engine.connect() as connection:
        row = (await connection.execute(select(webhook_endpoints))).one()
    for column in ("secret", "previous_secret", "headers"):
        assert SecretBox.is_sealed(row._mapping[column])
        assert row._mapping[column]
    assert "customer-token" not in row.headers
    assert hook.secret not in row.secret
    assert await notifications.get_endpoint(hook.id) == hook
    assert await notifications.list_endpoints(number.phone_number_id) == [hook]


async def test_endpoints_are_listed_oldest_first_replaced_and_removed(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    newer = endpoint_for(number, created_at=NOW + 1)
    older = endpoint_for(number, ["whatsapp.message.read"], created_at=NOW)
    for hook in (newer, older):
        await notifications.add_endpoint(hook)
    assert await notifications.list_endpoints(number.phone_number_id) == [older, newer]
    changed = replace(older, url="https://example.org/other", active=False, headers={})
    assert await notifications.update_endpoint(changed)
    assert await notifications.get_endpoint(older.id) == changed
    assert not await notifications.update_endpoint(endpoint_for(number))
    assert await notifications.remove_endpoint(older.id)
    assert not await notifications.remove_endpoint(older.id)
    assert await notifications.list_endpoints(number.phone_number_id) == [newer]


async def test_an_endpoint_of_an_unknown_number_is_refused(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    ghost = replace(endpoint_for(number), phone_number_id="999999999999999")
    with pytest.raises(ValueError, match="999999999999999"):
        await notifications.add_endpoint(ghost)


# ---- deliveries written by the moves that cause them --------------------------------------


async def test_a_status_move_writes_one_delivery_per_subscribed_active_endpoint(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    wanted = endpoint_for(number, ["whatsapp.message.delivered"])
    paused = endpoint_for(number, ["whatsapp.message.delivered"], paused_at=NOW)
    unsubscribed = endpoint_for(number, ["whatsapp.message.read"])
    inactive = endpoint_for(number, ["whatsapp.message.delivered"], active=False)
    for hook in (wanted, paused, unsubscribed, inactive):
        await notifications.add_endpoint(hook)
    message, wamid = await forwarded_message(store, number)
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest([status(wamid, "delivered", NOW - 1000)], [], [], NOW)
    await statuses.ingest([status(wamid, "delivered", NOW - 1000)], [], [], NOW)  # Meta's retry
    rows = await deliveries(store)
    assert sorted(row.endpoint_id for row in rows) == sorted([wanted.id, paused.id])
    row = rows[0]
    assert (row.event_type, row.order_key, row.state) == (
        "whatsapp.message.delivered",
        message.id,
        "pending",
    )
    assert (row.occurred_at, row.created_at, row.next_attempt_at) == (NOW - 1000, NOW, NOW)
    data = json.loads(row.data)
    assert data["message"]["id"] == message.id
    assert data["status"]["id"] == wamid
    assert data["phone_number_id"] == number.phone_number_id
    assert data["waba_id"] == number.waba_id


async def test_every_status_a_post_moves_a_message_through_is_its_own_event(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    _, wamid = await forwarded_message(store, number)
    await SqlStatusStore(store.engine).ingest(
        [
            status(wamid, "read", 3000),
            status(wamid, "sent", 1000),
            status(wamid, "delivered", 2000),
        ],
        [],
        [],
        NOW,
    )
    assert [(r.event_type, r.occurred_at) for r in await deliveries(store)] == [
        ("whatsapp.message.sent", 1000),
        ("whatsapp.message.delivered", 2000),
        ("whatsapp.message.read", 3000),
    ]


async def test_a_move_rolled_back_leaves_no_delivery(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    message, wamid = await forwarded_message(store, number)

    async def move_then_fail() -> None:
        async with begin_write(store.engine) as connection:
            rows = [status(wamid, "delivered", 1000)]
            await run_batch(connection, lambda sync: _store(sync, rows, [], [], NOW))
            assert len((await connection.execute(select(webhook_deliveries))).all()) == 1
            raise RuntimeError("the transaction fails after the move")

    with pytest.raises(RuntimeError, match="after the move"):
        await move_then_fail()
    assert await deliveries(store) == []
    async with store.engine.connect() as connection:
        moved = await connection.execute(
            select(messages.c.status).where(messages.c.id == message.id)
        )
        assert moved.scalar() == "pending"


async def test_a_row_fault_in_the_batch_rolls_its_deliveries_back_with_it(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite does not enforce column lengths")
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    _, wamid = await forwarded_message(store, number)
    # A click whose key is too long for its column fails the batch after the move:
    # the batch is rolled back (its delivery too) and stored row by row.
    click = EventRow(wamid, "click", None, "{}", 1000, dedupe_key="k" * 100)
    result = await SqlStatusStore(store.engine).ingest(
        [status(wamid, "delivered", 1000)], [], [click], NOW
    )
    assert (result.moved, result.rejected) == (1, 1)
    assert [r.event_type for r in await deliveries(store)] == ["whatsapp.message.delivered"]


async def test_a_131050_failure_from_meta_opts_the_recipient_out(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    message, wamid = await forwarded_message(store, number)
    await SqlStatusStore(store.engine).ingest(
        [status(wamid, "failed", 1000, code=OPTED_OUT_CODE)], [], [], NOW
    )
    failed, opted_out = await deliveries(store)
    assert failed.event_type == "whatsapp.message.failed"
    assert json.loads(failed.data)["status"]["errors"][0]["code"] == OPTED_OUT_CODE
    assert opted_out.event_type == "whatsapp.contact.opted_out"
    assert opted_out.order_key == f"contact:{message.recipient}"
    assert json.loads(opted_out.data)["contact"]["reason"] == "131050"


async def test_a_status_that_waited_for_its_wamid_notifies_when_it_is_applied(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    message = new_message(number)
    await store.add_message(message)
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest([status("wamid.EARLY", "delivered", 1000)], [], [], NOW)
    assert await deliveries(store) == []
    async with store.engine.begin() as connection:
        await connection.execute(
            update(messages).where(messages.c.id == message.id).values(upstream_wamid="wamid.EARLY")
        )
    queue = SqlQueue(store.engine)
    assert await queue.reconcile(NOW / 1000) == 1
    await queue.close()
    assert [r.event_type for r in await deliveries(store)] == ["whatsapp.message.delivered"]


async def test_an_opt_out_notifies_every_number_of_the_waba_once(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    first = await new_number(store)
    second = await new_number(store, first.project_id)
    async with store.engine.begin() as connection:
        await connection.execute(
            update(phone_numbers)
            .where(phone_numbers.c.phone_number_id == second.phone_number_id)
            .values(waba_id=first.waba_id)
        )
    for number in (first, second):
        await notifications.add_endpoint(endpoint_for(number))
    statuses = SqlStatusStore(store.engine)
    stop = PreferenceRow(first.waba_id, "447700900123", "stop", 2000)
    await statuses.ingest([], [stop], [], NOW)
    await statuses.ingest([], [stop], [], NOW)  # Meta's retry: no news
    await statuses.ingest(
        [], [PreferenceRow(first.waba_id, "447700900123", "resume", 1000)], [], NOW
    )
    rows = await deliveries(store)
    assert [r.event_type for r in rows] == ["whatsapp.contact.opted_out"] * 2
    assert {json.loads(r.data)["phone_number_id"] for r in rows} == {
        first.phone_number_id,
        second.phone_number_id,
    }
    await statuses.ingest(
        [], [PreferenceRow(first.waba_id, "447700900123", "resume", 3000)], [], NOW
    )
    assert [r.event_type for r in await deliveries(store)][2:] == ["whatsapp.contact.opted_in"] * 2


async def test_a_failed_send_outcome_with_131050_notifies_the_failure_and_the_opt_out(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    message = new_message(number)
    await store.add_message(message)
    queue = SqlQueue(store.engine)
    [claimed] = await queue.claim(
        number.phone_number_id, "worker-a", NOW / 1000, lease_s=10, horizon_s=1, limit=10
    )
    stale = Outcome(claimed.seq, "worker-b", "failed", NOW, error_code=OPTED_OUT_CODE)
    await queue.record(stale)  # not the lease holder's: lands nowhere, tells nobody
    assert await deliveries(store) == []
    outcome = Outcome(
        claimed.seq, "worker-a", "failed", NOW, error_code=OPTED_OUT_CODE, error_title="Opted out"
    )
    await queue.record(outcome)
    await queue.close()
    failed, opted_out = await deliveries(store)
    assert (failed.event_type, failed.order_key) == ("whatsapp.message.failed", message.id)
    assert json.loads(failed.data)["status"]["errors"][0]["code"] == OPTED_OUT_CODE
    assert opted_out.event_type == "whatsapp.contact.opted_out"


async def test_expired_and_abandoned_messages_notify_their_failure(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number, ["whatsapp.message.failed"]))
    expiring = new_message(number)
    await store.add_message(expiring)
    queue = SqlQueue(store.engine)
    assert await queue.expire(expiring.expires_at / 1000 + 1) == 1
    abandoned = new_message(number)
    await store.add_message(abandoned)
    async with store.engine.begin() as connection:
        await connection.execute(
            update(messages)
            .where(messages.c.id == abandoned.id)
            .values(state="sending", lease_owner="w", lease_expires_at=NOW, reaps=2)
        )
    assert await queue.reap_leases(NOW / 1000 + 1) == 1
    await queue.close()
    rows = await deliveries(store)
    assert [(r.event_type, r.order_key) for r in rows] == [
        ("whatsapp.message.failed", expiring.id),
        ("whatsapp.message.failed", abandoned.id),
    ]
    codes = [json.loads(r.data)["status"]["errors"][0]["code"] for r in rows]
    assert codes == [MESSAGE_EXPIRED, DELIVERY_ABANDONED]


async def test_without_endpoints_nothing_is_written(store: SqlStore) -> None:
    number = await new_number(store)
    _, wamid = await forwarded_message(store, number)
    await SqlStatusStore(store.engine).ingest([status(wamid, "read", 1000)], [], [], NOW)
    assert await deliveries(store) == []


# ---- claims, attempts, order ---------------------------------------------------------------


async def number_with_endpoint(
    store: SqlStore, notifications: SqlNotifications
) -> tuple[PhoneNumber, SqlStatusStore]:
    """A number with an endpoint for every event, and the status store that feeds it."""
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    return number, SqlStatusStore(store.engine)


async def test_a_read_waits_until_the_delivered_of_its_message_is_delivered_or_dead(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number, statuses = await number_with_endpoint(store, notifications)
    _, wamid = await forwarded_message(store, number)
    _, other = await forwarded_message(store, number)
    await statuses.ingest([status(wamid, "delivered", 1000)], [], [], NOW)
    await statuses.ingest([status(wamid, "read", 2000), status(other, "read", 2000)], [], [], NOW)
    first = await claim(notifications)
    assert [(c.type, json.loads(c.data)["status"]["id"]) for c in first] == [
        ("whatsapp.message.delivered", wamid),
        ("whatsapp.message.read", other),
    ]
    assert first[0].endpoint.secret
    assert first[0].endpoint.headers
    assert await claim(notifications, "notifier-b") == []
    retry_at = NOW + 10_000
    await notifications.record_attempts(
        [attempt(first[0], "notifier-a", "pending", status_code=500, next_attempt_at=retry_at)]
    )
    assert await claim(notifications, "notifier-b", NOW + 1) == []  # delivered still out
    [again] = await claim(notifications, "notifier-b", retry_at)
    assert (again.type, again.attempts) == ("whatsapp.message.delivered", 1)
    await notifications.record_attempts([attempt(again, "notifier-b", "dead", at=retry_at)])
    [read] = await claim(notifications, "notifier-c", retry_at)
    assert (read.type, read.order_key) == ("whatsapp.message.read", first[0].order_key)


async def test_a_settle_records_and_claims_what_the_record_freed_in_one_transaction(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number, statuses = await number_with_endpoint(store, notifications)
    _, wamid = await forwarded_message(store, number)
    await statuses.ingest(
        [status(wamid, "sent", 1000), status(wamid, "delivered", 2000)], [], [], NOW
    )
    [sent] = await claim(notifications)
    delivered = await notifications.settle(
        [attempt(sent, "notifier-a")],
        "notifier-a",
        NOW,
        limit=10,
        per_endpoint=10,
        lease_ms=LEASE_MS,
    )
    assert [(d.type, d.order_key) for d in delivered] == [
        ("whatsapp.message.delivered", sent.order_key)
    ]
    assert [row.state for row in await deliveries(store)] == ["delivered", "delivering"]


async def test_a_settle_whose_claim_fails_leaves_its_records_unwritten(
    store: SqlStore, notifications: SqlNotifications, monkeypatch: pytest.MonkeyPatch
) -> None:
    await with_deliveries(store, notifications, 1)
    [one] = await claim(notifications)

    def broken(*args: Any) -> None:
        raise RuntimeError("the claim failed")

    monkeypatch.setattr(notifications, "_claim", broken)
    with pytest.raises(RuntimeError):
        await notifications.settle(
            [attempt(one, "notifier-a")], "notifier-a", NOW, limit=5, per_endpoint=5, lease_ms=1
        )
    [row] = await deliveries(store)
    assert (row.state, row.attempts, row.lease_owner) == ("delivering", 0, "notifier-a")


async def test_a_success_of_an_endpoint_healthy_when_claimed_writes_nothing_to_it(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    hook = await with_deliveries(store, notifications, 2)
    one, two = await claim(notifications)
    failed_elsewhere = NOW + 1
    async with begin_write(store.engine) as connection:
        await connection.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == hook.id)
            .values(failing_since=failed_elsewhere)
        )
    healthy = replace(attempt(one, "notifier-a", at=NOW + 5), endpoint_failing=False)
    await notifications.record_attempts([healthy])
    stored = await notifications.get_endpoint(hook.id)
    assert stored is not None
    assert stored.failing_since == failed_elsewhere  # no statement: the next claim sees it
    await notifications.record_attempts([attempt(two, "notifier-a", at=NOW + 6)])
    stored = await notifications.get_endpoint(hook.id)
    assert stored is not None
    assert stored.failing_since is None


async def test_a_status_that_beat_the_wamids_record_still_goes_first_with_its_event(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    # PostgreSQL: the webhook with `sent` and the worker's record of the wamid commit side
    # by side, each unseen by the other: `sent` is stored unapplied. The `delivered` that
    # comes next must not overtake it (its event would be lost to the reconciliation).
    number, statuses = await number_with_endpoint(store, notifications)
    message = new_message(number)
    await store.add_message(message)
    wamid = "wamid.UP" + uuid.uuid4().hex
    await statuses.ingest([status(wamid, "sent", 1000)], [], [], NOW)
    async with store.engine.begin() as connection:  # the record, not seeing that status
        await connection.execute(
            update(messages)
            .where(messages.c.id == message.id)
            .values(state="forwarded", upstream_wamid=wamid)
        )
    await statuses.ingest([status(wamid, "delivered", 2000)], [], [], NOW + 1)
    rows = await deliveries(store)
    assert [r.event_type for r in rows] == ["whatsapp.message.sent", "whatsapp.message.delivered"]
    assert {r.order_key for r in rows} == {message.id}
    stored = await store.get_message(number.phone_number_id, message.id)
    assert stored is not None
    assert stored.status == "delivered"


async def due_but_blocked(store: SqlStore, now_ms: int) -> int:
    """Waiting deliveries due by `now_ms` behind an earlier one of their key: what every
    claim would walk again if nothing moved them."""
    earlier = webhook_deliveries.alias("earlier")
    d = webhook_deliveries
    query = select(func.count()).where(
        d.c.state == "pending",
        d.c.next_attempt_at <= now_ms,
        select(earlier.c.seq)
        .where(
            earlier.c.endpoint_id == d.c.endpoint_id,
            earlier.c.order_key == d.c.order_key,
            earlier.c.seq < d.c.seq,
            earlier.c.state.in_(["pending", "delivering"]),
        )
        .exists(),
    )
    async with store.engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


async def test_a_claim_moves_what_waits_behind_a_retry_out_of_every_later_claims_way(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    # A receiver down: each message's `sent` failed and waits for its retry, and its
    # `delivered` and `read` wait behind it. Left due, every claim would walk them all.
    number, statuses = await number_with_endpoint(store, notifications)
    wamids = [(await forwarded_message(store, number))[1] for _ in range(20)]
    await statuses.ingest([status(w, "sent", 1000) for w in wamids], [], [], NOW)
    heads = await claim(notifications)
    assert len(heads) == 20
    retry_at = NOW + 10_000
    await notifications.record_attempts(
        [
            attempt(h, "notifier-a", "pending", status_code=503, next_attempt_at=retry_at)
            for h in heads
        ]
    )
    for kind, at in (("delivered", 2000), ("read", 3000)):
        await statuses.ingest([status(w, kind, at) for w in wamids], [], [], NOW + 1)
    assert await due_but_blocked(store, NOW + 2) == 40
    assert await claim(notifications, now_ms=NOW + 2) == []
    assert await due_but_blocked(store, NOW + 2) == 0  # moved once, not walked again
    followers = await deliveries(store, state="pending")
    assert {r.next_attempt_at for r in followers if r.event_type != "whatsapp.message.sent"} == {
        retry_at
    }
    # The retries come: the heads go first, then each message's next, in order.
    again = await claim(notifications, now_ms=retry_at)
    assert {c.type for c in again} == {"whatsapp.message.sent"}
    await notifications.record_attempts([attempt(c, "notifier-a", at=retry_at) for c in again])
    delivered = await claim(notifications, now_ms=retry_at)
    assert {c.type for c in delivered} == {"whatsapp.message.delivered"}
    assert len(delivered) == 20
    # One still out: the next of its key stays due behind it (its record comes within
    # the attempt's timeout; moving it could race that record), then goes once that one
    # ends (here, dead-lettered).
    await notifications.record_attempts(
        [attempt(c, "notifier-a", at=retry_at) for c in delivered[1:]]
    )
    reads = await claim(notifications, now_ms=retry_at + 1)
    assert len(reads) == 19
    assert await due_but_blocked(store, retry_at + 1) == 1
    await notifications.record_attempts(
        [attempt(delivered[0], "notifier-a", "dead", at=retry_at + 2)]
    )
    [last] = await claim(notifications, now_ms=retry_at + 2)
    assert (last.type, last.order_key) == ("whatsapp.message.read", delivered[0].order_key)


async def test_concurrent_claimers_never_get_the_same_delivery(
    store: SqlStore, notifications: SqlNotifications, database_url: str
) -> None:
    await with_deliveries(store, notifications, 24)
    # Each claimer on its own engine, as notifiers in separate processes.
    engines = [create_engine(database_url) for _ in range(4)]
    try:
        claimers = [SqlNotifications(engine, store.secrets) for engine in engines]
        rounds = await asyncio.gather(
            *(
                claim(claimer, f"notifier-{n}", limit=5, per_endpoint=50)
                for n, claimer in enumerate(claimers)
                for _ in range(3)
            )
        )
    finally:
        for engine in engines:
            await engine.dispose()
    claimed = [c.seq for batch in rounds for c in batch]
    assert len(claimed) == len(set(claimed))
    rows = await deliveries(store, state="delivering")
    assert sorted(claimed) == [row.seq for row in rows]


async def test_at_most_per_endpoint_deliveries_of_one_endpoint_are_out_at_once(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    hook = await with_deliveries(store, notifications, 6)
    first = await claim(notifications, per_endpoint=2)
    assert len(first) == 2
    assert await claim(notifications, "notifier-b", per_endpoint=2) == []
    await notifications.record_attempts([attempt(first[0], "notifier-a")])
    [next_one] = await claim(notifications, "notifier-b", per_endpoint=2)
    assert next_one.endpoint.id == hook.id
    assert next_one.seq not in {c.seq for c in first}


async def test_a_record_by_an_owner_that_lost_the_lease_changes_nothing(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    await with_deliveries(store, notifications, 1)
    [claimed] = await claim(notifications)
    await notifications.record_attempts([attempt(claimed, "notifier-b")])
    [row] = await deliveries(store)
    assert (row.state, row.attempts, row.lease_owner) == ("delivering", 0, "notifier-a")
    assert await notifications.list_attempts(claimed.endpoint.id) == []
    await notifications.record_attempts([attempt(claimed, "notifier-a")])
    [row] = await deliveries(store)
    assert (row.state, row.attempts, row.delivered_at, row.lease_owner) == (
        "delivered",
        1,
        NOW,
        None,
    )
    [seen] = await notifications.list_attempts(claimed.endpoint.id)
    assert (seen.delivery_id, seen.status_code, seen.latency_ms) == (claimed.id, 200, 12)


async def test_failures_mark_the_endpoint_failing_until_a_success(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    hook = await with_deliveries(store, notifications, 3)
    one, two, three = await claim(notifications)
    await notifications.record_attempts(
        [
            attempt(one, "notifier-a", "pending", at=NOW + 5, status_code=500),
            attempt(two, "notifier-a", "pending", at=NOW + 9, status_code=None),
        ]
    )
    stored = await notifications.get_endpoint(hook.id)
    assert stored is not None
    assert stored.failing_since == NOW + 5
    await notifications.record_attempts([attempt(three, "notifier-a", at=NOW + 20)])
    stored = await notifications.get_endpoint(hook.id)
    assert stored is not None
    assert stored.failing_since is None


async def test_an_endpoint_back_from_an_outage_gets_what_waited_for_its_retry_at_once(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    await with_deliveries(store, notifications, 3)
    one, two, three = await claim(notifications)
    later = NOW + 3_600_000
    failed = [
        attempt(d, "notifier-a", "pending", at=NOW + 5, status_code=503, next_attempt_at=later)
        for d in (one, two)
    ]
    await notifications.record_attempts(failed)
    # A success soon after (one event refused, the others taken): the retry keeps its time.
    await notifications.record_attempts([attempt(three, "notifier-a", at=NOW + 1_000)])
    assert await claim(notifications, now_ms=NOW + 2_000) == []
    # Down for OUTAGE_S, then a success: what waited is due at once.
    one, two = await claim(notifications, now_ms=later)
    retry = NOW + 7_200_000
    await notifications.record_attempts(
        [attempt(one, "notifier-a", "pending", at=later, status_code=503, next_attempt_at=retry)]
    )
    back = later + int(OUTAGE_S * 1000)
    await notifications.record_attempts([attempt(two, "notifier-a", at=back)])
    assert [d.seq for d in await claim(notifications, now_ms=back)] == [one.seq]


async def test_dead_deliveries_are_replayed_one_or_all(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    hook = await with_deliveries(store, notifications, 3)
    claimed = await claim(notifications)
    await notifications.record_attempts([attempt(c, "notifier-a", "dead") for c in claimed])
    assert len(await notifications.list_deliveries(hook.id, state="dead")) == 3
    assert await notifications.replay(hook.id, claimed[0].id, NOW + 100) == 1
    assert await notifications.replay(hook.id, claimed[0].id, NOW + 100) == 0  # pending now
    assert await notifications.replay(hook.id, None, NOW + 200) == 2
    rows = await deliveries(store)
    assert [(r.state, r.attempts, r.next_attempt_at) for r in rows] == [
        ("pending", 0, NOW + 100),
        ("pending", 0, NOW + 200),
        ("pending", 0, NOW + 200),
    ]
    assert len(await claim(notifications, now_ms=NOW + 200)) == 3


async def test_a_lease_that_ends_unrecorded_is_reaped_and_claimed_again(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    await with_deliveries(store, notifications, 2)
    await claim(notifications)
    assert await notifications.reap_deliveries(NOW + LEASE_MS - 1) == 0
    assert await notifications.reap_deliveries(NOW + LEASE_MS + 1) == 2
    again = await claim(notifications, "notifier-b", NOW + LEASE_MS + 2)
    assert len(again) == 2
    assert all(c.attempts == 0 for c in again)


async def test_a_paused_endpoint_waits_and_a_resume_makes_its_deliveries_due(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    hook = await with_deliveries(store, notifications, 2)
    [first, _] = await claim(notifications, limit=2)
    later = NOW + 3_600_000
    await notifications.record_attempts(
        [attempt(first, "notifier-a", "pending", status_code=503, next_attempt_at=later)]
    )
    # failing since NOW (the 503 just recorded): not since before NOW - 1, so not paused
    assert not await notifications.pause_endpoint(hook.id, NOW + 1, NOW - 1)
    assert await notifications.pause_endpoint(hook.id, NOW + 1, NOW)
    assert not await notifications.pause_endpoint(hook.id, NOW + 2, NOW + 2)
    await notifications.reap_deliveries(NOW + LEASE_MS + 1)
    assert await claim(notifications, now_ms=NOW + LEASE_MS + 2) == []
    paused = await notifications.get_endpoint(hook.id)
    assert paused is not None
    assert paused.paused_at == NOW + 1
    resumed_at = NOW + LEASE_MS + 3
    assert await notifications.update_endpoint(
        replace(paused, paused_at=None, updated_at=resumed_at)
    )
    rows = await deliveries(store)
    assert [r.next_attempt_at for r in rows] == [resumed_at, NOW - 5000]
    assert len(await claim(notifications, now_ms=resumed_at)) == 2


async def test_a_test_delivery_is_queued_for_one_endpoint(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    number = await new_number(store)
    hook = endpoint_for(number)
    await notifications.add_endpoint(hook)
    assert await notifications.add_test_delivery(hook.id, "evt_test1", '{"test":true}', NOW)
    assert not await notifications.add_test_delivery("whe_none", "evt_test2", "{}", NOW)
    [claimed] = await claim(notifications)
    assert (claimed.id, claimed.type, claimed.data) == (
        "evt_test1",
        "whatsapp.webhook.test",
        '{"test":true}',
    )


async def test_listings_page_newest_first(store: SqlStore, notifications: SqlNotifications) -> None:
    hook = await with_deliveries(store, notifications, 5)
    page = await notifications.list_deliveries(hook.id, limit=2)
    rest = await notifications.list_deliveries(hook.id, limit=10, before_seq=page[-1].seq)
    seqs = [d.seq for d in page + rest]
    assert seqs == sorted(seqs, reverse=True)
    assert len(seqs) == 5
    assert await notifications.list_deliveries(hook.id, state="dead") == []


async def test_old_attempts_and_delivered_deliveries_are_pruned(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    hook = await with_deliveries(store, notifications, 3)
    one, two, three = await claim(notifications)
    await notifications.record_attempts(
        [
            attempt(one, "notifier-a", at=NOW),
            attempt(two, "notifier-a", "dead", at=NOW),
            attempt(three, "notifier-a", at=NOW + 1000),
        ]
    )
    assert await notifications.prune_deliveries(NOW + 1, limit=1) == 2  # one of each
    assert await notifications.prune_deliveries(NOW + 1, limit=10) == 1
    assert await notifications.prune_deliveries(NOW + 1, limit=10) == 0
    left = await notifications.list_deliveries(hook.id)
    assert sorted(d.state for d in left) == ["dead", "delivered"]
    assert [a.at for a in await notifications.list_attempts(hook.id)] == [NOW + 1000]


async def test_removing_an_endpoint_or_its_number_removes_its_deliveries_and_attempts(
    store: SqlStore, notifications: SqlNotifications
) -> None:
    removed = await with_deliveries(store, notifications, 2)
    kept = await with_deliveries(store, notifications, 1)
    claimed = await claim(notifications, limit=1)
    await notifications.record_attempts(
        [attempt(claimed[0], "notifier-a", "pending", status_code=500, next_attempt_at=NOW)]
    )
    assert await notifications.remove_endpoint(removed.id)
    assert {r.endpoint_id for r in await deliveries(store)} == {kept.id}
    # `numbers remove --force` of a number with undelivered messages and an endpoint.
    number = await new_number(store)
    await notifications.add_endpoint(endpoint_for(number))
    _, wamid = await forwarded_message(store, number)
    await SqlStatusStore(store.engine).ingest([status(wamid, "sent", 1000)], [], [], NOW)
    await store.add_message(new_message(number))
    assert await store.remove_phone_number(number.phone_number_id, force=True) == 1
    assert await notifications.list_endpoints(number.phone_number_id) == []
    assert {r.endpoint_id for r in await deliveries(store)} == {kept.id}
    async with store.engine.connect() as connection:
        attempts = (
            await connection.execute(select(func.count()).select_from(webhook_attempts))
        ).scalar()
    assert claimed[0].endpoint.id == removed.id
    assert attempts == 0
