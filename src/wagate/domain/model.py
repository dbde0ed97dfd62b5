"""What the gateway stores: projects, keys, phone numbers and messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Upstream = Literal["sandbox", "meta"]
# Kapso's words for where a message is, in the order a message moves through them.
Status = Literal["pending", "sent", "delivered", "read", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "sent", "delivered", "read", "failed")
# Where a message is in our own delivery queue (the next step, not the customer's view):
# queued (waiting for its turn), sending (claimed by a worker under a lease),
# forwarded (Meta accepted it; statuses come by webhook), done (failed or expired).
DeliveryState = Literal["queued", "sending", "forwarded", "done"]


@dataclass(frozen=True, slots=True)
class Project:
    """A customer: owns API keys and phone numbers."""

    id: str
    name: str
    created_at: int
    # Requests per minute its API keys may make (HTTP 429, code 4, beyond); None: unlimited.
    rate_limit: int | None = None
    # After Meta's 131049 for a recipient: "hold" its sends for 24 h, or "refuse" them.
    marketing_limit: str = "hold"
    # Marketing messages per recipient per rolling 24 h; None: no cap.
    frequency_cap: int | None = None


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a live API key belongs to, with what the project may do: found with the key."""

    project_id: str
    rate_limit: int | None = None
    # The project's send policies (see `Project`).
    marketing_limit: str = "hold"
    frequency_cap: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A project API key; only its hash is stored, the key itself is shown once."""

    id: str
    project_id: str
    prefix: str
    label: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A WhatsApp business phone number and how to reach its upstream."""

    phone_number_id: str
    waba_id: str
    project_id: str
    upstream: Upstream
    access_token: str
    mps: int


@dataclass(frozen=True, slots=True)
class NewMessage:
    """An accepted message, as it is written to the store (and so the delivery queue)."""

    id: str
    project_id: str
    phone_number_id: str
    recipient_input: str
    recipient: str
    recipient_kind: Literal["phone", "bsuid"]
    request: str
    template_name: str
    template_language: str
    biz_opaque_callback_data: str | None
    created_at: int
    expires_at: int
    idempotency_key: str | None
    request_hash: str | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as read back from the store."""

    id: str
    seq: int
    project_id: str
    phone_number_id: str
    recipient_input: str
    recipient: str
    recipient_kind: Literal["phone", "bsuid"]
    request: str
    template_name: str
    template_language: str
    biz_opaque_callback_data: str | None
    status: Status
    created_at: int
    updated_at: int
    idempotency_key: str | None
    request_hash: str | None
    upstream_wamid: str | None
    error_code: int | None
    error_title: str | None
    error_details: str | None
    # The latest upstream error of a send (None once Meta accepted the message); `at` in ms.
    last_error_code: int | None = None
    last_error_title: str | None = None
    last_error_details: str | None = None
    last_error_at: int | None = None


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """A page of a phone number's messages, newest first; times in Unix milliseconds."""

    phone_number_id: str
    limit: int = 20
    status: Status | None = None
    # Meta's own wamid of the message (exact match).
    upstream_wamid: str | None = None
    since: int | None = None
    until: int | None = None
    # Keyset cursors over `seq`: `after` pages to older messages, `before` to newer ones.
    after_seq: int | None = None
    before_seq: int | None = None
