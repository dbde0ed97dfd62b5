"""Customer-webhook deliveries, written in the transaction of the change that causes them.

Synchronous, on SQLAlchemy's `Connection`: the moving transactions run their statements
through `engine.run_batch` (whole in SQLite's thread; `run_sync` elsewhere).

A message's status move (Meta's status, a send's failure, an expiry, an abandoned
lease) and a recipient's opt-out or opt-in draft events (`domain.notifications`);
`write_event_deliveries` fans them out to the subscribed endpoints and inserts one
delivery each, in the caller's transaction: the move and its notifications commit or
roll back together.

With no endpoints configured, the paths cost (almost) nothing more: Meta's statuses
learn whether a number has an endpoint in the read that finds their messages
(`MESSAGES_BY_WAMID`'s `notify`); expiries and abandoned leases read the facts of what
they failed (`MESSAGE_FACTS`, finding nothing) only when something failed; an outcome
batch holding failures reads `ANY_ENDPOINT`; opt-outs read `NUMBERS_OF_WABAS`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from sqlalchemy.engine import Connection

from wagate.adapters.store.engine import dialect_of
from wagate.adapters.store.queries import notify as q
from wagate.adapters.store.queries.messages import NOTIFY_WEBHOOKS
from wagate.domain.model import Status
from wagate.domain.notifications import (
    OPTED_OUT_CODE,
    EventDraft,
    MessageFacts,
    WebhookEndpoint,
    contact_event,
    fan_out,
    message_event,
)
from wagate.domain.statuses import PreferenceRow, StatusRow

# SQLite allows 32,766 bound parameters; IN lists stay well below.
_CHUNK = 500


def new_delivery_id() -> str:
    """A delivery's id, sent as its idempotency key (`webhook-id`)."""
    return "evt_" + uuid.uuid4().hex


def write_event_deliveries(
    connection: Connection, drafts: Sequence[EventDraft], now_ms: int
) -> int:
    """Insert one pending delivery per (draft, subscribed active endpoint), due at once;
    how many. One read of the drafts' numbers' endpoints; nothing at all without drafts."""
    if not drafts:
        return 0
    numbers = sorted({draft.phone_number_id for draft in drafts})
    endpoints: list[WebhookEndpoint] = []
    for start in range(0, len(numbers), _CHUNK):
        chunk = {"b_numbers": numbers[start : start + _CHUNK]}
        for row in connection.execute(q.ENDPOINTS_FOR_FAN_OUT, chunk):
            endpoints.append(_fan_out_endpoint(row))
    pairs = fan_out(drafts, endpoints)
    if not pairs:
        return 0
    connection.execute(
        q.INSERT_DELIVERY,
        [
            {
                "id": new_delivery_id(),
                "endpoint_id": endpoint.id,
                "order_key": draft.order_key,
                "event_type": draft.type,
                "data": draft.data,
                "occurred_at": draft.occurred_at,
                "created_at": now_ms,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now_ms,
            }
            for draft, endpoint in pairs
        ],
    )
    if dialect_of(connection).notifies:
        # Notifiers of other processes wake at the commit instead of at their next look.
        connection.execute(NOTIFY_WEBHOOKS)
    return len(pairs)


def _fan_out_endpoint(row: Any) -> WebhookEndpoint:
    """What the fan-out reads of an endpoint (its secrets stay sealed: not needed here)."""
    return WebhookEndpoint(
        id=row.id,
        project_id="",
        phone_number_id=row.phone_number_id,
        url="",
        kind="standard",
        events=tuple(json.loads(row.events)),
        active=True,
        secret="",
    )


def message_facts(connection: Connection, seqs: Iterable[int]) -> dict[int, Any]:
    """The facts rows of these messages whose numbers have an active endpoint, by seq."""
    wanted = sorted(set(seqs))
    found: dict[int, Any] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = {"b_seqs": wanted[start : start + _CHUNK]}
        for row in connection.execute(q.MESSAGE_FACTS, chunk):
            found[row.seq] = row
    return found


def facts_of(row: Any) -> MessageFacts:
    """`MessageFacts` from a MESSAGE_FACTS row."""
    return MessageFacts(
        message_id=row.id,
        project_id=row.project_id,
        phone_number_id=row.phone_number_id,
        waba_id=row.waba_id,
        recipient=row.recipient,
        recipient_kind=row.recipient_kind,
        wamid=row.upstream_wamid,
        request=row.request,
        biz_opaque_callback_data=row.biz_opaque_callback_data,
        created_at=row.created_at,
    )


def _opted_out(row: Any, at_ms: int) -> EventDraft:
    """A 131050 failure: Meta tells us the recipient stopped marketing messages."""
    return contact_event(
        row.project_id,
        row.phone_number_id,
        row.waba_id,
        row.recipient,
        "stop",
        at_ms,
        reason=str(OPTED_OUT_CODE),
    )


def write_status_events(
    connection: Connection, steps: Mapping[int, Sequence[StatusRow]], now_ms: int
) -> int:
    """Deliveries for messages (by seq) that Meta's statuses moved through `steps`, each
    step with its own time, pricing and errors; a 131050 failure also opts the user out."""
    if not steps:
        return 0
    found = message_facts(connection, steps)
    drafts: list[EventDraft] = []
    for seq, row in found.items():
        facts = facts_of(row)
        for step in steps[seq]:
            draft = message_event(
                facts,
                step.status,
                step.timestamp_ms,
                pricing=step.pricing,
                errors=step.errors,
                error_code=step.error_code,
                error_title=step.error_title,
                error_details=step.error_details,
            )
            if draft is not None:
                drafts.append(draft)
            if step.status == "failed" and step.error_code == OPTED_OUT_CODE:
                drafts.append(_opted_out(row, step.timestamp_ms))
    return write_event_deliveries(connection, drafts, now_ms)


def write_failure_events(connection: Connection, failed_at: Mapping[int, int], now_ms: int) -> int:
    """Deliveries for messages (seq -> when) the gateway failed itself or on a send's
    answer: the error is the one the row now holds; 131050 also opts the user out."""
    # A mass expiry without any endpoint must not read its messages a chunk at a time.
    if not failed_at or not any_endpoint(connection):
        return 0
    drafts: list[EventDraft] = []
    for seq, row in message_facts(connection, failed_at).items():
        at_ms = failed_at[seq]
        failed: Status = "failed"
        draft = message_event(
            facts_of(row),
            failed,
            at_ms,
            error_code=row.error_code,
            error_title=row.error_title,
            error_details=row.error_details,
        )
        if draft is not None:
            drafts.append(draft)
        if row.error_code == OPTED_OUT_CODE:
            drafts.append(_opted_out(row, at_ms))
    return write_event_deliveries(connection, drafts, now_ms)


def any_endpoint(connection: Connection) -> bool:
    """Whether any endpoint is active (one read of a tiny table)."""
    return connection.execute(q.ANY_ENDPOINT).first() is not None


def preference_drafts(
    connection: Connection, preferences: Sequence[PreferenceRow]
) -> list[EventDraft]:
    """Opt-out/opt-in events for every endpoint-bearing number of each preference's WABA.

    Read before the preferences are stored: only a preference newer than the stored one
    that changes it is news (Meta retries a webhook for days, and may send them out of
    order; the stored row keeps the newest).
    """
    changes = [p for p in preferences if p.value in ("stop", "resume")]
    if not changes:
        return []
    wabas = sorted({p.waba_id for p in changes})[:_CHUNK]
    numbers: dict[str, list[Any]] = {}
    for row in connection.execute(q.NUMBERS_OF_WABAS, {"b_waba_ids": wabas}):
        numbers.setdefault(row.waba_id, []).append(row)
    if not numbers:
        return []
    recipients = sorted({p.recipient for p in changes if p.waba_id in numbers})[:_CHUNK]
    stored = {
        (row.waba_id, row.recipient): (row.value, row.timestamp)
        for row in connection.execute(
            q.PREFERENCES_OF, {"b_waba_ids": sorted(numbers), "b_recipients": recipients}
        )
    }
    drafts: list[EventDraft] = []
    for p in sorted(changes, key=lambda p: p.timestamp_ms):
        key = (p.waba_id, p.recipient)
        before = stored.get(key)
        if p.waba_id not in numbers or (before is not None and before[1] >= p.timestamp_ms):
            continue
        stored[key] = (p.value, p.timestamp_ms)
        if before is not None and before[0] == p.value:
            continue
        value: Literal["stop", "resume"] = "stop" if p.value == "stop" else "resume"
        drafts.extend(
            contact_event(
                number.project_id,
                number.phone_number_id,
                number.waba_id,
                p.recipient,
                value,
                p.timestamp_ms,
                reason="user_preferences",
            )
            for number in numbers[p.waba_id]
        )
    return drafts
