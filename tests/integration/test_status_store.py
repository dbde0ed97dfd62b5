"""Statuses in the store: a status that beats its wamid's record is still applied."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.exc import DBAPIError

from tests.integration.test_store import new_message, new_number
from wagate.adapters.store.engine import run_batch
from wagate.adapters.store.queue import SqlQueue
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.statuses import (
    _CHUNK,
    EventRow,
    PreferenceRow,
    SqlStatusStore,
    StatusRow,
    _store,
)
from wagate.adapters.store.tables import message_statuses, messages


def status(wamid: str, kind: str, at_ms: int, code: int | None = None) -> StatusRow:
    """A status as ingest builds it."""
    errors = None if code is None else f'[{{"code": {code}, "title": "Message undeliverable"}}]'
    return StatusRow(wamid, kind, at_ms, None, errors, code, None, None)  # type: ignore[arg-type]


async def _forward(store: SqlStore, message_id: str, wamid: str) -> None:
    """Record Meta's wamid the way a worker whose check raced the webhook would."""
    async with store.engine.begin() as connection:
        await connection.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(state="forwarded", upstream_wamid=wamid)
        )


async def _status_of(store: SqlStore, message_id: str) -> tuple[str, int | None]:
    async with store.engine.connect() as connection:
        row = (
            await connection.execute(
                select(messages.c.status, messages.c.error_code).where(messages.c.id == message_id)
            )
        ).one()
    return row[0], row[1]


async def _message_forwarded_as(store: SqlStore, wamid: str) -> str:
    """The id of a new message whose wamid the worker recorded (no status applied yet)."""
    message = new_message(await new_number(store))
    await store.add_message(message)
    await _forward(store, message.id, wamid)
    return message.id


async def _good_message_where_lengths_hold(store: SqlStore) -> str:
    """A message forwarded as wamid.GOOD, on a database that refuses a value too long for
    its column (PostgreSQL; the test is skipped on SQLite)."""
    if store.is_sqlite:
        pytest.skip("SQLite does not enforce column lengths")
    return await _message_forwarded_as(store, "wamid.GOOD")


async def test_a_status_for_an_unknown_wamid_waits_unmatched(store: SqlStore) -> None:
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest([status("wamid.NONE", "sent", 1000)], [], [], 1000)
    async with store.engine.connect() as connection:
        matched = (await connection.execute(select(message_statuses.c.matched))).scalar()
    assert matched is False


async def test_reconcile_applies_statuses_that_came_before_the_wamid(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest(
        [status("wamid.RACE", "sent", 1000), status("wamid.RACE", "read", 2000)], [], [], 2000
    )
    await _forward(store, message.id, "wamid.RACE")
    assert await _status_of(store, message.id) == ("pending", None)
    queue = SqlQueue(store.engine)
    assert await queue.reconcile(3.0) == 1
    assert await _status_of(store, message.id) == ("read", None)
    assert await queue.reconcile(4.0) == 0  # matched now: nothing left to apply
    await queue.close()


async def test_a_failure_applied_late_keeps_metas_code(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest([status("wamid.FAIL", "failed", 1000, code=131026)], [], [], 1000)
    await _forward(store, message.id, "wamid.FAIL")
    queue = SqlQueue(store.engine)
    await queue.reconcile(2.0)
    assert await _status_of(store, message.id) == ("failed", 131026)
    await queue.close()


async def test_statuses_of_wamids_nobody_has_stop_being_retried(store: SqlStore) -> None:
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest([status("wamid.GHOST", "sent", 1000)], [], [], 1000)
    queue = SqlQueue(store.engine)
    await queue.reconcile(2.0)
    async with store.engine.connect() as connection:
        still = (await connection.execute(select(message_statuses.c.matched))).scalar()
    assert still is False
    await queue.reconcile(1000 + 3601.0)
    async with store.engine.connect() as connection:
        given_up = (await connection.execute(select(message_statuses.c.matched))).scalar()
    assert given_up is True
    await queue.close()


async def test_arrival_order_within_one_post_does_not_matter(store: SqlStore) -> None:
    number = await new_number(store)
    first, second = new_message(number), new_message(number)
    for message, wamid in ((first, "wamid.A"), (second, "wamid.B")):
        await store.add_message(message)
        await _forward(store, message.id, wamid)
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest(
        [status("wamid.A", "read", 3000), status("wamid.A", "failed", 1000, code=131026)],
        [],
        [],
        3000,
    )
    await statuses.ingest(
        [status("wamid.B", "failed", 1000, code=131026), status("wamid.B", "read", 3000)],
        [],
        [],
        3000,
    )
    assert (await _status_of(store, first.id))[0] == (await _status_of(store, second.id))[0]


async def test_a_claim_never_paces_above_metas_tier(store: SqlStore) -> None:
    number = await new_number(store)  # configured at 80 msg/s
    for _ in range(10):
        await store.add_message(new_message(number, created_at=0))
    queue = SqlQueue(store.engine)
    claimed = await queue.claim(
        number.phone_number_id, "w", 100.0, lease_s=60, horizon_s=1.0, limit=10, tier_mps=20
    )
    gaps = {round(b.slot - a.slot, 6) for a, b in itertools.pairwise(claimed)}
    assert gaps == {0.05}  # 20 msg/s, not the configured 80
    await queue.close()


# ---- hostile webhooks: one bad row never costs its good neighbours -------------------


async def _stored(store: SqlStore) -> list[tuple[str, str]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(message_statuses.c.upstream_wamid, message_statuses.c.status).order_by(
                message_statuses.c.seq
            )
        )
        return [(row[0], row[1]) for row in rows]


async def test_bad_rows_are_refused_and_their_neighbours_stored(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    await _forward(store, message.id, "wamid.GOOD")
    statuses = SqlStatusStore(store.engine)
    result = await statuses.ingest(
        [
            status("wamid.GOOD", "sent", 1000),
            status("wamid.NUL\x00BYTE", "sent", 1000),
            status("wamid." + "X" * 5000, "delivered", 1000),
            status("wamid.LATER", "sent", 10**20),
            status("wamid.GOOD", "delivered", 2000),
        ],
        [PreferenceRow("1" * 65, "447700900123", "stop", 1000)],
        [],
        2000,
    )
    assert (result.stored, result.duplicates, result.rejected) == (2, 0, 4)
    assert await _stored(store) == [("wamid.GOOD", "sent"), ("wamid.GOOD", "delivered")]
    assert await _status_of(store, message.id) == ("delivered", None)


async def test_a_row_the_database_refuses_after_the_checks_is_stored_alone(
    store: SqlStore,
) -> None:
    message_id = await _good_message_where_lengths_hold(store)
    statuses = SqlStatusStore(store.engine)
    # A status kind too long for its column: the checks do not know it, PostgreSQL refuses it.
    result = await statuses.ingest(
        [status("wamid.GOOD", "sent", 1000), status("wamid.ODD", "x" * 40, 1000)],
        [],
        [EventRow("wamid.GOOD", "click", None, "{}", 1000, dedupe_key="k1")],
        2000,
    )
    assert (result.stored, result.rejected) == (1, 1)
    assert await _stored(store) == [("wamid.GOOD", "sent")]
    assert await _status_of(store, message_id) == ("sent", None)
    assert await statuses.events("wamid.GOOD") == [("click", "{}")]


async def test_a_click_meta_delivers_again_is_stored_once(store: SqlStore) -> None:
    statuses = SqlStatusStore(store.engine)
    payload = '{"action_type":"marketing_messages_link_click"}'
    click = EventRow("wamid.C", "link_click", "447700900123", payload, 1000, dedupe_key="a" * 64)
    other = EventRow("wamid.C", "link_click", "447700900123", payload, 1000, dedupe_key="b" * 64)
    await statuses.ingest([], [], [click, click], 1000)
    await statuses.ingest([], [], [click, other], 2000)
    assert len(await statuses.events("wamid.C")) == 2


async def test_a_timeline_lists_each_wamids_statuses_oldest_first(store: SqlStore) -> None:
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest(
        [
            status("wamid.T1", "read", 3000),
            status("wamid.T2", "failed", 1500, code=131026),
            status("wamid.T1", "sent", 1000),
            status("wamid.T1", "delivered", 2000),
        ],
        [],
        [],
        4000,
    )
    timeline = await statuses.timeline(["wamid.T1", "wamid.T2", "wamid.NONE"])
    assert [(e.status, e.timestamp_ms) for e in timeline["wamid.T1"]] == [
        ("sent", 1000),
        ("delivered", 2000),
        ("read", 3000),
    ]
    [failed] = timeline["wamid.T2"]
    assert failed.errors is not None
    assert "131026" in failed.errors
    assert "wamid.NONE" not in timeline


async def test_the_newest_opt_out_or_opt_in_wins_whatever_order_meta_sends(
    store: SqlStore,
) -> None:
    statuses = SqlStatusStore(store.engine)
    waba, wa_id = "1" * 15, "447700900123"
    # Both in one POST, the newer first: the older one must not overwrite it.
    stop, resume = (
        PreferenceRow(waba, wa_id, "stop", 2000),
        PreferenceRow(waba, wa_id, "resume", 1000),
    )
    await statuses.ingest([], [stop, resume], [], 3000)
    assert await statuses.preference(waba, wa_id) == "stop"
    await statuses.ingest([], [PreferenceRow(waba, wa_id, "resume", 4000)], [], 5000)
    await statuses.ingest([], [PreferenceRow(waba, wa_id, "stop", 3500)], [], 6000)
    assert await statuses.preference(waba, wa_id) == "resume"


async def test_reconciliation_moves_past_statuses_that_wait_forever(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    statuses = SqlStatusStore(store.engine)
    # More never-matching statuses than one pass reads, then one whose wamid comes late.
    ghosts = [status(f"wamid.GHOST{i}", "sent", 1000) for i in range(_CHUNK + 20)]
    await statuses.ingest(ghosts, [], [], 1000)
    await statuses.ingest([status("wamid.LATE", "read", 2000)], [], [], 2000)
    await _forward(store, message.id, "wamid.LATE")
    queue = SqlQueue(store.engine)
    moved = [await queue.reconcile(3.0 + n) for n in range(2)]
    assert moved == [0, 1]
    assert await _status_of(store, message.id) == ("read", None)
    # The cursor wraps around: the oldest are looked at again (and given up on in time).
    assert await queue.reconcile(5.0) == 0
    await queue.close()


async def test_a_move_decided_on_a_stale_read_never_takes_a_message_back(store: SqlStore) -> None:
    # PostgreSQL reads what was committed when each statement starts. A reconciliation
    # that read the message before a webhook's `read` committed must not write its older
    # `sent` over it afterwards: the message would stay at `sent` for good (an e2e run
    # with three workers caught 2 of 500). Whoever moves a message holds it until commit.
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    statuses = SqlStatusStore(store.engine)
    await statuses.ingest([status("wamid.STALE", "sent", 1000)], [], [], 1000)
    await _forward(store, message.id, "wamid.STALE")  # `sent` is stored, not applied yet
    queue = SqlQueue(store.engine)
    async with store.engine.begin() as webhook:  # a webhook's `read`, not committed yet
        read = [status("wamid.STALE", "read", 3000)]
        await run_batch(webhook, lambda sync: _store(sync, read, [], [], 3000))
        reconciling = asyncio.ensure_future(queue.reconcile(4.0))
        await asyncio.sleep(0.3)  # the reconciliation reads, then waits for the webhook
    await reconciling
    assert await _status_of(store, message.id) == ("read", None)
    await queue.close()


async def test_webhooks_that_arrive_together_share_a_transaction_and_keep_their_counts(
    store: SqlStore,
) -> None:
    # Meta posts side by side, a status or two each: a transaction per POST cost each
    # about 2 ms of the event loop. Those that wait together are written together.
    number = await new_number(store)
    sent = [new_message(number) for _ in range(20)]
    for message in sent:
        await store.add_message(message)
    for i, message in enumerate(sent):
        await _forward(store, message.id, f"wamid.TOGETHER{i}")
    statuses = SqlStatusStore(store.engine)
    commits = 0

    def count(_connection: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(store.engine.sync_engine, "commit", count)
    try:
        posts = [
            statuses.ingest([status(f"wamid.TOGETHER{i}", "delivered", 1000 + i)], [], [], 2000)
            for i in range(20)
        ]
        # Meta's retry of the first, in the same breath, and a status of nobody's message.
        posts.append(statuses.ingest([status("wamid.TOGETHER0", "delivered", 1000)], [], [], 2000))
        posts.append(statuses.ingest([status("wamid.NOBODY", "sent", 1000)], [], [], 2000))
        results = await asyncio.gather(*posts)
    finally:
        event.remove(store.engine.sync_engine, "commit", count)
    assert commits == 1
    assert [(r.stored, r.duplicates, r.moved) for r in results[:20]] == [(1, 0, 1)] * 20
    assert (results[20].stored, results[20].duplicates) == (0, 1)
    assert (results[21].stored, results[21].duplicates, results[21].moved) == (1, 0, 0)
    assert {await _status_of(store, m.id) for m in sent} == {("delivered", None)}


async def test_a_bad_row_in_a_shared_transaction_costs_only_its_own_webhook(
    store: SqlStore,
) -> None:
    message_id = await _good_message_where_lengths_hold(store)
    statuses = SqlStatusStore(store.engine)
    bad = status("wamid.ODD", "x" * 40, 1000)  # too long for its column: PostgreSQL refuses it
    good, worse = await asyncio.gather(
        statuses.ingest([status("wamid.GOOD", "read", 1000)], [], [], 2000),
        statuses.ingest([bad], [], [], 2000),
    )
    assert (good.stored, good.moved, good.rejected) == (1, 1, 0)
    assert (worse.stored, worse.rejected) == (0, 1)
    assert await _status_of(store, message_id) == ("read", None)


async def test_a_failed_transaction_fails_every_webhook_it_held_and_the_next_are_written(
    store: SqlStore,
) -> None:
    # The database refusing the transaction itself (not a row): each POST of it gets the
    # error (Meta retries them), and the webhooks after it are written as usual.
    message_id = await _message_forwarded_as(store, "wamid.AFTER")
    statuses = SqlStatusStore(store.engine)
    async with store.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE message_statuses RENAME TO statuses_away"))
    try:
        outcomes = await asyncio.gather(
            statuses.ingest([status("wamid.AFTER", "sent", 1000)], [], [], 2000),
            statuses.ingest([status("wamid.AFTER", "delivered", 2000)], [], [], 2000),
            return_exceptions=True,
        )
    finally:
        async with store.engine.begin() as connection:
            await connection.execute(text("ALTER TABLE statuses_away RENAME TO message_statuses"))
    assert all(isinstance(outcome, DBAPIError) for outcome in outcomes), outcomes
    assert await _status_of(store, message_id) == ("pending", None)
    result = await statuses.ingest([status("wamid.AFTER", "read", 3000)], [], [], 4000)
    assert (result.stored, result.moved) == (1, 1)
    assert await _status_of(store, message_id) == ("read", None)
