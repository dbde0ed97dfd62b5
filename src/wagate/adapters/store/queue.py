"""The delivery queue on the messages table: claim with a shared pacing budget, record results.

Several workers (processes, machines) share one queue: a claim locks the phone
number's row first (`UPDATE ... RETURNING`, which also takes SQLite's write
lock), books evenly spaced send slots from the number's stored GCRA TAT, and
marks the claimed messages `sending` under a lease. PostgreSQL's
`FOR UPDATE SKIP LOCKED` keeps two workers off the same message. Because every
slot comes from the one TAT, the workers together never exceed the number's rate.

A lease that ends before its outcome is recorded puts the message back in the
queue, but only a few times (MAX_REAPS): each time, the message may already have
reached Meta, so after the last one it fails with DELIVERY_ABANDONED instead of
being sent again until its TTL.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wagate.adapters.store.engine import begin_write, dialect_of, run_batch
from wagate.adapters.store.faults import is_row_fault
from wagate.adapters.store.group_commit import GroupCommitter, Row
from wagate.adapters.store.queries import queue as q
from wagate.adapters.store.queries import retention as r
from wagate.adapters.store.secrets import SecretBox
from wagate.adapters.store.sql import phone_number_of
from wagate.adapters.store.statuses import apply_stored_statuses, reconcile
from wagate.adapters.store.tables import messages
from wagate.adapters.store.webhook_events import any_endpoint, write_failure_events
from wagate.domain import pacing
from wagate.domain.delivery import (
    ABANDONED_DETAILS,
    EXPIRED_DETAILS,
    Claimed,
    Outcome,
    Waiting,
    is_upstream_error,
)
from wagate.domain.delivery import MAX_REAPS as MAX_REAPS
from wagate.domain.errors import DELIVERY_ABANDONED, MESSAGE_EXPIRED, kind_of
from wagate.domain.sanitise import without_nul
from wagate.domain.statuses import UNMATCHED_GIVE_UP_MS

log = logging.getLogger("wagate.queue")

# Messages pruned per transaction at most: each IN list stays below SQLite's bound limit.
_PRUNE_CHUNK = 1000
# How long a send's outcome waits for others to share its commit. At 80 msg/s and 20 ms,
# each commit held 2.6 outcomes and the outcomes held SQLite's write lock 20% of the time
# under a flood of sends (31 commits/s of ~6 ms); at 100 ms, 8-9 a commit and 4-9% of the
# lock. The price: a message stays `sending` up to 100 ms longer after Meta took it, and
# a crash in that window sends it again after its lease (see core/dispatch.py).
OUTCOME_LINGER_S = 0.1
_UPSTREAM_STATUS_CHARS: int = messages.c.upstream_status.type.length  # type: ignore[attr-defined]


class SqlQueue:
    """Claims and results of the delivery queue."""

    def __init__(
        self,
        engine: AsyncEngine,
        secrets: SecretBox | None = None,
        pair_rate: pacing.Rate = pacing.pair_rate(pacing.PAIR_INTERVAL_S, pacing.PAIR_BURST),
    ) -> None:
        """A queue on `engine`; `secrets` opens access tokens (default: this database's key);
        each (number, recipient) pair is paced at `pair_rate`."""
        self.engine = engine
        self.pair_rate = pair_rate
        self.secrets = secrets or SecretBox(engine.url)
        self.dialect = dialect_of(engine)
        writers = self.dialect.writers(at_most=2)
        # Outcomes wait up to OUTCOME_LINGER_S for company: on SQLite every transaction
        # takes the one write lock the accept path needs (see the constant).
        self.results = GroupCommitter(
            self._write_outcomes, self._write_outcome, writers=writers, linger_s=OUTCOME_LINGER_S
        )
        # Where the reconciliation of early statuses goes on (a seq; 0: from the oldest).
        self._reconcile_after = 0

    async def close(self) -> None:
        """Commit the outcomes still pending."""
        await self.results.close()

    async def waiting(self) -> list[Waiting]:
        """The numbers with queued messages, each with when its earliest one is due.

        A loose index scan (see `queries.queue.WAITING`): idle numbers cost nothing.
        """
        async with self.engine.connect() as connection:
            rows = (await connection.execute(q.WAITING)).all()
        return [Waiting(phone_number_of(row, self.secrets), row.due_at / 1000) for row in rows]

    async def claim(
        self,
        phone_number_id: str,
        owner: str,
        now: float,
        *,
        lease_s: float,
        horizon_s: float,
        limit: int,
        tier_mps: int | None = None,
    ) -> list[Claimed]:
        """Claim due messages of one number and book their send slots (times in seconds).

        The rate is the number's configured `mps`, capped by Meta's tier when known.
        """
        now_ms = int(now * 1000)
        async with self.engine.connect() as connection:
            # A cheap read first: an idle number costs no write and no lock.
            due = await connection.execute(
                q.ANY_DUE, {"b_phone_number_id": phone_number_id, "b_now": now_ms}
            )
            if due.first() is None:
                return []
        async with begin_write(self.engine) as connection:
            return await self._claim(
                connection, phone_number_id, owner, now, lease_s, horizon_s, limit, tier_mps
            )

    async def _claim(
        self,
        connection: AsyncConnection,
        phone_number_id: str,
        owner: str,
        now: float,
        lease_s: float,
        horizon_s: float,
        limit: int,
        tier_mps: int | None,
    ) -> list[Claimed]:
        locked = await _lock_number(connection, phone_number_id)
        if locked is None:
            return []
        state = _pacing_state(locked)
        now_us = pacing.to_micros(now)
        rate = pacing.effective_rate(locked.mps, tier_mps, state, now_us)
        horizon = pacing.to_micros(horizon_s)
        room, _ = pacing.plan(state, now_us, rate, horizon, limit)
        if not room:
            return []
        due = {"b_phone_number_id": phone_number_id, "b_now": int(now * 1000)}
        claimable = q.claimable(self.dialect)
        lease = pacing.to_micros(lease_s)
        stored: dict[str, pacing.PairState] = {}
        pairs: dict[str, pacing.PairState] = {}
        sends: list[tuple[Any, pacing.Micros]] = []
        for round_ in range(pacing.CLAIM_ROUNDS):
            size = pacing.batch_size(round_, len(room) - len(sends), limit)
            batch = (await connection.execute(claimable, {**due, "b_limit": size})).all()
            if not batch:
                break
            unread = {row.recipient for row in batch} - pairs.keys() - stored.keys()
            if unread:
                found = await self._pairs(connection, phone_number_id, unread)
                stored.update(found)
                pairs.update(found)
            result = pacing.assign(
                room[len(sends) :],
                [row.recipient for row in batch],
                pairs,
                now_us,
                self.pair_rate,
            )
            pairs = result.pairs
            leased = [(batch[index], slot) for index, slot in result.sends]
            if leased:
                await connection.execute(
                    q.LEASE,
                    [
                        {"b_seq": row.seq, "b_owner": owner, "b_lease": (slot + lease) // 1000}
                        for row, slot in leased
                    ],
                )
            if result.deferred:
                await connection.execute(
                    q.DEFER,
                    [
                        {"b_seq": batch[index].seq, "b_due": pacing.due_ms(turn)}
                        for index, turn in result.deferred
                    ],
                )
            sends.extend(leased)
            if not result.deferred or len(sends) == len(room):
                break
        changed = [(r, pair) for r, pair in pairs.items() if stored.get(r) != pair]
        if changed:
            await connection.execute(
                q.set_pair(self.dialect),
                [
                    {
                        "b_phone_number_id": phone_number_id,
                        "b_recipient": recipient,
                        "b_tat": pair.tat,
                        "b_reserved": pair.reserved,
                    }
                    for recipient, pair in changed
                ],
            )
        if not sends:
            return []
        _, booked = pacing.plan(state, now_us, rate, horizon, len(sends))
        await connection.execute(
            q.SET_PACING_TAT, {"b_phone_number_id": phone_number_id, "b_tat": booked.tat}
        )
        return [
            Claimed(
                seq=row.seq,
                id=row.id,
                phone_number_id=phone_number_id,
                recipient=row.recipient,
                request=row.request,
                attempts=row.attempts + 1,
                created_at=row.created_at,
                expires_at=row.expires_at,
                slot=pacing.to_seconds(slot),
                interval=pacing.to_seconds(rate.interval),
            )
            for row, slot in sends
        ]

    @staticmethod
    async def _pairs(
        connection: AsyncConnection, phone_number_id: str, recipients: set[str]
    ) -> dict[str, pacing.PairState]:
        """The stored pacing of these recipients' pairs (a pair without a row has none)."""
        rows = await connection.execute(
            q.PAIRS, {"b_phone_number_id": phone_number_id, "b_recipients": sorted(recipients)}
        )
        return {row.recipient: pacing.PairState(row.tat, row.reserved_tat) for row in rows}

    async def throttle(self, phone_number_id: str, now: float) -> None:
        """Meta said 130429: halve the number's shared rate; it recovers by itself."""
        async with begin_write(self.engine) as connection:
            row = await _lock_number(connection, phone_number_id)
            if row is None:
                return
            state = _pacing_state(row)
            slowed = pacing.throttle(state, pacing.to_micros(now), row.mps)
            if slowed == state:
                return
            await connection.execute(
                q.SET_THROTTLE,
                {
                    "b_phone_number_id": phone_number_id,
                    "b_factor": slowed.factor,
                    "b_throttled_at": slowed.throttled_at,
                },
            )

    async def hold_recipient(self, phone_number_id: str, recipient: str, until_ms: int) -> None:
        """131056: the pair sends nothing before `until_ms`. One row is written: its queued
        messages stay as they are and are put off, a batch at a time, when claimed."""
        async with begin_write(self.engine) as connection:
            stored = (await self._pairs(connection, phone_number_id, {recipient})).get(
                recipient, pacing.PairState()
            )
            held = pacing.hold_pair(stored, until_ms * 1000, self.pair_rate)
            await connection.execute(
                q.set_pair(self.dialect),
                {
                    "b_phone_number_id": phone_number_id,
                    "b_recipient": recipient,
                    "b_tat": held.tat,
                    "b_reserved": held.reserved,
                },
            )

    async def reap_leases(self, now: float) -> int:
        """Put back the messages of workers whose lease ended (they died, hung or lost the
        database); fail those whose lease ended MAX_REAPS times. Returns messages reaped.

        The last lease holder stays named, so its outcome still lands if it comes late
        (its worker retries the record) and nobody has claimed the message since.
        """
        now_ms = int(now * 1000)
        abandoned_as = _failure(DELIVERY_ABANDONED, ABANDONED_DETAILS, now_ms)
        async with begin_write(self.engine) as connection:
            abandoned = (await connection.execute(q.ABANDON_ENDED_LEASES, abandoned_as)).all()
            requeued = await connection.execute(q.REQUEUE_ENDED_LEASES, {"b_now": now_ms})
            failed = dict.fromkeys((row.seq for row in abandoned), now_ms)
            await run_batch(connection, lambda sync: write_failure_events(sync, failed, now_ms))
        if abandoned:
            log.warning(
                "%d messages failed with %d: their lease ended %d times",
                len(abandoned),
                DELIVERY_ABANDONED,
                MAX_REAPS,
            )
        return int(requeued.rowcount or 0) + len(abandoned)

    async def expire(self, now: float) -> int:
        """Fail the queued messages whose TTL passed before they could be handed to Meta;
        forget pairs whose pacing has run out (the same as none), recipients Meta limited
        whose 24 h are over, and frequency-cap counts with nothing in their day."""
        now_ms = int(now * 1000)
        expired_as = _failure(MESSAGE_EXPIRED, EXPIRED_DETAILS, now_ms)
        async with begin_write(self.engine) as connection:
            expired = (await connection.execute(q.EXPIRE, expired_as)).all()
            await connection.execute(q.FORGET_PAIRS, {"b_now_us": pacing.to_micros(now)})
            day_ago = now_ms - 24 * 3_600_000
            await connection.execute(q.FORGET_LIMITS, {"b_now": now_ms, "b_before": day_ago})
            await connection.execute(q.FORGET_SENDS, {"b_before": day_ago})
            failed = dict.fromkeys((row.seq for row in expired), now_ms)
            await run_batch(connection, lambda sync: write_failure_events(sync, failed, now_ms))
        return len(expired)

    async def reconcile(self, now: float) -> int:
        """Apply statuses that arrived before their wamid was recorded."""
        moved, self._reconcile_after = await reconcile(
            self.engine,
            int(now * 1000),
            give_up_after_ms=UNMATCHED_GIVE_UP_MS,
            after_seq=self._reconcile_after,
            hold_tolerance_us=self.pair_rate.tolerance,
        )
        return moved

    async def prune(self, final_before_ms: int, limit: int) -> int:
        """Delete up to `limit` messages final since before `final_before_ms` (out of the
        queue, and nothing still needing them: see `queries.retention.STILL_NEEDED`), with
        their statuses and events, in one short transaction. Returns messages deleted."""
        limit = max(0, min(limit, _PRUNE_CHUNK))
        parameters = {"b_before": final_before_ms, "b_limit": limit}
        async with begin_write(self.engine) as connection:
            rows = (await connection.execute(r.prunable(self.dialect), parameters)).all()
            if not rows:
                return 0
            wamids = sorted({row.upstream_wamid for row in rows if row.upstream_wamid})
            if wamids:
                await connection.execute(r.DELETE_STATUSES, {"b_wamids": wamids})
                await connection.execute(r.DELETE_EVENTS, {"b_wamids": wamids})
            await connection.execute(r.DELETE_MESSAGES, {"b_seqs": [row.seq for row in rows]})
        return len(rows)

    async def record(self, outcome: Outcome) -> None:
        """Commit a send's outcome (group-committed with other workers' outcomes).

        Should the outcome itself be unstorable, it is stored without Meta's texts:
        the state of the message matters more than the words that came with it.
        Raises when the database is unavailable (the caller retries the record).
        """
        try:
            await self.results.submit(_outcome_row(outcome))
        except Exception as exc:
            if not is_row_fault(exc):
                raise
            log.warning(
                "outcome of message %d not storable as it is (%s); stored without Meta's texts",
                outcome.seq,
                type(exc).__name__,
            )
            bare = dataclasses.replace(
                outcome, wamid=None, upstream_status=None, error_title=None, error_details=None
            )
            await self.results.submit(_outcome_row(bare))

    async def _write_outcomes(self, rows: Sequence[Row]) -> None:
        async with begin_write(self.engine) as connection:
            tolerance = self.pair_rate.tolerance
            await run_batch(connection, lambda sync: _apply_outcomes(sync, rows, tolerance))

    async def _write_outcome(self, row: Row) -> None:
        await self._write_outcomes([row])

    async def counts(self) -> dict[str, int]:
        """Messages per delivery state (for tests, benchmarks and metrics)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(q.COUNT_BY_STATE)
            return {row[0]: int(row[1]) for row in rows}


async def _lock_number(connection: AsyncConnection, phone_number_id: str) -> Any:
    """Lock a number's row and read its pacing state (see `queries.queue.LOCK_NUMBER`)."""
    result = await connection.execute(q.LOCK_NUMBER, {"b_phone_number_id": phone_number_id})
    return result.first()


def _failure(code: int, details: str, now_ms: int) -> dict[str, Any]:
    """The parameters of a statement that fails messages with `code`."""
    return {"b_code": code, "b_title": kind_of(code).title, "b_details": details, "b_now": now_ms}


def _pacing_state(row: Any) -> pacing.PacingState:
    """The pacing state a locked number's row holds (its columns are in microseconds)."""
    return pacing.PacingState(row.pacing_tat, row.throttle_factor, row.throttled_at)


def _outcome_row(outcome: Outcome) -> Row:
    upstream_status = without_nul(outcome.upstream_status)
    kind = outcome.kind
    if kind == "failed" and not is_upstream_error(outcome.error_code):
        kind = "failed_here"
    return {
        "kind": kind,
        "b_seq": outcome.seq,
        "b_owner": outcome.owner,
        "b_at": outcome.at_ms,
        "b_wamid": outcome.wamid,
        "b_upstream_status": upstream_status[:_UPSTREAM_STATUS_CHARS] if upstream_status else None,
        "b_code": outcome.error_code,
        "b_title": without_nul(outcome.error_title),
        "b_details": without_nul(outcome.error_details),
        "b_due": outcome.due_at_ms,
    }


def _apply_outcomes(connection: Connection, rows: Sequence[Row], hold_tolerance_us: int) -> None:
    by_kind: dict[str, list[Row]] = {kind: [] for kind in q.OUTCOMES}
    for row in rows:
        by_kind[row["kind"]].append(row)
    failed_at = _apply_failures(connection, by_kind)
    for kind, batch in by_kind.items():
        if batch:
            connection.execute(q.OUTCOMES[kind], batch)
    if failed_at:
        write_failure_events(connection, failed_at, max(failed_at.values()))
    forwarded = [row["b_wamid"] for row in by_kind["forwarded"] if row["b_wamid"]]
    if forwarded:
        # Meta may report a status before this commit records its wamid.
        apply_stored_statuses(
            connection, forwarded, by_kind["forwarded"][0]["b_at"], hold_tolerance_us
        )


def _apply_failures(connection: Connection, by_kind: dict[str, list[Row]]) -> dict[int, int]:
    """Where a customer webhook endpoint is active, write the failure outcomes one by one
    to learn which landed (seq -> when), and take them out of `by_kind`; else nothing.

    Without any endpoint this costs one read of a tiny table, and only for a batch that
    holds failures: the outcomes are then written as before, in one executemany.
    """
    failures = [kind for kind in q.FAILURES_ONE_BY_ONE if by_kind[kind]]
    if not failures or not any_endpoint(connection):
        return {}
    failed_at: dict[int, int] = {}
    for kind in failures:
        for row in by_kind[kind]:
            if connection.execute(q.FAILURES_ONE_BY_ONE[kind], row).first() is not None:
                failed_at[row["b_seq"]] = row["b_at"]
        by_kind[kind] = []
    return failed_at
