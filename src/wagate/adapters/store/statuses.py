"""Storing what Meta's webhooks say: statuses, opt-outs, clicks.

Which statuses are new and where a message moves is the domain's decision
(`wagate.domain.statuses.decide_all`); this module reads what it needs and writes
what it decided.

Webhooks come from outside: a row the columns cannot hold (a NUL, a wamid too long to
index, a time past year 9999) is refused before the write, and should the write still
fail on a row, the rows are stored one by one, so one bad row never costs its good
neighbours. Only an unavailable database fails the POST (and Meta retries it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from sqlalchemy import Executable
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, dialect_of, run_batch
from wagate.adapters.store.faults import is_row_fault
from wagate.adapters.store.queries import statuses as q
from wagate.adapters.store.queries.queue import set_pair
from wagate.adapters.store.tables import message_events, suppressions
from wagate.adapters.store.webhook_events import (
    preference_drafts,
    write_event_deliveries,
    write_status_events,
)
from wagate.domain.errors import HEALTHY_ECOSYSTEM, MARKETING_OPT_OUT
from wagate.domain.model import Status
from wagate.domain.pacing import PAIR_BURST, PAIR_INTERVAL_S, pair_rate
from wagate.domain.sanitise import fits, usable_timestamp, usable_wamid, without_nul
from wagate.domain.statuses import MARKETING_LIMIT_MS, Move, decide_all, status_row, steps

# Re-exported: the rows are the domain's; some callers still name them from here.
from wagate.domain.statuses import EventRow as EventRow
from wagate.domain.statuses import IngestResult as IngestResult
from wagate.domain.statuses import PreferenceRow as PreferenceRow
from wagate.domain.statuses import StatusRow as StatusRow
from wagate.domain.statuses import TimelineEntry as TimelineEntry

log = logging.getLogger("wagate.ingest")

# SQLite allows 32,766 bound parameters; IN lists and multi-row statements stay well below.
_CHUNK = 500
# Statuses of the webhooks that share a transaction, about (one webhook may hold more).
_BATCH_ROWS = 2000


@dataclass(eq=False)
class _Webhook:
    """One webhook's storable rows, waiting for the transaction that writes them."""

    statuses: list[StatusRow]
    preferences: list[PreferenceRow]
    events: list[EventRow]
    received_ms: int
    refused: int
    done: asyncio.Future[IngestResult]


# The tolerance of the default pair pacing (a store built without one).
HOLD_TOLERANCE_US = pair_rate(PAIR_INTERVAL_S, PAIR_BURST).tolerance


class SqlStatusStore:
    """Writes webhooks' statuses, preferences and events; webhooks that arrive together
    share one transaction.

    Meta posts its webhooks side by side, mostly one status each: at 80 msg/s about 240
    POSTs a second, and a transaction of its own cost each about 2 ms of the event loop
    (its statements, its commit), most of it the same whatever the rows. While one
    transaction writes, the webhooks that arrive wait together for the next one, as
    accepts do for their group commit; each POST is answered once its rows are
    committed, with its own counts.
    """

    def __init__(self, engine: AsyncEngine, hold_tolerance_us: int = HOLD_TOLERANCE_US) -> None:
        """Statuses on `engine`; a 131049 hold lets a pair's first send through at its end
        with the pair pacing's tolerance `hold_tolerance_us` (its `Rate.tolerance`)."""
        self.engine = engine
        self.hold_tolerance_us = hold_tolerance_us
        # By `sandbox_only`: webhooks waiting for a transaction, and the task writing them.
        self._waiting: dict[bool, list[_Webhook]] = {False: [], True: []}
        self._writers: dict[bool, asyncio.Task[None]] = {}

    async def ingest(
        self,
        statuses: Sequence[StatusRow],
        preferences: Sequence[PreferenceRow],
        events: Sequence[EventRow],
        received_ms: int,
        *,
        sandbox_only: bool = False,
    ) -> IngestResult:
        """Store every good row; move each matched message's status forward only.

        `sandbox_only` (a body the embedded sandbox signed): drop whatever concerns a
        message or WABA of a number that does not go to the sandbox.

        Returns once the rows are committed. Raises only when the database is
        unavailable: nothing is lost, Meta retries.
        """
        statuses, preferences, events, refused = storable(statuses, preferences, events)
        if refused:
            log.info("webhook: %d rows refused: %s", len(refused), "; ".join(refused[:3]))
        loop = asyncio.get_running_loop()
        webhook = _Webhook(
            statuses, preferences, events, received_ms, len(refused), loop.create_future()
        )
        self._waiting[sandbox_only].append(webhook)
        writer = self._writers.get(sandbox_only)
        if writer is None or writer.done() or writer.get_loop() is not loop:
            # Not the caller's own task: a caller that goes away (its client did) must
            # not cancel the transaction that holds the others' rows.
            self._writers[sandbox_only] = loop.create_task(self._write_waiting(sandbox_only))
        return await webhook.done

    async def _write_waiting(self, sandbox_only: bool) -> None:
        """Write what waits, a batch a transaction, until nothing does."""
        waiting = self._waiting[sandbox_only]
        while waiting:
            batch = _next_batch(waiting)
            try:
                results = await self._write(batch, sandbox_only)
            except asyncio.CancelledError:
                for webhook in [*batch, *waiting]:
                    webhook.done.cancel()
                waiting.clear()
                raise
            except Exception as exc:
                for webhook in batch:
                    if not webhook.done.done():
                        webhook.done.set_exception(exc)
                continue
            for webhook, result in zip(batch, results, strict=True):
                if not webhook.done.done():
                    webhook.done.set_result(result)

    async def _write(self, batch: list[_Webhook], sandbox_only: bool) -> list[IngestResult]:
        """Each webhook's result, its rows written in one transaction with the others'."""
        statuses = [row for webhook in batch for row in webhook.statuses]
        preferences = [row for webhook in batch for row in webhook.preferences]
        events = [row for webhook in batch for row in webhook.events]
        received_ms = max(webhook.received_ms for webhook in batch)
        try:
            stored = await self._transaction(
                statuses, preferences, events, received_ms, sandbox_only
            )
        except Exception as exc:
            if not is_row_fault(exc):
                raise
            if len(batch) > 1:
                # A bad row must not cost the other webhooks: each on its own again.
                return [(await self._write([webhook], sandbox_only))[0] for webhook in batch]
            log.info("webhook: a row failed the batch (%s); storing row by row", _summary(exc))
            result = await self._store_each(
                statuses, preferences, events, received_ms, sandbox_only
            )
            return [replace(result, rejected=result.rejected + batch[0].refused)]
        return [
            stored.result_of(webhook.statuses, webhook.refused, webhook.preferences)
            for webhook in batch
        ]

    async def _transaction(
        self,
        statuses: Sequence[StatusRow],
        preferences: Sequence[PreferenceRow],
        events: Sequence[EventRow],
        received_ms: int,
        sandbox_only: bool,
    ) -> _Stored:
        """`_store` in a write transaction of its own, run whole in SQLite's thread."""

        def work(connection: Connection) -> _Stored:
            return _store(
                connection,
                statuses,
                preferences,
                events,
                received_ms,
                sandbox_only,
                self.hold_tolerance_us,
            )

        async with begin_write(self.engine) as connection:
            return await run_batch(connection, work)

    async def _store_each(
        self,
        statuses: Sequence[StatusRow],
        preferences: Sequence[PreferenceRow],
        events: Sequence[EventRow],
        received_ms: int,
        sandbox_only: bool,
    ) -> IngestResult:
        """Each row in its own transaction: the good ones land, the bad ones are counted."""
        singles: list[tuple[list[StatusRow], list[PreferenceRow], list[EventRow]]] = [
            *(([s], [], []) for s in statuses),
            *(([], [p], []) for p in preferences),
            *(([], [], [e]) for e in events),
        ]
        total = IngestResult(0, 0, 0)
        for rows in singles:
            try:
                stored = await self._transaction(*rows, received_ms, sandbox_only)
                total += stored.result_of(rows[0], 0, rows[1])
            except Exception as exc:
                if not is_row_fault(exc):
                    raise
                log.info("webhook: row refused by the database: %s", _summary(exc))
                total += IngestResult(0, 0, 0, rejected=1)
        return total

    async def preference(self, waba_id: str, recipient: str) -> str | None:
        """The latest stop/resume of a recipient, if any."""
        async with self.engine.connect() as connection:
            parameters = {"b_waba_id": waba_id, "b_recipient": recipient}
            return (await connection.execute(q.PREFERENCE, parameters)).scalar()

    async def timeline(self, wamids: Sequence[str]) -> dict[str, list[TimelineEntry]]:
        """Each wamid's statuses, oldest first, with Meta's pricing and errors."""
        result: dict[str, list[TimelineEntry]] = {}
        if not wamids:
            return result
        async with self.engine.connect() as connection:
            rows = await connection.run_sync(_by_chunk, q.TIMELINE, wamids)
        for wamid, status, timestamp, pricing, errors in rows:
            result.setdefault(wamid, []).append(TimelineEntry(status, timestamp, pricing, errors))
        return result

    async def events(self, wamid: str) -> list[tuple[str, str]]:
        """A message's other events: (kind, payload JSON)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(q.EVENTS, {"b_wamid": wamid})
            return [(row[0], row[1]) for row in rows]


def _next_batch(waiting: list[_Webhook]) -> list[_Webhook]:
    """The oldest waiting webhooks, up to about _BATCH_ROWS statuses (at least one)."""
    taken = rows = 0
    while taken < len(waiting) and (
        taken == 0 or rows + len(waiting[taken].statuses) <= _BATCH_ROWS
    ):
        rows += len(waiting[taken].statuses)
        taken += 1
    batch = waiting[:taken]
    del waiting[:taken]
    return batch


@dataclass(frozen=True, slots=True)
class _Stored:
    """What one `_store` did: the statuses it kept (after the sandbox filter), those new to
    the timeline, the wamids whose message moved, the customer webhooks written."""

    kept: frozenset[int]
    new: frozenset[int]
    moved: frozenset[str]
    notified: int
    # Per wamid: the opt-out or limit its message's 131050/131049 failure wrote.
    restricted: Mapping[str, _Restriction] = field(default_factory=dict)
    # (waba_id, recipient) of the preferences this stored.
    preferred: tuple[tuple[str, str], ...] = ()

    def result_of(
        self,
        statuses: Sequence[StatusRow],
        refused: int,
        preferences: Sequence[PreferenceRow] = (),
    ) -> IngestResult:
        """The counts of one webhook's `statuses` (rows are told apart by identity)."""
        kept = [row for row in statuses if id(row) in self.kept]
        stored = sum(1 for row in kept if id(row) in self.new)
        moved = len({row.wamid for row in kept} & self.moved)
        restrictions = [self.restricted[row.wamid] for row in kept if row.wamid in self.restricted]
        preferred = set(self.preferred)
        recipients = [(r.waba_id, r.recipient) for r in restrictions]
        recipients += [
            (p.waba_id, p.recipient) for p in preferences if (p.waba_id, p.recipient) in preferred
        ]
        return IngestResult(
            stored,
            len(kept) - stored,
            moved,
            refused,
            self.notified,
            tuple(dict.fromkeys(recipients)),
        )


@dataclass(frozen=True, slots=True)
class _Restriction:
    """What a 131050 (an opt-out) or 131049 (a limit `until_ms`) failure wrote."""

    phone_number_id: str
    waba_id: str
    recipient: str
    until_ms: int | None = None


def _store(
    connection: Connection,
    statuses: Sequence[StatusRow],
    preferences: Sequence[PreferenceRow],
    events: Sequence[EventRow],
    received_ms: int,
    sandbox_only: bool = False,
    hold_tolerance_us: int = HOLD_TOLERANCE_US,
) -> _Stored:
    """Write statuses, preferences and events in the caller's transaction.

    `sandbox_only` (a body the embedded sandbox signed): drop whatever concerns a
    message or WABA of a number that does not go to the sandbox.
    """
    dialect = dialect_of(connection)
    current = _messages_by_wamid(connection, [s.wamid for s in statuses])
    if sandbox_only:
        # A status of a message that does not exist yet stays: the worker may not have
        # recorded its wamid yet.
        foreign = {wamid for wamid, found in current.items() if found.upstream != "sandbox"}
        statuses = [s for s in statuses if s.wamid not in foreign]
        current = {wamid: found for wamid, found in current.items() if wamid not in foreign}
        if preferences or events:
            preferences, events = _only_sandbox(connection, preferences, events)
    wamids = [s.wamid for s in statuses]
    seen, unapplied = _seen(connection, wamids)
    late = sorted(unapplied & current.keys())
    late_notified = 0
    late_restricted: dict[str, _Restriction] = {}
    if late:
        # A status stored while its message was not known yet (on PostgreSQL, a webhook
        # and the worker's record of the wamid can commit side by side, each unseen by
        # the other): apply it first, with its event, so this later one follows it in
        # order instead of overtaking it (and the reconciliation finding it moot).
        _, late_notified, late_restricted = _apply_stored(
            connection, late, received_ms, hold_tolerance_us
        )
        current = _messages_by_wamid(connection, wamids)
    new, moves = decide_all(_status_of(current), seen, statuses)
    if new:
        connection.execute(
            q.insert_statuses(dialect),
            [
                {
                    "upstream_wamid": s.wamid,
                    "status": s.status,
                    "timestamp": s.timestamp_ms,
                    "pricing": s.pricing,
                    "errors": s.errors,
                    "received_at": received_ms,
                    "matched": s.wamid in current,
                }
                for s in new
            ],
        )
    _, notified, restricted = _write_moves(
        connection, moves, current, received_ms, new, hold_tolerance_us
    )
    notified += late_notified
    restricted = {**late_restricted, **restricted}
    if preferences:
        # Read before the upsert: whether a preference is news depends on the stored one.
        drafts = preference_drafts(connection, preferences)
        connection.execute(
            q.upsert_preferences(dialect),
            [
                {
                    "waba_id": p.waba_id,
                    "recipient": p.recipient,
                    "value": p.value,
                    "timestamp": p.timestamp_ms,
                    "updated_at": received_ms,
                }
                for p in preferences
            ],
        )
        notified += write_event_deliveries(connection, drafts, received_ms)
    if events:
        connection.execute(
            q.insert_events(dialect),
            [
                {
                    "upstream_wamid": e.wamid,
                    "kind": e.kind,
                    "recipient": e.recipient,
                    "payload": e.payload,
                    "timestamp": e.timestamp_ms,
                    "received_at": received_ms,
                    "dedupe_key": e.dedupe_key,
                }
                for e in events
            ],
        )
    return _Stored(
        kept=frozenset(map(id, statuses)),
        new=frozenset(map(id, new)),
        moved=frozenset(moves),
        notified=notified,
        restricted=restricted,
        preferred=tuple((p.waba_id, p.recipient) for p in preferences),
    )


def _restrict(
    connection: Connection,
    moves: Mapping[str, Move],
    current: Mapping[str, Found],
    at_ms: int,
    hold_tolerance_us: int,
) -> dict[str, _Restriction]:
    """A message that failed with 131050 opts its recipient out (as a `user_preferences`
    stop of that time would); with 131049, Meta limited the recipient: no marketing
    message to them before MARKETING_LIMIT_MS have passed (a limit the send checks read,
    and a hold on the pair's queue, both in this transaction). Per wamid."""
    failures = {
        wamid: move.failure
        for wamid, move in moves.items()
        if move.status == "failed"
        and move.failure is not None
        and move.failure.error_code in (MARKETING_OPT_OUT, HEALTHY_ECOSYSTEM)
    }
    if not failures:
        return {}
    seqs = sorted({current[wamid].seq for wamid in failures})
    whose = {row.seq: row for row in connection.execute(q.RECIPIENTS_OF, {"b_seqs": seqs})}
    dialect = dialect_of(connection)
    restricted: dict[str, _Restriction] = {}
    stops: list[dict[str, Any]] = []
    limits: list[dict[str, Any]] = []
    holds: list[dict[str, Any]] = []
    for wamid, failure in failures.items():
        row = whose.get(current[wamid].seq)
        if row is None or row.waba_id is None:
            continue
        key = {"waba_id": row.waba_id, "recipient": row.recipient}
        if failure.error_code == MARKETING_OPT_OUT:
            stop = {**key, "value": "stop", "timestamp": failure.timestamp_ms, "updated_at": at_ms}
            stops.append(stop)
            restricted[wamid] = _Restriction(row.phone_number_id, row.waba_id, row.recipient)
            continue
        until = failure.timestamp_ms + MARKETING_LIMIT_MS
        limits.append({**key, "until": until, "updated_at": at_ms})
        # As the queue's 131056 hold (pacing.hold_pair): the first send the pair's pacing
        # lets through after this is at `until`.
        tat = until * 1000 + hold_tolerance_us
        holds.append(
            {
                "b_phone_number_id": row.phone_number_id,
                "b_recipient": row.recipient,
                "b_tat": tat,
                "b_reserved": tat,
            }
        )
        restricted[wamid] = _Restriction(row.phone_number_id, row.waba_id, row.recipient, until)
    if stops:
        connection.execute(q.upsert_preferences(dialect), stops)
    if limits:
        connection.execute(q.upsert_limits(dialect), limits)
    if holds:
        connection.execute(set_pair(dialect), holds)
    return restricted


_KIND_CHARS: int = message_events.c.kind.type.length  # type: ignore[attr-defined]
_RECIPIENT_CHARS: int = suppressions.c.recipient.type.length  # type: ignore[attr-defined]
_WABA_CHARS: int = suppressions.c.waba_id.type.length  # type: ignore[attr-defined]


def storable(
    statuses: Sequence[StatusRow],
    preferences: Sequence[PreferenceRow],
    events: Sequence[EventRow],
) -> tuple[list[StatusRow], list[PreferenceRow], list[EventRow], list[str]]:
    """The rows the columns can hold (free text cleaned of NUL), and why the others cannot."""
    refused: list[str] = []
    kept_statuses: list[StatusRow] = []
    for s in statuses:
        if not usable_wamid(s.wamid):
            refused.append(f"status with an unusable wamid ({len(s.wamid)} characters)")
        elif not usable_timestamp(s.timestamp_ms):
            refused.append(f"status of {s.wamid[:80]} at an impossible time {s.timestamp_ms}")
        else:
            kept_statuses.append(
                replace(
                    s,
                    pricing=without_nul(s.pricing),
                    errors=without_nul(s.errors),
                    error_title=without_nul(s.error_title),
                    error_details=without_nul(s.error_details),
                )
            )
    kept_preferences: list[PreferenceRow] = []
    for p in preferences:
        if (
            fits(p.waba_id, _WABA_CHARS)
            and fits(p.recipient, _RECIPIENT_CHARS)
            and (usable_timestamp(p.timestamp_ms))
        ):
            kept_preferences.append(p)
        else:
            refused.append(f"preference of an unusable recipient or time ({p.recipient[:80]!r})")
    kept_events: list[EventRow] = []
    for e in events:
        if (
            e.kind
            and fits(e.kind, _KIND_CHARS)
            and fits(e.recipient, _RECIPIENT_CHARS)
            and (e.wamid is None or usable_wamid(e.wamid))
            and usable_timestamp(e.timestamp_ms)
        ):
            kept_events.append(replace(e, payload=without_nul(e.payload) or ""))
        else:
            refused.append(f"{e.kind[:64]!r} event with an unusable field")
    return kept_statuses, kept_preferences, kept_events, refused


def _summary(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def _only_sandbox(
    connection: Connection,
    preferences: Sequence[PreferenceRow],
    events: Sequence[EventRow],
) -> tuple[list[PreferenceRow], list[EventRow]]:
    """The opt-outs and clicks a sandbox-signed body may store: an opt-out only for a
    WABA whose numbers all go to the sandbox, a click only for a message of a sandbox
    number. (Its statuses are sorted by `_store`, from the messages it reads anyway.)"""
    wamids = list({e.wamid for e in events if e.wamid})
    upstream_of: dict[str, set[str]] = {}
    for wamid, upstream in _by_chunk(connection, q.UPSTREAMS_OF_WAMIDS, wamids):
        upstream_of.setdefault(wamid, set()).add(upstream)
    wabas = list({p.waba_id for p in preferences})
    waba_upstreams: dict[str, set[str]] = {}
    if wabas:
        rows = connection.execute(q.UPSTREAMS_OF_WABAS, {"b_waba_ids": wabas[:_CHUNK]})
        for waba_id, upstream in rows:
            waba_upstreams.setdefault(waba_id, set()).add(upstream)
    sandbox = {"sandbox"}
    return (
        [p for p in preferences if waba_upstreams.get(p.waba_id) == sandbox],
        [e for e in events if e.wamid is not None and upstream_of.get(e.wamid) == sandbox],
    )


def _seen(connection: Connection, wamids: Sequence[str]) -> tuple[dict[str, set[Status]], set[str]]:
    """The statuses each wamid's timeline holds already, and the wamids with a status
    stored before its message was known (not applied to it yet)."""
    seen: dict[str, set[Status]] = {}
    unapplied: set[str] = set()
    for wamid, status, matched in _by_chunk(connection, q.SEEN, list(set(wamids))):
        seen.setdefault(wamid, set()).add(status)
        if not matched:
            unapplied.add(wamid)
    return seen, unapplied


class Found(NamedTuple):
    """A message Meta knows by a wamid; `notify`: its number has a webhook endpoint;
    `upstream`: where its number sends (`meta`, `sandbox`)."""

    seq: int
    status: Status
    notify: bool
    upstream: str


def _messages_by_wamid(connection: Connection, wamids: Sequence[str]) -> dict[str, Found]:
    """The messages Meta knows by these wamids."""
    current: dict[str, Found] = {}
    rows = _by_chunk(connection, q.MESSAGES_BY_WAMID, sorted(set(wamids)))
    for seq, wamid, status, notify, upstream in rows:
        previous = current.get(wamid)
        if previous is not None and previous.upstream != "sandbox":
            upstream = previous.upstream  # one wamid, two messages: the stricter reading
        current[wamid] = Found(seq, status, bool(notify), upstream)
    return current


def _status_of(current: dict[str, Found]) -> dict[str, Status]:
    return {wamid: found.status for wamid, found in current.items()}


def _write_moves(
    connection: Connection,
    moves: dict[str, Move],
    current: dict[str, Found],
    at_ms: int,
    reports: Sequence[StatusRow],
    hold_tolerance_us: int,
) -> tuple[int, int, dict[str, _Restriction]]:
    """Write each decided move (and the error of the failure it ends on), what a 131050 or
    131049 failure restricts (`_restrict`), and the customer webhook deliveries of the
    moves of numbers with an endpoint (`reports`: the statuses that decided the moves):
    (messages moved, deliveries written, restrictions by wamid)."""
    changes: list[dict[str, Any]] = []
    for wamid, move in moves.items():
        failure = move.failure
        changes.append(
            {
                "b_seq": current[wamid].seq,
                "b_status": move.status,
                "b_at": at_ms,
                "b_code": failure.error_code if failure else None,
                "b_title": failure.error_title if failure else None,
                "b_details": failure.error_details if failure else None,
            }
        )
    if changes:
        connection.execute(q.MOVE, changes)
    restricted = _restrict(connection, moves, current, at_ms, hold_tolerance_us)
    notified = {wamid for wamid in moves if current[wamid].notify}
    written = 0
    if notified:
        passed = _passed(notified, current, reports)
        written = write_status_events(connection, passed, at_ms)
    return len(changes), written, restricted


def _passed(
    wamids: set[str], current: dict[str, Found], reports: Sequence[StatusRow]
) -> dict[int, list[StatusRow]]:
    """The statuses each of these messages (by seq) passes through: each is an event."""
    by_wamid: dict[str, list[StatusRow]] = {}
    for row in reports:
        if row.wamid in wamids:
            by_wamid.setdefault(row.wamid, []).append(row)
    return {
        current[wamid].seq: steps(current[wamid].status, _first_of_each_status(rows))
        for wamid, rows in by_wamid.items()
    }


def _first_of_each_status(rows: Sequence[StatusRow]) -> list[StatusRow]:
    """The first report of each status, as the timeline keeps it (see `decide`)."""
    first: dict[Status, StatusRow] = {}
    for row in rows:
        first.setdefault(row.status, row)
    return list(first.values())


def apply_stored_statuses(
    connection: Connection, wamids: Sequence[str], at_ms: int, hold_tolerance_us: int
) -> int:
    """Apply the timeline's statuses of these wamids to their messages; mark them matched.

    Used when the worker records a wamid (statuses may have come first) and by the
    reconciliation of statuses that found no message when they arrived.
    """
    moved, _, _ = _apply_stored(connection, wamids, at_ms, hold_tolerance_us)
    return moved


def _apply_stored(
    connection: Connection, wamids: Sequence[str], at_ms: int, hold_tolerance_us: int
) -> tuple[int, int, dict[str, _Restriction]]:
    """`apply_stored_statuses`: (messages moved, customer webhook deliveries written)."""
    # Mostly there is none (the worker records a wamid before Meta reports on it): one
    # read finds that, before the messages are read and held.
    if not wamids or not _by_chunk(connection, q.STORED_STATUSES, list(wamids)):
        return 0, 0, {}
    current = _messages_by_wamid(connection, wamids)
    if not current:
        return 0, 0, {}
    stored = _by_chunk(connection, q.STORED_STATUSES, list(current))
    rows = [status_row(*row) for row in stored]
    if not rows:
        return 0, 0, {}
    matched = list({row.wamid for row in rows})
    for start in range(0, len(matched), _CHUNK):
        connection.execute(q.MARK_MATCHED, {"b_wamids": matched[start : start + _CHUNK]})
    # Stored statuses never moved these messages: decide as if they all came now.
    _, moves = decide_all(_status_of(current), {}, rows)
    return _write_moves(connection, moves, current, at_ms, rows, hold_tolerance_us)


async def reconcile(
    engine: AsyncEngine,
    now_ms: int,
    give_up_after_ms: int,
    after_seq: int,
    hold_tolerance_us: int,
) -> tuple[int, int]:
    """Apply statuses that came before their wamid was recorded: (messages moved, cursor).

    A webhook and the worker's record of the same wamid can commit at the same
    time, each unseen by the other; this pass (run by the worker's housekeeping)
    closes that gap. Each pass looks at the next _CHUNK waiting statuses after
    `after_seq` and returns where to continue (0: wrap around to the oldest), so
    statuses that wait long never starve newer ones. Statuses of wamids no message
    ever had (another system's, or Meta's for a message we do not know) stop being
    retried after a while.
    """

    def work(connection: Connection) -> tuple[int, int]:
        waiting = {"b_after": after_seq, "b_limit": _CHUNK}
        pending = connection.execute(q.UNMATCHED, waiting).all()
        cursor = pending[-1].seq if len(pending) == _CHUNK else 0
        if not pending:
            return 0, cursor
        moved = apply_stored_statuses(
            connection, [row.upstream_wamid for row in pending], now_ms, hold_tolerance_us
        )
        stale = [
            row.upstream_wamid for row in pending if row.received_at < now_ms - give_up_after_ms
        ]
        if stale:
            connection.execute(q.GIVE_UP, {"b_wamids": stale})
        return moved, cursor

    async with begin_write(engine) as connection:
        moved_and_cursor: tuple[int, int] = await run_batch(connection, work)
        return moved_and_cursor


def _by_chunk(connection: Connection, statement: Executable, wamids: Sequence[str]) -> list[Any]:
    """The rows of a read over `b_wamids`, run a chunk of wamids at a time, in order."""
    rows: list[Any] = []
    for start in range(0, len(wamids), _CHUNK):
        chunk = {"b_wamids": list(wamids[start : start + _CHUNK])}
        rows.extend(connection.execute(statement, chunk))
    return rows
