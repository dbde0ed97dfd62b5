"""Meta's statuses, opt-outs and clicks in memory: StatusStore and Timelines.

The same decisions as `adapters/store/statuses.py`: the domain says which statuses
are new and where a message moves; rows no store can hold are refused by the
domain's sanitise rules. (Column lengths are the SQL schema's; memory has none.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from wagate.adapters.memory.tables import (
    EventRecord,
    MemoryDatabase,
    MessageRow,
    Preference,
    StatusRecord,
)
from wagate.domain.errors import HEALTHY_ECOSYSTEM, MARKETING_OPT_OUT
from wagate.domain.model import Status
from wagate.domain.pacing import PAIR_BURST, PAIR_INTERVAL_S, PairState, Rate, hold_pair
from wagate.domain.pacing import pair_rate as default_pair_rate
from wagate.domain.sanitise import usable_timestamp, usable_wamid, without_nul
from wagate.domain.statuses import (
    MARKETING_LIMIT_MS,
    EventRow,
    IngestResult,
    PreferenceRow,
    StatusRow,
    TimelineEntry,
    decide_all,
    status_row,
)


class MemoryStatusStore:
    """What `SqlStatusStore` does, on a `MemoryDatabase`."""

    def __init__(self, database: MemoryDatabase, pair_rate: Rate | None = None) -> None:
        self.database = database
        # The pair pacing a 131049 hold is written for (the queue's).
        self.pair_rate = pair_rate or default_pair_rate(PAIR_INTERVAL_S, PAIR_BURST)

    async def ingest(
        self,
        statuses: Sequence[StatusRow],
        preferences: Sequence[PreferenceRow],
        events: Sequence[EventRow],
        received_ms: int,
        *,
        sandbox_only: bool = False,
    ) -> IngestResult:
        """Store every storable row once; move each matched message forward only."""
        kept_statuses, kept_preferences, kept_events, refused = storable(
            statuses, preferences, events
        )
        if sandbox_only:
            kept_statuses, kept_preferences, kept_events = self._only_sandbox(
                kept_statuses, kept_preferences, kept_events
            )
        result = self._store(kept_statuses, kept_preferences, kept_events, received_ms)
        return dataclasses.replace(result, rejected=refused)

    async def timeline(self, wamids: Sequence[str]) -> dict[str, list[TimelineEntry]]:
        """Each wamid's statuses, oldest first, with Meta's pricing and errors."""
        wanted = set(wamids)
        records = sorted(
            (r for r in self.database.statuses.values() if r.wamid in wanted),
            key=lambda r: (r.timestamp_ms, r.seq),
        )
        result: dict[str, list[TimelineEntry]] = {}
        for r in records:
            entry = TimelineEntry(r.status, r.timestamp_ms, r.pricing, r.errors)
            result.setdefault(r.wamid, []).append(entry)
        return result

    async def events(self, wamid: str) -> list[tuple[str, str]]:
        """A message's other events: (kind, payload JSON)."""
        return [(e.kind, e.payload) for e in self.database.events if e.wamid == wamid]

    async def preference(self, waba_id: str, recipient: str) -> str | None:
        """The latest stop/resume of a recipient, if any."""
        found = self.database.preferences.get((waba_id, recipient))
        return None if found is None else found.value

    def _store(
        self,
        statuses: Sequence[StatusRow],
        preferences: Sequence[PreferenceRow],
        events: Sequence[EventRow],
        received_ms: int,
    ) -> IngestResult:
        db = self.database
        deliveries_before = len(db.deliveries)
        wamids = [s.wamid for s in statuses]
        current = db.messages_by_wamid(wamids)
        new, moves = decide_all(
            {wamid: row.status for wamid, row in current.items()}, self._seen(wamids), statuses
        )
        for s in new:
            db.statuses[(s.wamid, s.status)] = StatusRecord(
                seq=db.next_seq(),
                wamid=s.wamid,
                status=s.status,
                timestamp_ms=s.timestamp_ms,
                pricing=s.pricing,
                errors=s.errors,
                received_at=received_ms,
                matched=s.wamid in current,
            )
        moved = db.write_moves(moves, current, received_ms)
        recipients: list[tuple[str, str]] = []
        for wamid, move in moves.items():
            # As SqlStatusStore's `_restrict`: 131050 opts out, 131049 limits and holds.
            failure, row = move.failure, current.get(wamid)
            number = None if row is None else db.numbers.get(row.message.phone_number_id)
            if row is None or number is None or failure is None or move.status != "failed":
                continue
            key = (number.number.waba_id, row.message.recipient)
            if failure.error_code == MARKETING_OPT_OUT:
                stored = db.preferences.get(key)
                if stored is None or stored.timestamp_ms <= failure.timestamp_ms:
                    db.preferences[key] = Preference("stop", failure.timestamp_ms, received_ms)
                recipients.append(key)
            elif failure.error_code == HEALTHY_ECOSYSTEM:
                until = failure.timestamp_ms + MARKETING_LIMIT_MS
                db.limits[key] = (max(until, db.limits.get(key, (0, 0))[0]), received_ms)
                recipients.append(key)
                # The queue's 131056 hold: the pair sends nothing before `until`.
                pair_key = (row.message.phone_number_id, row.message.recipient)
                pair = db.pairs.get(pair_key, PairState())
                db.pairs[pair_key] = hold_pair(pair, until * 1000, self.pair_rate)
        for p in preferences:
            # The newest preference wins, whatever order Meta delivers them in.
            stored = db.preferences.get((p.waba_id, p.recipient))
            if stored is None or stored.timestamp_ms <= p.timestamp_ms:
                db.preferences[(p.waba_id, p.recipient)] = Preference(
                    p.value, p.timestamp_ms, received_ms
                )
                recipients.append((p.waba_id, p.recipient))
                # Told once per change: Meta's retries of the same stop are not news.
                if stored is None or stored.value != p.value:
                    db.preference_changed(p.waba_id, p.recipient, p.value, p.timestamp_ms)
        known = {e.dedupe_key for e in db.events if e.dedupe_key is not None}
        for e in events:
            # Meta retries for days: a click already stored (same dedupe key) is skipped.
            if e.dedupe_key is None or e.dedupe_key not in known:
                record = EventRecord(db.next_seq(), e.wamid, e.kind, e.payload, e.dedupe_key)
                db.events.append(record)
                if e.dedupe_key is not None:
                    known.add(e.dedupe_key)
        notified = len(db.deliveries) - deliveries_before
        return IngestResult(
            len(new),
            len(statuses) - len(new),
            moved,
            notified=notified,
            recipients=tuple(dict.fromkeys(recipients)),
        )

    async def recipient_changes(
        self, since_ms: int
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, int]]]:
        """Opt-out and limit rows written at or after `since_ms` (0: every stop, every
        limit)."""
        db = self.database
        stops = [
            (waba_id, recipient, p.value)
            for (waba_id, recipient), p in db.preferences.items()
            if (
                p.value == "stop" if since_ms <= 0 else (p.updated_at or p.timestamp_ms) >= since_ms
            )
        ]
        limits = [
            (waba_id, recipient, until)
            for (waba_id, recipient), (until, written) in db.limits.items()
            if since_ms <= 0 or written >= since_ms
        ]
        return stops, limits

    async def recipient_state(self, waba_id: str, recipient: str) -> tuple[bool, int | None]:
        """Whether the recipient stopped marketing messages, and until when Meta limits them."""
        stored = self.database.preferences.get((waba_id, recipient))
        limit = self.database.limits.get((waba_id, recipient))
        return stored is not None and stored.value == "stop", None if limit is None else limit[0]

    def _seen(self, wamids: Sequence[str]) -> dict[str, set[Status]]:
        wanted = set(wamids)
        seen: dict[str, set[Status]] = {}
        for wamid, status in self.database.statuses:
            if wamid in wanted:
                seen.setdefault(wamid, set()).add(status)
        return seen

    def _only_sandbox(
        self,
        statuses: list[StatusRow],
        preferences: list[PreferenceRow],
        events: list[EventRow],
    ) -> tuple[list[StatusRow], list[PreferenceRow], list[EventRow]]:
        """What a sandbox-signed body may store (see SqlStatusStore for the rules)."""
        db = self.database
        upstream_of: dict[str, set[str]] = {}
        for row in db.messages.values():
            number = db.numbers.get(row.message.phone_number_id)
            if row.upstream_wamid is not None and number is not None:
                upstream_of.setdefault(row.upstream_wamid, set()).add(number.number.upstream)
        waba_upstreams: dict[str, set[str]] = {}
        for number_row in db.numbers.values():
            waba_id, upstream = number_row.number.waba_id, number_row.number.upstream
            waba_upstreams.setdefault(waba_id, set()).add(upstream)
        sandbox = {"sandbox"}
        return (
            [s for s in statuses if upstream_of.get(s.wamid, sandbox) == sandbox],
            [p for p in preferences if waba_upstreams.get(p.waba_id) == sandbox],
            [e for e in events if e.wamid is not None and upstream_of.get(e.wamid) == sandbox],
        )


def storable(
    statuses: Sequence[StatusRow],
    preferences: Sequence[PreferenceRow],
    events: Sequence[EventRow],
) -> tuple[list[StatusRow], list[PreferenceRow], list[EventRow], int]:
    """The rows a store can hold (free text cleaned of NUL), and how many were refused."""
    kept_statuses = [
        dataclasses.replace(
            s,
            pricing=without_nul(s.pricing),
            errors=without_nul(s.errors),
            error_title=without_nul(s.error_title),
            error_details=without_nul(s.error_details),
        )
        for s in statuses
        if usable_wamid(s.wamid) and usable_timestamp(s.timestamp_ms)
    ]
    kept_preferences = [
        p
        for p in preferences
        if "\x00" not in p.waba_id + p.recipient and usable_timestamp(p.timestamp_ms)
    ]
    kept_events = [
        dataclasses.replace(e, payload=without_nul(e.payload) or "")
        for e in events
        if e.kind
        and "\x00" not in e.kind + (e.recipient or "")
        and (e.wamid is None or usable_wamid(e.wamid))
        and usable_timestamp(e.timestamp_ms)
    ]
    refused = (
        len(statuses)
        + len(preferences)
        + len(events)
        - len(kept_statuses)
        - len(kept_preferences)
        - len(kept_events)
    )
    return kept_statuses, kept_preferences, kept_events, refused


def apply_stored_statuses(database: MemoryDatabase, wamids: Sequence[str], at_ms: int) -> int:
    """Apply the timeline's statuses of these wamids to their messages; mark them matched."""
    current: dict[str, MessageRow] = database.messages_by_wamid(wamids)
    if not current:
        return 0
    records = [r for r in database.statuses.values() if r.wamid in current]
    if not records:
        return 0
    for r in records:
        r.matched = True
    rows = [status_row(r.wamid, r.status, r.timestamp_ms, r.errors) for r in records]
    # Stored statuses never moved these messages: decide as if they all came now.
    _, moves = decide_all({w: row.status for w, row in current.items()}, {}, rows)
    return database.write_moves(moves, current, at_ms)


def reconcile(database: MemoryDatabase, now_ms: int, give_up_after_ms: int) -> int:
    """Apply statuses that came before their wamid was recorded; stop retrying stale ones."""
    pending = [r for r in database.statuses.values() if not r.matched]
    if not pending:
        return 0
    moved = apply_stored_statuses(database, [r.wamid for r in pending], now_ms)
    stale = {r.wamid for r in pending if r.received_at < now_ms - give_up_after_ms}
    for r in database.statuses.values():
        if r.wamid in stale:
            r.matched = True
    return moved
