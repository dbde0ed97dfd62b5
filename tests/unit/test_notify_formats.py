"""Customer webhooks on the wire: what each kind's receivers see, and that their own
verifiers (hmac, standardwebhooks, pywa) accept it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pywa.client import WhatsApp
from pywa.handlers import MessageStatusHandler, UserMarketingPreferencesHandler
from pywa.types.message_status import MessageStatus
from pywa.types.user_preferences import UserMarketingPreferences
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from wagate.domain.model import Status
from wagate.domain.notifications import (
    TEST_EVENT,
    ClaimedDelivery,
    EndpointKind,
    EventDraft,
    MessageFacts,
    WebhookEndpoint,
    contact_event,
    message_event,
)
from wagate.domain.notify_formats import (
    mask_secret,
    new_secret,
    render,
    webhook_test_data,
    with_custom_headers,
)

PNID = "106540352242922"
WABA = "102290129340398"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEX_SECRET = "8f2c" * 16
AT_MS = 1_764_000_000_123
FACTS = MessageFacts(
    message_id="msg_01JF2Z",
    project_id="prj_1",
    phone_number_id=PNID,
    waba_id=WABA,
    recipient="447700900123",
    recipient_kind="phone",
    wamid="wamid.HBgLNDQ3NzAwOTAwMTIz",
    request=json.dumps({"template": {"name": "spring_sale", "language": {"code": "en_US"}}}),
    biz_opaque_callback_data="campaign-42",
    created_at=AT_MS - 5000,
)


def endpoint(kind: EndpointKind, **changes: Any) -> WebhookEndpoint:
    secret = STANDARD_SECRET if kind == "standard" else HEX_SECRET
    base = WebhookEndpoint(
        id="wh_1",
        project_id="prj_1",
        phone_number_id=PNID,
        url="https://hooks.example.com/wa",
        kind=kind,
        events=(),
        active=True,
        secret=secret,
    )
    return replace(base, **changes)


def delivery_of(draft: EventDraft, target: WebhookEndpoint) -> ClaimedDelivery:
    return ClaimedDelivery(
        seq=1,
        id="dlv_7Q",
        endpoint=target,
        type=draft.type,
        order_key=draft.order_key,
        occurred_at=draft.occurred_at,
        data=draft.data,
        attempts=0,
        created_at=draft.occurred_at,
    )


def status_delivery(
    kind: EndpointKind, status: Status = "delivered", facts: MessageFacts = FACTS, **changes: Any
) -> ClaimedDelivery:
    draft = message_event(facts, status, AT_MS)
    assert draft is not None
    return delivery_of(draft, endpoint(kind, **changes))


def opt_out_delivery(kind: EndpointKind, recipient: str = "447700900123") -> ClaimedDelivery:
    draft = contact_event("prj_1", PNID, WABA, recipient, "stop", AT_MS, reason="user_preferences")
    return delivery_of(draft, endpoint(kind))


def webhook_test_delivery(kind: EndpointKind) -> ClaimedDelivery:
    data = webhook_test_data(WABA, PNID)
    draft = EventDraft(TEST_EVENT, "prj_1", PNID, "test", AT_MS, data)
    return delivery_of(draft, endpoint(kind))


# --- kapso ---------------------------------------------------------------------------


def test_kapso_headers_name_the_event_and_sign_the_raw_body_in_plain_hex() -> None:
    body, headers = render(status_delivery("kapso"), time.time())
    expected = hmac.new(HEX_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == expected
    assert headers["X-Webhook-Event"] == "whatsapp.message.delivered"
    assert headers["X-Webhook-Payload-Version"] == "v2"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Idempotency-Key"] == "dlv_7Q"


def test_kapso_message_payload_is_v2_under_our_message_id() -> None:
    body, _ = render(status_delivery("kapso", "read"), time.time())
    payload = json.loads(body)
    assert payload["phone_number_id"] == PNID
    message = payload["message"]
    assert message["id"] == "msg_01JF2Z"
    assert message["timestamp"] == str(AT_MS // 1000)
    assert message["type"] == "template"
    assert message["template"]["name"] == "spring_sale"
    assert message["biz_opaque_callback_data"] == "campaign-42"
    assert message["to"] == "447700900123"
    kapso = message["kapso"]
    assert (kapso["direction"], kapso["status"], kapso["processing_status"]) == (
        "outbound",
        "read",
        "read",
    )
    assert kapso["origin"] == "api"
    # The raw Meta status object keeps Meta's wamid: it is what Meta sent.
    assert kapso["statuses"][0]["id"] == FACTS.wamid
    assert kapso["statuses"][0]["status"] == "read"


def test_kapso_bsuid_send_names_the_recipient_without_a_to() -> None:
    facts = replace(FACTS, recipient="US.13491208655302741918", recipient_kind="bsuid")
    body, _ = render(status_delivery("kapso", facts=facts), time.time())
    message = json.loads(body)["message"]
    assert "to" not in message
    assert message["recipient"] == "US.13491208655302741918"


def test_kapso_failed_status_carries_metas_errors() -> None:
    draft = message_event(FACTS, "failed", AT_MS, error_code=131050, error_title="Opted out")
    assert draft is not None
    body, headers = render(delivery_of(draft, endpoint("kapso")), time.time())
    status = json.loads(body)["message"]["kapso"]["statuses"][0]
    assert status["errors"][0]["code"] == 131050
    assert headers["X-Webhook-Event"] == "whatsapp.message.failed"


def test_kapso_opt_out_is_a_contact_event() -> None:
    body, headers = render(opt_out_delivery("kapso"), time.time())
    payload = json.loads(body)
    assert payload["event"] == headers["X-Webhook-Event"] == "whatsapp.contact.opted_out"
    assert payload["phone_number_id"] == PNID
    assert payload["contact"]["wa_id"] == "447700900123"
    assert payload["contact"]["value"] == "stop"
    assert payload["contact"]["reason"] == "user_preferences"


def test_the_idempotency_key_is_the_same_on_every_attempt() -> None:
    delivery = status_delivery("kapso")
    first = render(delivery, 1000.0)
    retry = render(replace(delivery, attempts=3), 1090.0)
    assert first == retry


# --- custom headers ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kapso", "meta", "standard"])
def test_custom_headers_are_sent_but_never_replace_ours(kind: EndpointKind) -> None:
    custom = {
        "X-Webhook-Source": "wagate",
        "x-webhook-signature": "forged",
        "X-HUB-SIGNATURE-256": "forged",
        "Webhook-Signature": "forged",
        "x-idempotency-key": "forged",
        "content-type": "text/plain",
        "Host": "internal.example",
        "Content-Length": "1",
    }
    delivery = status_delivery(kind, headers=custom)
    body, headers = render(delivery, time.time())
    assert headers["X-Webhook-Source"] == "wagate"
    assert "forged" not in headers.values()
    assert "text/plain" not in headers.values()
    assert all(name.lower() not in ("host", "content-length") for name in headers)
    lower_names = [name.lower() for name in headers]
    assert len(lower_names) == len(set(lower_names))
    assert render(replace(delivery, endpoint=endpoint(kind)), 1.0)[0] == body


def test_a_custom_header_is_added_under_its_own_spelling() -> None:
    merged = with_custom_headers({"Content-Type": "application/json"}, {"X-Tenant": "acme"})
    assert merged == {"Content-Type": "application/json", "X-Tenant": "acme"}


# --- standard ------------------------------------------------------------------------


def test_standard_verifies_with_the_reference_library() -> None:
    body, headers = render(status_delivery("standard"), time.time())
    payload = Webhook(STANDARD_SECRET).verify(body, headers)
    assert payload["type"] == "whatsapp.message.delivered"
    assert payload["timestamp"] == "2025-11-24T16:00:00.123Z"
    assert payload["data"]["message"]["id"] == "msg_01JF2Z"
    assert payload["data"]["status"]["status"] == "delivered"
    assert headers["webhook-id"] == headers["X-Idempotency-Key"] == "dlv_7Q"


def test_standard_timestamp_is_fresh_on_every_attempt() -> None:
    delivery = status_delivery("standard")
    _, first = render(delivery, 1_764_000_000.9)
    _, later = render(delivery, 1_764_000_040.2)
    assert (first["webhook-timestamp"], later["webhook-timestamp"]) == ("1764000000", "1764000040")
    assert first["webhook-signature"] != later["webhook-signature"]


def test_a_stale_timestamp_fails_verification() -> None:
    body, headers = render(status_delivery("standard"), time.time() - 600)
    with pytest.raises(WebhookVerificationError):
        Webhook(STANDARD_SECRET).verify(body, headers)


def test_the_published_test_vector_signs_as_documented() -> None:
    draft_time = datetime.fromtimestamp(1614265330, tz=UTC)
    signature = Webhook(STANDARD_SECRET).sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", draft_time, b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_render_signs_the_published_vector_the_same_way() -> None:
    # render's own body differs, so check its signature against the spec's formula.
    delivery = replace(status_delivery("standard"), id="msg_p5jXN8AQM9LWM0D4loKWxJek")
    body, headers = render(delivery, 1614265330.7)
    key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    signed = b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


def rotated(now_s: float, grace_left_s: float) -> tuple[bytes, dict[str, str], str, str]:
    old, new = STANDARD_SECRET, new_secret("standard")
    delivery = status_delivery(
        "standard",
        secret=new,
        previous_secret=old,
        previous_secret_until=int((now_s + grace_left_s) * 1000),
    )
    body, headers = render(delivery, now_s)
    return body, headers, old, new


def test_during_a_rotation_both_the_old_and_the_new_secret_verify() -> None:
    body, headers, old, new = rotated(time.time(), grace_left_s=3600)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers)["data"]["message"]["id"] == "msg_01JF2Z"
    assert Webhook(new).verify(body, headers)["data"]["message"]["id"] == "msg_01JF2Z"


def test_after_the_grace_only_the_new_secret_verifies() -> None:
    body, headers, old, new = rotated(time.time(), grace_left_s=-1)
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


def test_standard_opt_out_carries_the_contact_data() -> None:
    body, headers = render(opt_out_delivery("standard"), time.time())
    payload = Webhook(STANDARD_SECRET).verify(body, headers)
    assert payload["type"] == "whatsapp.contact.opted_out"
    assert payload["data"]["contact"]["recipient"] == "447700900123"


# --- meta, read by pywa --------------------------------------------------------------


class PywaReceiver:
    """An unmodified pywa client checking signatures as a receiver written for Meta would."""

    def __init__(self, secret: str) -> None:
        self.client = WhatsApp(phone_id=PNID, token="unused", app_secret=secret, verify_token="vt")
        self.statuses: list[MessageStatus[Any]] = []
        self.preferences: list[UserMarketingPreferences] = []
        self.client.add_handlers(
            MessageStatusHandler(lambda _, status: self.statuses.append(status)),
            UserMarketingPreferencesHandler(lambda _, pref: self.preferences.append(pref)),
        )

    def receive(self, body: bytes, headers: dict[str, str]) -> tuple[str, int]:
        refused = self.client.webhook_update_validator(body, headers["X-Hub-Signature-256"])
        return refused or self.client.webhook_update_handler(body)


def test_meta_status_is_parsed_by_pywa_under_our_message_id() -> None:
    receiver = PywaReceiver(HEX_SECRET)
    body, headers = render(status_delivery("meta", "read"), time.time())
    assert headers["X-Hub-Signature-256"].startswith("sha256=")
    assert receiver.receive(body, headers) == ("ok", 200)
    (status,) = receiver.statuses
    assert status.id == "msg_01JF2Z"
    assert status.tracker == "campaign-42"
    assert status.status == "read"
    assert status.waba_id == WABA
    assert status.metadata.phone_number_id == PNID
    assert status.from_user.wa_id == "447700900123"
    assert status.timestamp == datetime.fromtimestamp(AT_MS // 1000, tz=UTC)
    assert headers["X-Idempotency-Key"] == "dlv_7Q"


def test_meta_failed_status_gives_pywa_the_error() -> None:
    receiver = PywaReceiver(HEX_SECRET)
    draft = message_event(FACTS, "failed", AT_MS, error_code=131050, error_title="Opted out")
    assert draft is not None
    body, headers = render(delivery_of(draft, endpoint("meta")), time.time())
    assert receiver.receive(body, headers) == ("ok", 200)
    error = receiver.statuses[0].error
    assert error is not None
    assert error.code == 131050


def test_meta_bsuid_status_reaches_pywa_with_the_bsuid() -> None:
    receiver = PywaReceiver(HEX_SECRET)
    facts = replace(FACTS, recipient="US.13491208655302741918", recipient_kind="bsuid")
    body, headers = render(status_delivery("meta", facts=facts), time.time())
    assert receiver.receive(body, headers) == ("ok", 200)
    assert receiver.statuses[0].from_user.bsuid == "US.13491208655302741918"
    assert receiver.statuses[0].from_user.wa_id is None


def test_meta_signed_with_another_secret_is_refused_by_pywa() -> None:
    receiver = PywaReceiver("not-the-endpoint-secret")
    body, headers = render(status_delivery("meta"), time.time())
    assert receiver.receive(body, headers) == ("Forbidden", 403)
    assert receiver.statuses == []


def test_meta_opt_out_is_a_user_preferences_change_pywa_understands() -> None:
    receiver = PywaReceiver(HEX_SECRET)
    body, headers = render(opt_out_delivery("meta"), time.time())
    assert receiver.receive(body, headers) == ("ok", 200)
    (preference,) = receiver.preferences
    assert preference.value == "stop"
    assert preference.category == "marketing_messages"
    assert preference.from_user.wa_id == "447700900123"
    assert json.loads(body)["entry"][0]["changes"][0]["field"] == "user_preferences"


def test_meta_opt_out_of_a_bsuid_recipient_names_the_bsuid() -> None:
    receiver = PywaReceiver(HEX_SECRET)
    body, headers = render(opt_out_delivery("meta", "US.13491208655302741918"), time.time())
    assert receiver.receive(body, headers) == ("ok", 200)
    assert receiver.preferences[0].from_user.bsuid == "US.13491208655302741918"


# --- the test event ------------------------------------------------------------------


def test_the_test_event_renders_in_kapso() -> None:
    body, headers = render(webhook_test_delivery("kapso"), time.time())
    payload = json.loads(body)
    assert headers["X-Webhook-Event"] == payload["event"] == "whatsapp.webhook.test"
    assert payload["test"] is True
    assert payload["phone_number_id"] == PNID


def test_the_test_event_passes_a_pywa_receiver_without_a_made_up_message() -> None:
    receiver = PywaReceiver(HEX_SECRET)
    body, headers = render(webhook_test_delivery("meta"), time.time())
    assert receiver.receive(body, headers) == ("ok", 200)
    assert receiver.statuses == []
    assert json.loads(body)["entry"][0]["id"] == WABA


def test_the_test_event_verifies_as_standard() -> None:
    body, headers = render(webhook_test_delivery("standard"), time.time())
    payload = Webhook(STANDARD_SECRET).verify(body, headers)
    assert payload["type"] == "whatsapp.webhook.test"
    assert payload["data"] == {
        "waba_id": WABA,
        "phone_number_id": PNID,
        "test": True,
        "message": "This is a test webhook from wagate.",
    }


# --- secrets -------------------------------------------------------------------------


def test_a_new_standard_secret_is_24_random_bytes_the_library_accepts() -> None:
    secret = new_secret("standard")
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert Webhook(secret).sign("id", datetime.now(tz=UTC), b"{}").startswith("v1,")
    assert new_secret("standard") != secret


@pytest.mark.parametrize("kind", ["kapso", "meta"])
def test_a_new_hmac_secret_is_64_hex_digits(kind: EndpointKind) -> None:
    secret = new_secret(kind)
    assert len(secret) == 64
    assert int(secret, 16) >= 0
    assert new_secret(kind) != secret


def test_a_masked_secret_shows_at_most_its_last_four_characters() -> None:
    assert mask_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == "whsec_…LaSw"
    assert mask_secret(HEX_SECRET) == "…8f2c"
    assert mask_secret("short") == "…"
    assert "9r8G" not in mask_secret(STANDARD_SECRET)
