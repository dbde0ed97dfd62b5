"""pywa, unmodified, drives the gateway: MM Lite sends, parameters, and typed errors.

pywa has no base-URL option; its HTTP session is pointed at the gateway after
construction (API-FACTS section 6). Every request pywa makes is recorded, so a
failure shows exactly what pywa sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pywa.client import WhatsApp
from pywa.errors import (
    AuthorizationError,
    ExpiredAccessToken,
    InvalidParameter,
    WhatsAppError,
)
from pywa.types.sent_update import SentTemplate, SentTemplateStatus
from pywa.types.templates import (
    BodyText,
    CopyCodeButton,
    HeaderText,
    Template,
    TemplateCategory,
    TemplateLanguage,
    URLButton,
)

from tests import loopback
from tests.support import GatewayProcess, Tenant

PHONE = "+44 7700 900123"
BSUID = "US.13491208655302741918"


class Recorder:
    """The requests pywa sent, as (method, URL, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    @property
    def last_body(self) -> dict[str, Any]:
        return dict(json.loads(self.requests[-1].content))


def pywa_client(
    gateway: GatewayProcess, phone_id: str, token: str
) -> tuple[WhatsApp, httpx.Client, Recorder]:
    """A pywa client whose HTTP session talks to the gateway, recording each request."""
    recorder = Recorder()
    session = httpx.Client(timeout=10, event_hooks={"request": [recorder]})
    wa = WhatsApp(phone_id=phone_id, token=token, session=session)
    # pywa set Meta's URL on the session in its constructor; redirect it.
    session.base_url = httpx.URL(f"{gateway.base_url}/meta/whatsapp/v24.0")
    return wa, session, recorder


@pytest.fixture
def pywa(gateway: GatewayProcess, tenant: Tenant) -> Iterator[tuple[WhatsApp, Recorder]]:
    """pywa with the tenant's number and API key."""
    wa, session, recorder = pywa_client(gateway, tenant.phone_number_id, tenant.api_key)
    with session:
        yield wa, recorder


def stored(gateway: GatewayProcess, tenant: Tenant, message_id: str) -> dict[str, Any]:
    """The message as the gateway reads it back."""
    response = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages/{message_id}",
        headers={"X-API-Key": tenant.api_key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def send_promo(wa: WhatsApp, to: str, name: str = "promo_template", **options: Any) -> SentTemplate:
    return wa.send_template(
        to=to,
        name=name,
        language=TemplateLanguage.ENGLISH_US,
        use_mm_lite_api=True,
        **options,
    )


# ---- sends -------------------------------------------------------------------------


def test_send_template_over_mm_lite_returns_a_wamid(
    gateway: GatewayProcess, tenant: Tenant, pywa: tuple[WhatsApp, Recorder]
) -> None:
    wa, recorder = pywa
    sent = send_promo(wa, PHONE)

    assert sent.id.startswith("wamid.")
    assert sent.status == SentTemplateStatus.ACCEPTED
    assert sent.input == PHONE
    request = recorder.requests[-1]
    assert request.method == "POST"
    assert request.url.host == "127.0.0.1"
    assert request.url.path == (f"/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages")
    assert request.headers["authorization"] == f"Bearer {tenant.api_key}"
    message = stored(gateway, tenant, sent.id)
    assert message["template"]["name"] == "promo_template"
    assert message["template"]["language"]["code"] == "en_US"
    assert message["to"] == "447700900123"


def test_a_template_object_sends_by_its_name_and_language(
    gateway: GatewayProcess, tenant: Tenant, pywa: tuple[WhatsApp, Recorder]
) -> None:
    wa, recorder = pywa
    template = Template(
        name="promo_template",
        category=TemplateCategory.MARKETING,
        language=TemplateLanguage.ENGLISH_US,
        components=[BodyText("Our winter sale is on")],
    )
    sent = wa.send_template(to=PHONE, template=template, use_mm_lite_api=True)
    assert sent.id.startswith("wamid.")
    assert recorder.last_body["template"] == {
        "name": "promo_template",
        "language": {"code": "en_US"},
    }
    assert stored(gateway, tenant, sent.id)["template"]["name"] == "promo_template"


def test_a_bsuid_goes_as_recipient(
    gateway: GatewayProcess, tenant: Tenant, pywa: tuple[WhatsApp, Recorder]
) -> None:
    wa, recorder = pywa
    sent = send_promo(wa, BSUID)
    assert sent.id.startswith("wamid.")
    assert recorder.last_body["recipient"] == BSUID
    assert "to" not in recorder.last_body
    assert stored(gateway, tenant, sent.id)["recipient"] == BSUID


def test_every_optional_field_pywa_sends_is_accepted(
    gateway: GatewayProcess, tenant: Tenant, pywa: tuple[WhatsApp, Recorder]
) -> None:
    wa, recorder = pywa
    sent = send_promo(
        wa,
        PHONE,
        tracker="campaign-7",
        message_activity_sharing=True,
        reply_to_message_id="wamid.EARLIER",
        identity_key_hash="abc123",
    )
    assert sent.id.startswith("wamid.")
    body = recorder.last_body
    assert body["biz_opaque_callback_data"] == "campaign-7"
    assert body["message_activity_sharing"] is True
    assert body["context"] == {"message_id": "wamid.EARLIER"}
    assert body["recipient_identity_key_hash"] == "abc123"
    assert stored(gateway, tenant, sent.id)["biz_opaque_callback_data"] == "campaign-7"


def test_parameters_as_plain_dicts_are_sent_and_stored(
    gateway: GatewayProcess, tenant: Tenant, pywa: tuple[WhatsApp, Recorder]
) -> None:
    wa, _ = pywa
    # The sandbox's image_promo: an IMAGE header and a body of one parameter.
    header = {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://cdn.example/a.jpg"}}],
    }
    body = {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}
    sent = send_promo(wa, PHONE, name="image_promo", params=[header, body])
    assert sent.id.startswith("wamid.")
    assert stored(gateway, tenant, sent.id)["template"]["components"] == [header, body]


def test_pywa_typed_parameters_are_accepted(
    gateway: GatewayProcess, tenant: Tenant, pywa: tuple[WhatsApp, Recorder]
) -> None:
    wa, recorder = pywa
    try:
        # The sandbox's seasonal_promo: `{{1}} sale`, three body parameters, a dynamic
        # URL button and a copy-code button.
        sent = send_promo(
            wa,
            PHONE,
            name="seasonal_promo",
            params=[
                HeaderText.params("Winter"),  # type: ignore[arg-type]  # pywa annotates it wrong
                BodyText.params("Ana", "25%", "Sunday"),  # type: ignore[arg-type]
                URLButton.params(url_variable="winter", index=0),
                CopyCodeButton.params(coupon_code="SAVE10", index=1),
            ],
        )
    except InvalidParameter as exc:
        pytest.fail(f"pywa sent {recorder.requests[-1].content.decode()} and got {exc!r}")
    assert sent.id.startswith("wamid.")
    components = stored(gateway, tenant, sent.id)["template"]["components"]
    assert {component["type"].lower() for component in components} == {
        "header",
        "body",
        "button",
    }


# ---- errors ------------------------------------------------------------------------


def test_a_bad_key_raises_pywas_token_error(gateway: GatewayProcess, tenant: Tenant) -> None:
    wa, session, _ = pywa_client(gateway, tenant.phone_number_id, "wg_not_a_key")
    with session, pytest.raises(ExpiredAccessToken) as caught:
        send_promo(wa, PHONE)
    error = caught.value
    assert isinstance(error, AuthorizationError)
    assert error.code == 190
    assert error.status_code == 401
    assert error.raw_response is not None
    assert error.fbtrace_id == error.raw_response.headers["x-fb-trace-id"]
    assert error.details


def test_an_invalid_value_raises_pywas_invalid_parameter(
    gateway: GatewayProcess, tenant: Tenant, pywa: tuple[WhatsApp, Recorder]
) -> None:
    wa, _ = pywa
    with pytest.raises(InvalidParameter) as caught:
        wa.send_template(
            to=PHONE,
            name="Not_A_Valid_Name",
            language=TemplateLanguage.ENGLISH_US,
            use_mm_lite_api=True,
        )
    assert caught.value.code == 131009
    assert caught.value.status_code == 400
    assert caught.value.details


def test_a_number_of_another_project_is_a_code_100_error(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    wa, session, _ = pywa_client(gateway, "999999999999999", tenant.api_key)
    with session, pytest.raises(WhatsAppError) as caught:
        send_promo(wa, PHONE)
    assert caught.value.code == 100
    assert caught.value.subcode == 33
    assert caught.value.status_code == 400
