"""Customer webhooks: the endpoints, the events wagate tells them of, and when to retry.

An event is drafted where a message's status moves (or a recipient stops or resumes
marketing), in the transaction that moves it: the store fans the draft out to one
delivery per subscribed endpoint of the number, so nothing is lost between the move
and the notification. The wire formats (Kapso's, Meta's, Standard Webhooks) are
rendered from the draft's `data` at send time (`domain.notify_formats`).

Order: deliveries of one endpoint that share an `order_key` (a message's id, or a
recipient for contact events) go out one at a time, oldest first; a receiver never
sees `read` before the `delivered` of the same message. Different keys flow in
parallel.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from wagate.domain.model import Status

EventType = Literal[
    "whatsapp.message.sent",
    "whatsapp.message.delivered",
    "whatsapp.message.read",
    "whatsapp.message.failed",
    "whatsapp.contact.opted_out",
    "whatsapp.contact.opted_in",
    "whatsapp.webhook.test",
]
# What an endpoint can subscribe to (the test event goes to whoever asks for it).
EVENT_TYPES: tuple[EventType, ...] = (
    "whatsapp.message.sent",
    "whatsapp.message.delivered",
    "whatsapp.message.read",
    "whatsapp.message.failed",
    "whatsapp.contact.opted_out",
    "whatsapp.contact.opted_in",
)
TEST_EVENT: EventType = "whatsapp.webhook.test"
MESSAGE_EVENTS: Mapping[Status, EventType] = {
    "sent": "whatsapp.message.sent",
    "delivered": "whatsapp.message.delivered",
    "read": "whatsapp.message.read",
    "failed": "whatsapp.message.failed",
}
# Meta's code for a user who stopped marketing messages: its failure opts the user out.
OPTED_OUT_CODE = 131050

EndpointKind = Literal["kapso", "meta", "standard"]
ENDPOINT_KINDS: tuple[EndpointKind, ...] = ("kapso", "meta", "standard")

DeliveryState = Literal["pending", "delivering", "delivered", "dead"]

# Retries after a failed attempt (seconds): Kapso's 10 s, 40 s, 90 s, then Svix's tail
# (about 28 h in all). After the last one fails, the delivery is dead-lettered.
RETRY_SCHEDULE_S: tuple[float, ...] = (10, 40, 90, 300, 1800, 7200, 18000, 36000, 36000)
RETRY_JITTER = 0.2
ATTEMPT_TIMEOUT_S = 10.0
# An endpoint failing without a success for this long is paused (settable).
PAUSE_AFTER_S = 86400.0
# How long attempts (and delivered deliveries) are kept for listing.
KEEP_ATTEMPTS_S = 14 * 86400
# An endpoint that failed every attempt for this long was down, not refusing one event:
# its first success makes what waited for a retry due at once (the backlog drains at
# the receiver's pace). Shorter failures (one event a receiver keeps refusing while it
# takes the others) keep their retry schedule, or each success would resend that event.
OUTAGE_S = 30.0
# A rotated standard-webhooks secret keeps signing beside the new one this long.
ROTATION_GRACE_S = 86400.0


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """One customer URL of one phone number, with what it wants and how it is signed.

    `secret` and `headers` are plaintext here; the store keeps them sealed.
    """

    id: str
    project_id: str
    phone_number_id: str
    url: str
    kind: EndpointKind
    events: tuple[EventType, ...]
    active: bool
    secret: str
    headers: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0
    # The secret before the last rotation, still signing until `previous_secret_until` (ms).
    previous_secret: str | None = None
    previous_secret_until: int | None = None
    # Since when every attempt failed (ms; None after a success), and when the endpoint
    # was paused for it (None: not paused).
    failing_since: int | None = None
    paused_at: int | None = None

    def wants(self, event_type: EventType) -> bool:
        """Whether this endpoint subscribed to `event_type`."""
        return event_type in self.events


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before it is fanned out to endpoints; `data` is JSON (see the builders)."""

    type: EventType
    project_id: str
    phone_number_id: str
    order_key: str
    occurred_at: int
    data: str


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """One event for one endpoint, leased to a notifier for one attempt."""

    seq: int
    id: str
    endpoint: WebhookEndpoint
    type: EventType
    order_key: str
    occurred_at: int
    data: str
    # Attempts made before this one.
    attempts: int
    created_at: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one attempt did, and what becomes of its delivery (written in one batch)."""

    delivery_seq: int
    endpoint_id: str
    owner: str
    at: int
    latency_ms: int
    status_code: int | None
    error: str | None
    # "delivered", "pending" (retry at `next_attempt_at`) or "dead".
    state: DeliveryState
    next_attempt_at: int | None = None
    # Whether the endpoint may be marked failing (it was when claimed, or a failure was
    # recorded since): a success of an endpoint that was not writes nothing to it.
    endpoint_failing: bool = True


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A delivery as the API lists it."""

    seq: int
    id: str
    endpoint_id: str
    type: EventType
    order_key: str
    state: DeliveryState
    attempts: int
    created_at: int
    next_attempt_at: int | None
    delivered_at: int | None
    last_status_code: int | None
    last_error: str | None
    data: str


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One attempt as the API lists it."""

    seq: int
    delivery_id: str
    endpoint_id: str
    at: int
    latency_ms: int
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What an event says of its message, read in the transaction that moves it."""

    message_id: str
    project_id: str
    phone_number_id: str
    waba_id: str
    recipient: str
    recipient_kind: str
    wamid: str | None
    request: str
    biz_opaque_callback_data: str | None
    created_at: int


def _template_of(request: str) -> Any:
    try:
        return json.loads(request).get("template")
    except (ValueError, AttributeError):
        return None


def meta_status_object(
    facts: MessageFacts,
    status: Status,
    at_ms: int,
    *,
    pricing: str | None = None,
    errors: str | None = None,
    error_code: int | None = None,
    error_title: str | None = None,
    error_details: str | None = None,
) -> dict[str, Any]:
    """The status as Meta's webhook carries it, under our message id's wamid (or our id)."""
    status_object: dict[str, Any] = {
        "id": facts.wamid or facts.message_id,
        "status": status,
        "timestamp": str(at_ms // 1000),
        "recipient_id": facts.recipient,
    }
    if facts.biz_opaque_callback_data is not None:
        status_object["biz_opaque_callback_data"] = facts.biz_opaque_callback_data
    if pricing:
        status_object["pricing"] = json.loads(pricing)
    if errors:
        status_object["errors"] = json.loads(errors)
    elif error_code is not None:
        status_object["errors"] = [
            {
                "code": error_code,
                "title": error_title or "",
                "message": error_title or "",
                "error_data": {"details": error_details or ""},
            }
        ]
    return status_object


def message_event(
    facts: MessageFacts,
    status: Status,
    at_ms: int,
    *,
    pricing: str | None = None,
    errors: str | None = None,
    error_code: int | None = None,
    error_title: str | None = None,
    error_details: str | None = None,
) -> EventDraft | None:
    """The event of a message moving to `status` (None for `pending`: nothing to tell).

    `data`: {"waba_id", "phone_number_id", "message": {id, wamid, recipient,
    recipient_kind, template, biz_opaque_callback_data, created_at, status},
    "status": Meta's status object}.
    """
    event_type = MESSAGE_EVENTS.get(status)
    if event_type is None:
        return None
    data = {
        "waba_id": facts.waba_id,
        "phone_number_id": facts.phone_number_id,
        "message": {
            "id": facts.message_id,
            "wamid": facts.wamid,
            "recipient": facts.recipient,
            "recipient_kind": facts.recipient_kind,
            "template": _template_of(facts.request),
            "biz_opaque_callback_data": facts.biz_opaque_callback_data,
            "created_at": facts.created_at,
            "status": status,
        },
        "status": meta_status_object(
            facts,
            status,
            at_ms,
            pricing=pricing,
            errors=errors,
            error_code=error_code,
            error_title=error_title,
            error_details=error_details,
        ),
    }
    return EventDraft(
        event_type,
        facts.project_id,
        facts.phone_number_id,
        facts.message_id,
        at_ms,
        json.dumps(data, separators=(",", ":")),
    )


def contact_event(
    project_id: str,
    phone_number_id: str,
    waba_id: str,
    recipient: str,
    value: Literal["stop", "resume"],
    at_ms: int,
    *,
    reason: str,
) -> EventDraft:
    """A recipient stopped (`stop`) or resumed marketing messages; `reason` says how we know
    ("user_preferences" or "131050").

    `data`: {"waba_id", "phone_number_id", "contact": {recipient, value, reason, timestamp}}.
    """
    data = {
        "waba_id": waba_id,
        "phone_number_id": phone_number_id,
        "contact": {
            "recipient": recipient,
            "value": value,
            "reason": reason,
            "timestamp": str(at_ms // 1000),
        },
    }
    event_type: EventType = (
        "whatsapp.contact.opted_out" if value == "stop" else "whatsapp.contact.opted_in"
    )
    return EventDraft(
        event_type,
        project_id,
        phone_number_id,
        f"contact:{recipient}",
        at_ms,
        json.dumps(data, separators=(",", ":")),
    )


def fan_out(
    drafts: Sequence[EventDraft], endpoints: Sequence[WebhookEndpoint]
) -> list[tuple[EventDraft, WebhookEndpoint]]:
    """Each draft paired with every endpoint of its number that wants it.

    An inactive endpoint gets nothing (it was switched off); a paused one still gets
    its deliveries, which wait for it to resume.
    """
    by_number: dict[str, list[WebhookEndpoint]] = {}
    for endpoint in endpoints:
        if endpoint.active:
            by_number.setdefault(endpoint.phone_number_id, []).append(endpoint)
    return [
        (draft, endpoint)
        for draft in drafts
        for endpoint in by_number.get(draft.phone_number_id, ())
        if endpoint.wants(draft.type)
    ]


def retry_delay(
    attempts: int, rng: random.Random, retry_after_s: float | None = None
) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones (None: dead-letter it).

    The schedule's delay with +-20% jitter; a `Retry-After` is honoured within 1-2x
    the scheduled delay (a receiver cannot make us wait 28 h, nor hurry us).
    """
    if attempts < 1 or attempts > len(RETRY_SCHEDULE_S):
        return None
    scheduled = RETRY_SCHEDULE_S[attempts - 1]
    if retry_after_s is not None and retry_after_s > 0:
        return min(max(retry_after_s, scheduled), 2 * scheduled)
    return scheduled * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
