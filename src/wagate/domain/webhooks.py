"""What Meta's webhooks carry (API-FACTS section 3): decoded leniently, as Meta adds fields."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import msgspec

from wagate.domain.meta_errors import MetaError


class Pricing(msgspec.Struct):
    """What the message cost: `marketing_lite` through the MM API."""

    billable: bool | None = None
    pricing_model: str | None = None
    type: str | None = None
    category: str | None = None


class StatusUpdate(msgspec.Struct):
    """One status of one message; `id` is Meta's wamid."""

    id: str
    status: str
    timestamp: str | int
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    biz_opaque_callback_data: str | None = None
    pricing: Pricing | None = None
    errors: list[MetaError] | None = None


class UserPreference(msgspec.Struct):
    """A user's stop or resume of marketing messages."""

    value: str
    wa_id: str | None = None
    user_id: str | None = None
    category: str | None = None
    timestamp: str | int | None = None
    detail: str | None = None


class UserAction(msgspec.Struct):
    """Something a user did with a message, such as a link click."""

    action_type: str
    timestamp: str | int | None = None
    marketing_messages_link_click_data: dict[str, Any] | None = None


class Metadata(msgspec.Struct):
    """Which business number the change is about."""

    phone_number_id: str | None = None
    display_phone_number: str | None = None


class Contact(msgspec.Struct):
    """Who the change is about."""

    wa_id: str | None = None
    user_id: str | None = None


class ChangeValue(msgspec.Struct):
    """The body of one change."""

    messaging_product: str | None = None
    metadata: Metadata | None = None
    statuses: list[StatusUpdate] = []
    user_preferences: list[UserPreference] = []
    user_actions: list[UserAction] = []
    contacts: list[Contact] = []
    # The template fields (`message_template_status_update`, `template_category_update`,
    # `message_template_quality_update`).
    event: str | None = None
    message_template_id: int | str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None
    reason: str | None = None
    new_category: str | None = None
    new_quality_score: str | None = None


class Change(msgspec.Struct):
    """One change: `field` says which kind."""

    field: str
    value: ChangeValue


class Entry(msgspec.Struct):
    """The changes of one WhatsApp Business Account (`id`)."""

    id: str
    changes: list[Change] = []


class WebhookPayload(msgspec.Struct):
    """A whole webhook POST."""

    object: str
    entry: list[Entry] = []


_decoder = msgspec.json.Decoder(WebhookPayload)


def decode_payload(body: bytes) -> WebhookPayload:
    """Decode a webhook body; raises ValueError with msgspec's reason when it does not fit."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def signature_of(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` value for a body: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


_SIGNATURE = re.compile(r"sha256=[0-9a-fA-F]{64}")


def signature_is_well_formed(header: str | None) -> bool:
    """Whether `X-Hub-Signature-256` has the shape `sha256=` + 64 hex digits (ASCII only)."""
    return header is not None and _SIGNATURE.fullmatch(header.strip()) is not None


def signature_matches(body: bytes, header: str | None, secret: str) -> bool:
    """Whether `X-Hub-Signature-256` is the body's HMAC under the app secret (constant time)."""
    if not secret or not signature_is_well_formed(header):
        return False
    assert header is not None
    return hmac.compare_digest(signature_of(body, secret), header.strip().lower())


def timestamp_ms(value: str | int | None, default_ms: int) -> int:
    """A webhook timestamp (Unix seconds, string or number) in milliseconds."""
    if value is None:
        return default_ms
    try:
        return int(float(value) * 1000)
    except (ValueError, OverflowError):  # not a number, NaN, or infinite
        return default_ms
