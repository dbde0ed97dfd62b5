"""The one status order; what Meta's statuses do: what the timeline keeps, where a message moves.

A message moves pending -> sent -> delivered -> read, may skip steps, never goes
back; `failed` may come at any point. `read` and `failed` are both final: a late
`failed` after `read` is ignored (the user has read the message), and nothing
moves a failed message. Meta delivers a status more than once and in any order:
the timeline keeps each status of a wamid once (the first report of it), and a
batch is applied in Meta's time order, so the same statuses end in the same
place however they are split into POSTs, except that of `read` and `failed`,
the first to reach the message stays.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from wagate.domain.meta_errors import meta_error
from wagate.domain.model import Status

# pending -> sent -> delivered -> read; `failed` sorts last among statuses of the same
# time, so that of a `read` and a `failed` at the same second, `read` stays.
_RANK: dict[str, int] = {"pending": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4}
FINAL: frozenset[str] = frozenset({"read", "failed"})
# Meta asks to wait at least this long before another marketing message to a user it
# limited (131049).
MARKETING_LIMIT_MS = 24 * 3600 * 1000
# A status that found no message (its wamid not yet recorded) is applied when one
# appears; after this long it never will be: another system's wamid, or one we lost.
UNMATCHED_GIVE_UP_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One status of one wamid as the timeline keeps it; pricing and errors are Meta's JSON."""

    wamid: str
    status: Status
    timestamp_ms: int
    pricing: str | None
    errors: str | None
    error_code: int | None
    error_title: str | None
    error_details: str | None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One status of a message's timeline; pricing and errors as Meta sent them (JSON)."""

    status: Status
    timestamp_ms: int
    pricing: str | None
    errors: str | None


@dataclass(frozen=True, slots=True)
class PreferenceRow:
    """A stop or resume of one recipient."""

    waba_id: str
    recipient: str
    value: str
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class EventRow:
    """Another event about a message (a click)."""

    wamid: str | None
    kind: str
    recipient: str | None
    payload: str
    timestamp_ms: int
    # What makes the event unique (a hash of its kind and Meta's click_id): stored once.
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one webhook POST changed."""

    stored: int
    duplicates: int
    moved: int
    # Rows refused: the store cannot hold them (NUL, an absurd wamid or time).
    rejected: int = 0
    # Customer webhook deliveries written (the notifier has work only when this is > 0).
    notified: int = 0
    # (waba_id, recipient) whose opt-out or limit this wrote: the send checks read them again.
    recipients: tuple[tuple[str, str], ...] = ()

    def __add__(self, other: IngestResult) -> IngestResult:
        """Both results together (a batch stored row by row)."""
        return IngestResult(
            self.stored + other.stored,
            self.duplicates + other.duplicates,
            self.moved + other.moved,
            self.rejected + other.rejected,
            self.notified + other.notified,
            self.recipients + other.recipients,
        )


@dataclass(frozen=True, slots=True)
class Move:
    """Where a message moves; `failure` is the status whose error it then carries (or None)."""

    status: Status
    failure: StatusRow | None = None


@dataclass(frozen=True, slots=True)
class StatusDecision:
    """What a batch of statuses does to one message: rows to add to its timeline, its move."""

    store: tuple[StatusRow, ...]
    move: Move | None


def status_row(
    wamid: str, status: Status, timestamp_ms: int, errors: str | None, pricing: str | None = None
) -> StatusRow:
    """A status with Meta's first error read from its `errors` JSON (title, else message)."""
    error = meta_error(errors)
    return StatusRow(
        wamid=wamid,
        status=status,
        timestamp_ms=timestamp_ms,
        pricing=pricing,
        errors=errors,
        error_code=error.code if error else None,
        error_title=(error.title or error.message) if error else None,
        error_details=error.details if error else None,
    )


def advances(current: Status, incoming: Status) -> bool:
    """Whether a message in `current` moves to `incoming`: forward only, read and failed final."""
    if current in FINAL or current == incoming:
        return False
    return incoming == "failed" or _RANK[incoming] > _RANK[current]


def settle(current: Status, incoming: Sequence[Status]) -> Status:
    """The status after these updates, applied one after the other."""
    status = current
    for candidate in incoming:
        if advances(status, candidate):
            status = candidate
    return status


def moves_to(current: Status, reports: Sequence[StatusRow]) -> Move | None:
    """Where a message in `current` moves on these statuses, taken in Meta's time order."""
    ordered = sorted(reports, key=lambda r: (r.timestamp_ms, _RANK[r.status]))
    after = settle(current, [r.status for r in ordered])
    if after == current:
        return None
    # Meta's error belongs on the message only if it ends failed.
    failure = (
        next((r for r in ordered if r.status == "failed"), None) if after == "failed" else None
    )
    return Move(after, failure)


def steps(current: Status, reports: Sequence[StatusRow]) -> list[StatusRow]:
    """The statuses a message in `current` passes through on these reports, in Meta's time
    order (the last is where `moves_to` ends it): each one is news to a customer webhook,
    even when one POST carries a message from pending to read."""
    ordered = sorted(reports, key=lambda r: (r.timestamp_ms, _RANK[r.status]))
    taken: list[StatusRow] = []
    status = current
    for row in ordered:
        if advances(status, row.status):
            status = row.status
            taken.append(row)
    return taken


def decide(
    current: Status | None, seen: Collection[Status], incoming: Sequence[StatusRow]
) -> StatusDecision:
    """What statuses of one wamid do: the ones the timeline lacks, and the message's move.

    `current` is the message's status (None: no message has this wamid yet, so
    nothing moves until one has); `seen` the statuses its timeline already holds.
    """
    new: dict[Status, StatusRow] = {}
    for row in incoming:
        if row.status not in seen and row.status not in new:
            new[row.status] = row
    store = tuple(new.values())
    return StatusDecision(store, None if current is None else moves_to(current, store))


def decide_all(
    current: Mapping[str, Status],
    seen: Mapping[str, Collection[Status]],
    incoming: Sequence[StatusRow],
) -> tuple[list[StatusRow], dict[str, Move]]:
    """`decide` for a batch of many wamids: rows to store (in arrival order) and moves by wamid."""
    by_wamid: dict[str, list[StatusRow]] = {}
    for row in incoming:
        by_wamid.setdefault(row.wamid, []).append(row)
    store: dict[tuple[str, Status], StatusRow] = {}
    moves: dict[str, Move] = {}
    for wamid, rows in by_wamid.items():
        decision = decide(current.get(wamid), seen.get(wamid, ()), rows)
        store.update(((wamid, row.status), row) for row in decision.store)
        if decision.move is not None:
            moves[wamid] = decision.move
    # Each stored row is the first report of its status: keep the order they came in.
    ordered = [row for row in incoming if store.get((row.wamid, row.status)) is row]
    return list(dict.fromkeys(ordered)), moves
