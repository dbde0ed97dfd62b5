"""The in-memory tables: what the SQL schema holds, as mutable rows in dicts."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from wagate.domain.model import (
    ApiKey,
    DeliveryState,
    NewMessage,
    PhoneNumber,
    Project,
    Status,
    StoredMessage,
)
from wagate.domain.notifications import (
    OPTED_OUT_CODE,
    EventDraft,
    EventType,
    MessageFacts,
    WebhookEndpoint,
    contact_event,
    fan_out,
    message_event,
)
from wagate.domain.notifications import DeliveryState as WebhookState
from wagate.domain.pacing import PacingState, PairState
from wagate.domain.statuses import Move, status_row, steps
from wagate.domain.templates import Template


@dataclass(slots=True)
class MessageRow:
    """A message and its place in the delivery queue (the SQL `messages` row)."""

    seq: int
    message: NewMessage
    status: Status = "pending"
    state: DeliveryState = "queued"
    updated_at: int = 0
    due_at: int = 0
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: int | None = None
    upstream_wamid: str | None = None
    upstream_status: str | None = None
    error_code: int | None = None
    error_title: str | None = None
    error_details: str | None = None
    idempotency_key: str | None = None
    reaps: int = 0
    last_error_code: int | None = None
    last_error_title: str | None = None
    last_error_details: str | None = None
    last_error_at: int | None = None

    def stored(self) -> StoredMessage:
        """The message as the store reads it back."""
        m = self.message
        return StoredMessage(
            id=m.id,
            seq=self.seq,
            project_id=m.project_id,
            phone_number_id=m.phone_number_id,
            recipient_input=m.recipient_input,
            recipient=m.recipient,
            recipient_kind=m.recipient_kind,
            request=m.request,
            template_name=m.template_name,
            template_language=m.template_language,
            biz_opaque_callback_data=m.biz_opaque_callback_data,
            status=self.status,
            created_at=m.created_at,
            updated_at=self.updated_at,
            idempotency_key=self.idempotency_key,
            request_hash=m.request_hash,
            upstream_wamid=self.upstream_wamid,
            error_code=self.error_code,
            error_title=self.error_title,
            error_details=self.error_details,
            last_error_code=self.last_error_code,
            last_error_title=self.last_error_title,
            last_error_details=self.last_error_details,
            last_error_at=self.last_error_at,
        )


@dataclass(slots=True)
class NumberRow:
    """A phone number and its shared pacing state."""

    number: PhoneNumber
    created_at: int
    pacing: PacingState = field(default_factory=PacingState)


@dataclass(slots=True)
class StatusRecord:
    """One status of a wamid's timeline; `matched` once a message had the wamid."""

    seq: int
    wamid: str
    status: Status
    timestamp_ms: int
    pricing: str | None
    errors: str | None
    received_at: int
    matched: bool


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Another event about a message (a click), as stored."""

    seq: int
    wamid: str | None
    kind: str
    payload: str
    dedupe_key: str | None


@dataclass(slots=True)
class Preference:
    """The latest stop/resume of a recipient."""

    value: str
    timestamp_ms: int
    # When the row was last written (the SQL `updated_at`); None: at its timestamp.
    updated_at: int | None = None


@dataclass(slots=True)
class DeliveryRow:
    """One event for one endpoint (the SQL `webhook_deliveries` row)."""

    seq: int
    id: str
    endpoint_id: str
    type: EventType
    order_key: str
    occurred_at: int
    data: str
    created_at: int
    state: WebhookState = "pending"
    attempts: int = 0
    next_attempt_at: int | None = 0
    lease_owner: str | None = None
    lease_expires_at: int | None = None
    delivered_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One attempt at a delivery (the SQL `webhook_attempts` row)."""

    seq: int
    delivery_id: str
    endpoint_id: str
    at: int
    latency_ms: int
    status_code: int | None
    error: str | None


@dataclass(slots=True)
class MemoryDatabase:
    """Every table; the adapters share one instance as the SQL ones share an engine."""

    projects: dict[str, Project] = field(default_factory=dict)
    keys: dict[str, tuple[ApiKey, str]] = field(default_factory=dict)
    numbers: dict[str, NumberRow] = field(default_factory=dict)
    messages: dict[int, MessageRow] = field(default_factory=dict)
    statuses: dict[tuple[str, Status], StatusRecord] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    preferences: dict[tuple[str, str], Preference] = field(default_factory=dict)
    # waba_id -> (name, language) -> (template, written at): the SQL `templates` table.
    templates: dict[str, dict[tuple[str, str], tuple[Template, int]]] = field(default_factory=dict)
    template_syncs: dict[str, int] = field(default_factory=dict)
    # (waba_id, recipient) -> (until_ms, updated_at): Meta limited them (131049).
    limits: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # (phone_number_id, recipient) -> its pacing (the SQL `pair_pacing` table).
    pairs: dict[tuple[str, str], PairState] = field(default_factory=dict)
    # Customer webhooks: endpoints by id, deliveries by seq, attempts oldest first.
    endpoints: dict[str, WebhookEndpoint] = field(default_factory=dict)
    deliveries: dict[int, DeliveryRow] = field(default_factory=dict)
    attempts: list[AttemptRow] = field(default_factory=list)
    # What a readiness probe finds: the schema's revision, and whether it answers at all.
    schema_revision: str | None = None
    reachable: bool = True
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next_seq(self) -> int:
        """A new row number, increasing like the SQL sequences."""
        return next(self._seq)

    def messages_by_wamid(self, wamids: Sequence[str]) -> dict[str, MessageRow]:
        """The messages Meta knows by these wamids."""
        wanted = set(wamids)
        return {
            row.upstream_wamid: row
            for row in self.messages.values()
            if row.upstream_wamid is not None and row.upstream_wamid in wanted
        }

    def write_moves(self, moves: dict[str, Move], rows: dict[str, MessageRow], at_ms: int) -> int:
        """Apply each decided move (and the error of the failure it ends on); count moved."""
        for wamid, move in moves.items():
            row = rows[wamid]
            failure = move.failure
            old = row.status
            row.status = move.status
            row.updated_at = at_ms
            row.error_code = failure.error_code if failure else None
            row.error_title = failure.error_title if failure else None
            row.error_details = failure.error_details if failure else None
            # Every status the message passes through is news, as the SQL store tells it.
            timeline = [
                status_row(r.wamid, r.status, r.timestamp_ms, r.errors, r.pricing)
                for (w, _), r in self.statuses.items()
                if w == wamid
            ]
            for step in steps(old, timeline):
                self.message_moved(
                    row,
                    step.timestamp_ms,
                    status=step.status,
                    pricing=step.pricing,
                    errors=step.errors,
                    now_ms=at_ms,
                )
        return len(moves)

    def message_moved(
        self,
        row: MessageRow,
        at_ms: int,
        *,
        status: Status | None = None,
        pricing: str | None = None,
        errors: str | None = None,
        now_ms: int | None = None,
    ) -> None:
        """Draft the customer events of a message that moved to `status` (default: its own)
        at `at_ms`, in the write at `now_ms` (default: `at_ms`)."""
        status = status or row.status
        failed = status == "failed"
        number = self.numbers.get(row.message.phone_number_id)
        if number is None:
            return
        m = row.message
        facts = MessageFacts(
            message_id=m.id,
            project_id=m.project_id,
            phone_number_id=m.phone_number_id,
            waba_id=number.number.waba_id,
            recipient=m.recipient,
            recipient_kind=m.recipient_kind,
            wamid=row.upstream_wamid,
            request=m.request,
            biz_opaque_callback_data=m.biz_opaque_callback_data,
            created_at=m.created_at,
        )
        drafts: list[EventDraft] = []
        draft = message_event(
            facts,
            status,
            at_ms,
            pricing=pricing,
            errors=errors,
            error_code=row.error_code if failed else None,
            error_title=row.error_title if failed else None,
            error_details=row.error_details if failed else None,
        )
        if draft is not None:
            drafts.append(draft)
        if failed and row.error_code == OPTED_OUT_CODE:
            drafts.append(
                contact_event(
                    m.project_id,
                    m.phone_number_id,
                    number.number.waba_id,
                    m.recipient,
                    "stop",
                    at_ms,
                    reason=str(OPTED_OUT_CODE),
                )
            )
        self.write_event_deliveries(drafts, at_ms if now_ms is None else now_ms)

    def preference_changed(self, waba_id: str, recipient: str, value: str, at_ms: int) -> None:
        """Draft the contact events of a stop or resume, for every number of the WABA."""
        if value not in ("stop", "resume"):
            return
        drafts = [
            contact_event(
                number.number.project_id,
                number.number.phone_number_id,
                waba_id,
                recipient,
                "stop" if value == "stop" else "resume",
                at_ms,
                reason="user_preferences",
            )
            for number in self.numbers.values()
            if number.number.waba_id == waba_id
        ]
        self.write_event_deliveries(drafts, at_ms)

    def write_event_deliveries(self, drafts: Sequence[EventDraft], now_ms: int) -> None:
        """One pending delivery per draft and subscribed active endpoint of its number."""
        if not drafts or not self.endpoints:
            return
        for draft, endpoint in fan_out(drafts, list(self.endpoints.values())):
            seq = self.next_seq()
            self.deliveries[seq] = DeliveryRow(
                seq=seq,
                id=f"evt_{uuid.uuid4().hex}",
                endpoint_id=endpoint.id,
                type=draft.type,
                order_key=draft.order_key,
                occurred_at=draft.occurred_at,
                data=draft.data,
                created_at=now_ms,
                next_attempt_at=now_ms,
            )
