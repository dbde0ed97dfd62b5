"""The three wire formats of a customer webhook, each signed as its receivers expect.

- `kapso`: Kapso's payload v2 (API-FACTS section 7), so a Kapso receiver works unchanged.
  Message events: `{"phone_number_id", "message": {id, timestamp, type: "template",
  template, biz_opaque_callback_data?, to? | recipient?, kapso: {direction, status,
  processing_status, origin, statuses: [Meta's status object]}}}`; `to` / `recipient`
  are extras (Kapso's receivers must not rely on them). Contact events (ours):
  `{"phone_number_id", "event", "contact": {recipient, wa_id | user_id, value: stop|resume,
  reason, timestamp}}`. Signed `X-Webhook-Signature: <hex HMAC-SHA256 of the body>`.
- `meta`: Meta's own webhook, so a receiver written for Meta (pywa) works unchanged:
  statuses under the `messages` field with OUR message id as the status `id`, opt-outs
  under `user_preferences`. Signed `X-Hub-Signature-256: sha256=<hex>`.
- `standard`: Standard Webhooks v1, `{"type", "timestamp", "data": <the event's data>}`,
  signed by the `standardwebhooks` library; during a rotation with both secrets.

Every kind carries `X-Idempotency-Key: <delivery id>`, the same on every retry. The
endpoint's custom headers are added but never replace ours.

The test event's data (`webhook_test_data`): `{"waba_id", "phone_number_id", "test": true,
"message"}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from standardwebhooks import Webhook

from wagate.domain.notifications import (
    TEST_EVENT,
    ClaimedDelivery,
    EndpointKind,
    WebhookEndpoint,
)

JSON: Final = "application/json"
PAYLOAD_VERSION: Final = "v2"
STANDARD_PREFIX: Final = "whsec_"
TEST_MESSAGE: Final = "This is a test webhook from wagate."
# Headers a custom header can never set, whatever the endpoint's kind: they frame the
# request (a wrong Host or Content-Length breaks it), or they are how some receiver
# authenticates and de-duplicates it (a forged one must not ride along after a kind change).
_RESERVED: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "content-type",
        "x-idempotency-key",
        "x-webhook-event",
        "x-webhook-signature",
        "x-webhook-payload-version",
        "x-hub-signature-256",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_PREFERENCE_DETAIL: Final = {
    "stop": "User requested to stop marketing messages",
    "resume": "User requested to resume marketing messages",
}

_encode = msgspec.json.encode


def render(delivery: ClaimedDelivery, now_s: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt of `delivery`, in its endpoint's format."""
    data = msgspec.json.decode(delivery.data)
    kind = delivery.endpoint.kind
    if kind == "kapso":
        body = _encode(_kapso_payload(delivery, data))
        headers = _kapso_headers(delivery, body)
    elif kind == "meta":
        body = _encode(_meta_payload(delivery, data))
        headers = {
            "Content-Type": JSON,
            "X-Hub-Signature-256": "sha256=" + _hex_hmac(delivery.endpoint.secret, body),
        }
    else:
        body = _encode(_standard_payload(delivery, data))
        headers = _standard_headers(delivery, body, now_s)
    headers["X-Idempotency-Key"] = delivery.id
    return body, with_custom_headers(headers, delivery.endpoint.headers)


def with_custom_headers(ours: Mapping[str, str], custom: Mapping[str, str]) -> dict[str, str]:
    """`ours` plus each custom header whose name (any case) is neither ours nor reserved."""
    taken = {name.lower() for name in ours} | _RESERVED
    merged = dict(ours)
    for name, value in custom.items():
        if name.lower() not in taken:
            merged[name] = value
    return merged


def webhook_test_data(waba_id: str, phone_number_id: str, message: str = TEST_MESSAGE) -> str:
    """The `data` of a `whatsapp.webhook.test` delivery."""
    return _encode(
        {"waba_id": waba_id, "phone_number_id": phone_number_id, "test": True, "message": message}
    ).decode()


def new_secret(kind: EndpointKind) -> str:
    """A fresh signing secret: `whsec_` + base64 of 24 bytes (standard), else 64 hex digits."""
    if kind == "standard":
        return STANDARD_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()
    return secrets.token_hex(32)


def mask_secret(secret: str) -> str:
    """A secret as it may be shown: its prefix and at most its last 4 characters."""
    prefix = STANDARD_PREFIX if secret.startswith(STANDARD_PREFIX) else ""
    rest = secret[len(prefix) :]
    # A short secret would be given away by its last 4 characters.
    tail = rest[-4:] if len(rest) >= 16 else ""
    return f"{prefix}…{tail}"


def _hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _is_test(delivery: ClaimedDelivery) -> bool:
    return delivery.type == TEST_EVENT


def _contact_ids(recipient: str, kind: str | None = None) -> dict[str, str]:
    # Phones are stored as E.164 digits; anything else is a BSUID (e.g. "US.1349...").
    if kind == "phone" or (kind is None and recipient.isdigit()):
        return {"wa_id": recipient}
    return {"user_id": recipient}


# --- kapso ---------------------------------------------------------------------------


def _kapso_payload(delivery: ClaimedDelivery, data: dict[str, Any]) -> dict[str, Any]:
    phone_number_id = data["phone_number_id"]
    if _is_test(delivery):
        return {
            "phone_number_id": phone_number_id,
            "event": delivery.type,
            "test": True,
            "message": data.get("message", TEST_MESSAGE),
        }
    if "contact" in data:
        contact = data["contact"]
        return {
            "phone_number_id": phone_number_id,
            "event": delivery.type,
            "contact": {**_contact_ids(contact["recipient"]), **contact},
        }
    return {"phone_number_id": phone_number_id, "message": _kapso_message(data)}


def _kapso_message(data: dict[str, Any]) -> dict[str, Any]:
    message, status = data["message"], data["status"]
    kapso_message: dict[str, Any] = {
        "id": message["id"],
        "timestamp": status["timestamp"],
        "type": "template",
        "template": message.get("template"),
    }
    if message.get("biz_opaque_callback_data") is not None:
        kapso_message["biz_opaque_callback_data"] = message["biz_opaque_callback_data"]
    # Extras: Kapso's receivers must not assume either is present (BSUID sends).
    extra = "to" if message.get("recipient_kind") == "phone" else "recipient"
    kapso_message[extra] = message["recipient"]
    kapso_message["kapso"] = {
        "direction": "outbound",
        "status": status["status"],
        "processing_status": status["status"],
        "origin": "api",
        "statuses": [status],
    }
    return kapso_message


def _kapso_headers(delivery: ClaimedDelivery, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": JSON,
        "X-Webhook-Event": delivery.type,
        "X-Webhook-Signature": _hex_hmac(delivery.endpoint.secret, body),
        "X-Webhook-Payload-Version": PAYLOAD_VERSION,
    }


# --- meta ----------------------------------------------------------------------------


def _meta_payload(delivery: ClaimedDelivery, data: dict[str, Any]) -> dict[str, Any]:
    phone_number_id = data["phone_number_id"]
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        # We do not know the display number; Meta's receivers key on phone_number_id.
        "metadata": {"display_phone_number": phone_number_id, "phone_number_id": phone_number_id},
    }
    field = "messages"
    if _is_test(delivery):
        # No statuses and no messages: a Meta receiver checks the signature, finds nothing
        # to handle and answers 200, without acting on a made-up message.
        value.update(test=True, message=data.get("message", TEST_MESSAGE))
    elif "contact" in data:
        field = "user_preferences"
        value.update(_meta_preference(data["contact"]))
    else:
        value.update(_meta_status(data["message"], data["status"]))
    change = {"field": field, "value": value}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": data.get("waba_id") or phone_number_id, "changes": [change]}],
    }


def _meta_status(message: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    contact = _contact_ids(message["recipient"], message.get("recipient_kind"))
    # The receiver knows the message by the id our API answered, not by Meta's wamid.
    meta_status = {**status, "id": message["id"]}
    if "user_id" in contact:
        # Meta's shape for a BSUID send: no phone, the BSUID beside it.
        meta_status.update(recipient_id="", recipient_user_id=message["recipient"])
    return {"contacts": [contact], "statuses": [meta_status]}


def _meta_preference(contact: dict[str, Any]) -> dict[str, Any]:
    ids = _contact_ids(contact["recipient"])
    value = contact["value"]
    # Meta now puts a BSUID in every contact and pywa's user_preferences parser requires
    # it; the BSUID of a phone recipient is not known here, so it is empty, as Meta
    # leaves `recipient_id` empty when it does not know the phone.
    return {
        "contacts": [{"user_id": "", **ids}],
        "user_preferences": [
            {
                **ids,
                "detail": _PREFERENCE_DETAIL.get(value, value),
                "category": "marketing_messages",
                "value": value,
                # Meta sends this one as a number, unlike the strings of statuses.
                "timestamp": int(contact["timestamp"]),
            }
        ],
    }


# --- standard ------------------------------------------------------------------------


def _standard_payload(delivery: ClaimedDelivery, data: dict[str, Any]) -> dict[str, Any]:
    occurred = datetime.fromtimestamp(delivery.occurred_at / 1000, tz=UTC)
    return {
        "type": delivery.type,
        "timestamp": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }


def _standard_headers(delivery: ClaimedDelivery, body: bytes, now_s: float) -> dict[str, str]:
    # A fresh timestamp every attempt: verifiers refuse one older than 5 minutes.
    timestamp = int(now_s)
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    signatures = [
        Webhook(secret).sign(delivery.id, signed_at, body)
        for secret in _signing_secrets(delivery.endpoint, now_s)
    ]
    return {
        "Content-Type": JSON,
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def _signing_secrets(endpoint: WebhookEndpoint, now_s: float) -> list[str]:
    """The current secret, then the previous one while its grace lasts."""
    found = [endpoint.secret]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and now_s * 1000 < until:
        found.append(endpoint.previous_secret)
    return found
