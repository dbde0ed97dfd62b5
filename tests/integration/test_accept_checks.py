"""Sends checked at accept, over real HTTP, against the embedded sandbox's seeded templates
and its recipient scenarios: Meta's code at once, nothing stored (issue 10)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.conftest import BACKENDS
from tests.integration.test_forwarded_recipient import FakeMeta
from tests.support import (
    ADMIN_TOKEN,
    GatewayProcess,
    Tenant,
    database_url_for,
    dispose_database,
    make_tenant,
    run_cli,
    wait_until,
)
from wagate.adapters.sandbox.templates import seed_templates

APP_SECRET = "template-checks-app-secret"


@pytest.fixture(scope="module", params=BACKENDS)
def checked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway that takes Meta-signed webhooks, approves created templates after 1 s and
    lists a WABA again on a miss after 1 s."""
    tmp = tmp_path_factory.mktemp(f"templates-{request.param}")
    url = database_url_for(request.param, tmp)
    process = GatewayProcess(
        url,
        tmp / "gateway.log",
        WAGATE_META_APP_SECRET=APP_SECRET,
        WAGATE_SANDBOX_APPROVAL_DELAY="1",
        WAGATE_TEMPLATE_MISS_SECONDS="1",
    ).start()
    yield process
    process.stop()
    dispose_database(url)


@pytest.fixture
def tenant(checked: GatewayProcess) -> Tenant:
    """A project with a sandbox number (and its own WABA) on the module's gateway."""
    return make_tenant(checked.database_url)


def headers(tenant: Tenant) -> dict[str, str]:
    return {"X-API-Key": tenant.api_key, "Content-Type": "application/json"}


def waba_of(gateway: GatewayProcess, tenant: Tenant) -> str:
    answer = loopback.get(
        f"{gateway.base_url}/platform/v1/whatsapp/phone_numbers/{tenant.phone_number_id}",
        headers=headers(tenant),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["waba_id"])


def send(
    gateway: GatewayProcess,
    tenant: Tenant,
    name: str,
    components: list[Any] | None = None,
    to: str = "+447700900123",
) -> httpx.Response:
    template: dict[str, Any] = {"name": name, "language": {"code": "en_US"}}
    if components is not None:
        template["components"] = components
    payload = {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": template,
    }
    return loopback.post(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages",
        json=payload,
        headers=headers(tenant),
        timeout=15,
    )


def refused(response: httpx.Response, code: int, status: int) -> str:
    """Assert Meta's envelope with this code and HTTP status; the details."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"].startswith(f"(#{code}) ")
    return str(error["error_data"]["details"])


def stored(gateway: GatewayProcess, tenant: Tenant) -> int:
    answer = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages",
        headers=headers(tenant),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return len(answer.json()["data"])


def body(value: dict[str, Any], waba: str, field: str) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": waba, "time": int(time.time()), "changes": [{"field": field, "value": value}]}
        ],
    }


def meta_webhook(gateway: GatewayProcess, payload: dict[str, Any]) -> None:
    raw = json.dumps(payload).encode()
    digest = hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    answer = loopback.post(
        f"{gateway.base_url}/webhooks/meta",
        content=raw,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def template_id(gateway: GatewayProcess, tenant: Tenant, waba: str, name: str) -> str:
    answer = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{waba}/message_templates",
        params={"name": name},
        headers=headers(tenant),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    [found] = answer.json()["data"]
    return str(found["id"])


# ---- refusals at accept ---------------------------------------------------------------


def test_an_unknown_template_is_refused_at_once_with_404_132001_and_nothing_is_stored(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    details = refused(send(checked, tenant, "no_such_template"), 132001, 404)
    assert "no_such_template" in details
    assert stored(checked, tenant) == 0
    # The seeded template of the same WABA goes through: the check is not a blanket refusal.
    assert send(checked, tenant, "promo_template").status_code == 200
    assert stored(checked, tenant) == 1


@pytest.mark.parametrize(
    ("name", "code", "status"),
    [
        ("paused_promo", 132015, 400),
        ("draft_promo", 132001, 404),
        ("order_update", 134100, 400),
    ],
)
def test_a_template_that_may_not_be_sent_gets_metas_code(
    checked: GatewayProcess, tenant: Tenant, name: str, code: int, status: int
) -> None:
    components = None
    if name == "order_update":
        components = [{"type": "body", "parameters": [{"type": "text", "text": "#1"}]}]
    details = refused(send(checked, tenant, name, components), code, status)
    assert name in details
    assert stored(checked, tenant) == 0


def test_a_wrong_parameter_count_is_refused_with_132000_saying_what_is_wrong(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    components = [
        {"type": "header", "parameters": [{"type": "text", "text": "Summer"}]},
        {
            "type": "body",
            "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "25%"}],
        },
    ]
    details = refused(send(checked, tenant, "seasonal_promo", components), 132000, 400)
    assert "body" in details
    assert "3" in details
    assert "2" in details


# ---- the template endpoints and keeping current ---------------------------------------


def test_the_template_list_shows_the_wabas_templates_with_filters_and_scoping(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    waba = waba_of(checked, tenant)
    url = f"{checked.base_url}/meta/whatsapp/v24.0/{waba}/message_templates"
    answer = loopback.get(url, headers=headers(tenant), timeout=10)
    assert answer.status_code == 200, answer.text
    names = {t["name"] for t in answer.json()["data"]}
    assert {"promo_template", "seasonal_promo", "paused_promo"} <= names
    paused = loopback.get(url, params={"status": "paused"}, headers=headers(tenant), timeout=10)
    assert [t["name"] for t in paused.json()["data"]] == ["paused_promo"]
    first = loopback.get(url, params={"limit": "2"}, headers=headers(tenant), timeout=10).json()
    assert len(first["data"]) == 2
    rest = loopback.get(
        url,
        params={"limit": "100", "after": first["paging"]["cursors"]["after"]},
        headers=headers(tenant),
        timeout=10,
    ).json()
    assert {t["name"] for t in first["data"]} | {t["name"] for t in rest["data"]} == names
    for bad in ("0", "1001", "²", "x"):  # "²" is a digit to str.isdigit, not to int()
        answer = loopback.get(url, params={"limit": bad}, headers=headers(tenant), timeout=10)
        assert "`limit` must be an integer from 1 to 1000" in refused(answer, 100, 400)
    other = make_tenant(checked.database_url)
    refused(loopback.get(url, headers=headers(other), timeout=10), 100, 400)


def test_a_template_created_through_the_gateway_sends_once_the_sandbox_approves_it(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    waba = waba_of(checked, tenant)
    creation = {
        "name": "spring_launch",
        "language": "en_US",
        "category": "MARKETING",
        "components": [{"type": "BODY", "text": "Spring is here: {{1}} off."}],
    }
    answer = loopback.post(
        f"{checked.base_url}/meta/whatsapp/v24.0/{waba}/message_templates",
        json=creation,
        headers=headers(tenant),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "PENDING"
    parameters = [{"type": "body", "parameters": [{"type": "text", "text": "20%"}]}]
    refused(send(checked, tenant, "spring_launch", parameters), 132001, 404)
    wait_until(
        lambda: send(checked, tenant, "spring_launch", parameters).status_code == 200,
        timeout=15,
    )
    deleted = loopback.delete(
        f"{checked.base_url}/meta/whatsapp/v24.0/{waba}/message_templates",
        params={"name": "spring_launch"},
        headers=headers(tenant),
        timeout=10,
    )
    assert deleted.status_code == 200, deleted.text
    refused(send(checked, tenant, "spring_launch", parameters), 132001, 404)


def test_a_template_paused_by_metas_webhook_is_refused_at_the_next_send(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    waba = waba_of(checked, tenant)
    assert send(checked, tenant, "promo_template").status_code == 200
    promo = template_id(checked, tenant, waba, "promo_template")
    value = {
        "event": "PAUSED",
        "message_template_id": int(promo),
        "message_template_name": "promo_template",
        "message_template_language": "en_US",
        "reason": None,
        "other_info": {"title": "FIRST_PAUSE", "description": "Low quality"},
    }
    meta_webhook(checked, body(value, waba, "message_template_status_update"))
    refused(send(checked, tenant, "promo_template"), 132015, 400)
    meta_webhook(
        checked,
        body(
            {**value, "event": "APPROVED", "other_info": {"title": "UNPAUSE"}},
            waba,
            "message_template_status_update",
        ),
    )
    assert send(checked, tenant, "promo_template").status_code == 200
    category = {
        "message_template_id": int(promo),
        "message_template_name": "promo_template",
        "message_template_language": "en_US",
        "previous_category": "MARKETING",
        "new_category": "UTILITY",
    }
    meta_webhook(checked, body(category, waba, "template_category_update"))
    refused(send(checked, tenant, "promo_template"), 134100, 400)


def test_a_pause_ingested_by_one_process_is_refused_by_another(
    checked: GatewayProcess, tenant: Tenant, tmp_path: Path
) -> None:
    """Two API processes on one database: the webhook reaches one, the send the other."""
    waba = waba_of(checked, tenant)
    other = GatewayProcess(checked.database_url, tmp_path / "other.log", WAGATE_WORKER="0").start()
    try:
        assert send(other, tenant, "promo_template").status_code == 200
        promo = template_id(checked, tenant, waba, "promo_template")
        value = {
            "event": "DISABLED",
            "message_template_id": int(promo),
            "message_template_name": "promo_template",
            "message_template_language": "en_US",
            "reason": "Quality",
        }
        meta_webhook(checked, body(value, waba, "message_template_status_update"))
        wait_until(lambda: send(other, tenant, "promo_template").status_code == 400, timeout=10)
        refused(send(other, tenant, "promo_template"), 132016, 400)
    finally:
        other.stop()


# ---- the recipient: opt-outs and Meta's per-user limit --------------------------------


def status_of(gateway: GatewayProcess, tenant: Tenant, message_id: str) -> str:
    answer = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages/{message_id}",
        headers=headers(tenant),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


def sent(gateway: GatewayProcess, tenant: Tenant, to: str) -> str:
    """Send promo_template to `to`; the message id."""
    answer = send(gateway, tenant, "promo_template", to=to)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["messages"][0]["id"])


def failed(gateway: GatewayProcess, tenant: Tenant, message_id: str) -> None:
    wait_until(lambda: status_of(gateway, tenant, message_id) == "failed", timeout=15)


def test_a_recipient_who_stopped_marketing_is_refused_at_once_until_they_resume(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    """The sandbox's `...9050` fails 131050 and sends Meta's user_preferences stop."""
    to = "+447700909050"
    failed(checked, tenant, sent(checked, tenant, to))
    details = refused(send(checked, tenant, "promo_template", to=to), 131050, 400)
    assert "447700909050" in details
    # Another recipient of the same number is not concerned.
    assert send(checked, tenant, "promo_template").status_code == 200
    waba = waba_of(checked, tenant)
    resume = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": tenant.phone_number_id},
        "user_preferences": [
            {
                "wa_id": "447700909050",
                "category": "marketing_messages",
                "value": "resume",
                "timestamp": int(time.time()) + 5,
            }
        ],
    }
    meta_webhook(checked, body(resume, waba, "messages"))
    assert send(checked, tenant, "promo_template", to=to).status_code == 200


def test_a_user_preferences_stop_alone_refuses_the_next_send(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    waba = waba_of(checked, tenant)
    stop = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": tenant.phone_number_id},
        "user_preferences": [
            {
                "wa_id": "447700900555",
                "category": "marketing_messages",
                "value": "stop",
                "timestamp": int(time.time()),
            }
        ],
    }
    meta_webhook(checked, body(stop, waba, "messages"))
    refused(send(checked, tenant, "promo_template", to="+447700900555"), 131050, 400)


def test_after_131049_a_project_that_refuses_gets_131049_at_once(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    """The sandbox's `...9049` fails 131049; `wagate projects update --on-131049 refuse`."""
    run_cli(
        "projects",
        "update",
        tenant.project_id,
        "--on-131049",
        "refuse",
        database_url=checked.database_url,
    )
    to = "+447700909049"
    failed(checked, tenant, sent(checked, tenant, to))
    # Meta's status may reach the gateway before the worker records the wamid: the
    # record applies it then, and the send checks read it at their next poll (1 s).
    wait_until(lambda: send(checked, tenant, "promo_template", to=to).status_code == 400)
    details = refused(send(checked, tenant, "promo_template", to=to), 131049, 400)
    assert "131049" in details
    assert send(checked, tenant, "promo_template").status_code == 200


def test_after_131049_a_project_that_holds_keeps_the_next_send_queued(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    """The default policy: the send is stored and waits (24 h; unit tests run the clock)."""
    to = "+447700919049"
    failed(checked, tenant, sent(checked, tenant, to))
    held = sent(checked, tenant, to)
    other = sent(checked, tenant, "+447700900124")
    wait_until(lambda: status_of(checked, tenant, other) in ("sent", "delivered", "read"))
    time.sleep(1)
    assert status_of(checked, tenant, held) == "pending"


def test_a_suppression_added_by_api_refuses_the_next_send_and_its_removal_lifts_it(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    url = (
        f"{checked.base_url}/platform/v1/whatsapp/phone_numbers/"
        f"{tenant.phone_number_id}/suppressions"
    )
    added = loopback.post(
        url, json={"suppression": {"recipient": "+44 7700 900777"}}, headers=headers(tenant)
    )
    assert added.status_code in (200, 201), added.text
    refused(send(checked, tenant, "promo_template", to="+447700900777"), 131050, 400)
    removed = loopback.delete(f"{url}/447700900777", headers=headers(tenant))
    assert removed.status_code == 200, removed.text
    assert send(checked, tenant, "promo_template", to="+447700900777").status_code == 200


def test_a_template_the_sandbox_pauses_is_refused_at_the_next_send_and_sends_once_unpaused(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    """The sandbox's operator route emits Meta's template webhook, ingested in process."""
    waba = waba_of(checked, tenant)
    assert send(checked, tenant, "image_promo", IMAGE_PROMO).status_code == 200

    def set_status(status: str) -> None:
        answer = loopback.post(
            f"{checked.base_url}/sandbox/_templates/{waba}",
            json={"name": "image_promo", "language": "en_US", "status": status},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text

    set_status("PAUSED")
    wait_until(lambda: send(checked, tenant, "image_promo", IMAGE_PROMO).status_code == 400)
    refused(send(checked, tenant, "image_promo", IMAGE_PROMO), 132015, 400)
    set_status("APPROVED")
    wait_until(lambda: send(checked, tenant, "image_promo", IMAGE_PROMO).status_code == 200)


IMAGE_PROMO = [
    {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://cdn.example/spring.jpg"}}],
    },
    {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]},
]


@pytest.mark.parametrize(
    ("name", "components", "code"),
    [
        # A video where the template's header is an image.
        (
            "image_promo",
            [
                {
                    "type": "header",
                    "parameters": [
                        {"type": "video", "video": {"link": "https://cdn.example/v.mp4"}}
                    ],
                },
                {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]},
            ],
            132012,
        ),
        # Positional parameters for a template of named ones.
        (
            "named_offer",
            [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "15%"},
                    ],
                }
            ],
            132012,
        ),
        # The body with its parameter filled in is over 1,024 characters.
        (
            "long_promo",
            [{"type": "body", "parameters": [{"type": "text", "text": "x" * 60}]}],
            132005,
        ),
        # One card for a carousel of two.
        (
            "carousel_promo",
            [
                {
                    "type": "carousel",
                    "cards": [
                        {
                            "card_index": 0,
                            "components": [
                                {
                                    "type": "header",
                                    "parameters": [
                                        {
                                            "type": "image",
                                            "image": {"link": "https://cdn.example/1.jpg"},
                                        }
                                    ],
                                },
                                {"type": "body", "parameters": [{"type": "text", "text": "A"}]},
                            ],
                        }
                    ],
                }
            ],
            132000,
        ),
        # A button index the template does not have.
        (
            "seasonal_promo",
            [
                {"type": "header", "parameters": [{"type": "text", "text": "Summer"}]},
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "25%"},
                        {"type": "text", "text": "Sunday"},
                    ],
                },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "5",
                    "parameters": [{"type": "text", "text": "summer"}],
                },
            ],
            131009,
        ),
        # The dynamic URL button (index 0) and the copy code (index 1) without parameters.
        (
            "seasonal_promo",
            [
                {"type": "header", "parameters": [{"type": "text", "text": "Summer"}]},
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "25%"},
                        {"type": "text", "text": "Sunday"},
                    ],
                },
            ],
            131008,
        ),
    ],
    ids=[
        "header-media-type",
        "named-vs-positional",
        "hydrated-length",
        "carousel-cards",
        "button",
        "button-parameter",
    ],
)
def test_each_parameter_check_answers_metas_code_through_http(
    checked: GatewayProcess, tenant: Tenant, name: str, components: list[Any], code: int
) -> None:
    details = refused(send(checked, tenant, name, components), code, 400)
    assert details
    assert stored(checked, tenant) == 0


def test_a_project_frequency_cap_refuses_the_send_over_it_with_its_own_code(
    checked: GatewayProcess, tenant: Tenant
) -> None:
    run_cli(
        "projects",
        "update",
        tenant.project_id,
        "--frequency-cap",
        "2",
        database_url=checked.database_url,
    )
    to = "+447700900321"
    assert send(checked, tenant, "promo_template", to=to).status_code == 200
    assert send(checked, tenant, "promo_template", to=to).status_code == 200
    details = refused(send(checked, tenant, "promo_template", to=to), 1_000_003, 400)
    assert "2 marketing message(s) in the last 24 h" in details
    # Another recipient has a day of their own; a refused send counts for nothing.
    assert send(checked, tenant, "promo_template", to="+447700900322").status_code == 200
    refused(send(checked, tenant, "no_such_template", to="+447700900323"), 132001, 404)
    assert send(checked, tenant, "promo_template", to="+447700900323").status_code == 200
    assert send(checked, tenant, "promo_template", to="+447700900323").status_code == 200


def test_a_send_waiting_on_metas_slow_first_listing_gets_134101_not_a_false_132001(
    tmp_path: Path,
) -> None:
    """A Meta number whose WABA's template list takes 7 s: the first sends get 134101
    (after 5 s), the later ones the real answer."""
    url = database_url_for("sqlite", tmp_path)
    tenant = make_tenant(url, upstream="meta", access_token="token")
    with FakeMeta() as meta:
        meta.templates = [t.to_json() for t in seed_templates()]
        meta.listing_delay_s = 7.0
        gateway = GatewayProcess(url, tmp_path / "gateway.log", WAGATE_META_BASE_URL=meta.base_url)
        gateway.start()
        try:
            started = time.monotonic()
            refused(send(gateway, tenant, "promo_template"), 134101, 400)
            assert time.monotonic() - started >= 4.5
            wait_until(lambda: send(gateway, tenant, "promo_template").status_code == 200)
            refused(send(gateway, tenant, "no_such_template"), 132001, 404)
        finally:
            gateway.stop()
            dispose_database(url)
