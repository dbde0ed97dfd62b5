"""The send endpoint over real HTTP, against a real gateway on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.support import GatewayProcess, Tenant, make_tenant, wait_until
from tests.unit.test_body_rules import BAD_BODIES, SEED, template
from tests.unit.test_body_rules import body as body
from tests.unit.test_validation import ENUM_VIOLATIONS

# One seed body and one way to change it, shared with the unit tests of the body rules.
SEED_BODY = SEED


def url(gateway: GatewayProcess, tenant: Tenant, version: str = "v24.0") -> str:
    """The send URL of a tenant's number."""
    return f"{gateway.base_url}/meta/whatsapp/{version}/{tenant.phone_number_id}/marketing_messages"


def send(
    gateway: GatewayProcess,
    tenant: Tenant,
    payload: Any = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a body with the tenant's key."""
    all_headers = {"X-API-Key": tenant.api_key, "Content-Type": "application/json"}
    all_headers.update(headers or {})
    data = content if content is not None else json.dumps(payload).encode()
    return loopback.post(url(gateway, tenant), content=data, headers=all_headers, timeout=10)


def graph_error(response: httpx.Response, code: int, status: int) -> dict[str, Any]:
    """Assert Meta's envelope with this code and HTTP status; return `error`."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"].startswith(f"(#{code}) ")
    assert error["type"]
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["error_data"]["details"]
    assert error["fbtrace_id"] == response.headers["x-fb-trace-id"]
    return dict(error)


# ---- success shapes ----------------------------------------------------------------


def test_the_seed_example_is_accepted_with_kapsos_response(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    response = send(gateway, tenant, SEED_BODY)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["messaging_product"] == "whatsapp"
    assert answer["contacts"] == [
        {"input": "US.13491208655302741918", "user_id": "US.13491208655302741918"}
    ]
    [message] = answer["messages"]
    assert message["id"].startswith("wamid.")
    assert message["message_status"] == "accepted"


@pytest.mark.parametrize(
    ("typed", "wa_id"),
    [
        ("+44 7700 900123", "447700900123"),
        ("447700900123", "447700900123"),
        ("+1 (555) 123-4567", "15551234567"),
        ("1-555-123-4567", "15551234567"),
        ("15551234567", "15551234567"),
        ("0044 7700 900123", "447700900123"),
    ],
)
def test_phone_numbers_are_accepted_as_people_type_them(
    gateway: GatewayProcess, tenant: Tenant, typed: str, wa_id: str
) -> None:
    response = send(gateway, tenant, body(recipient=None, to=typed))
    assert response.status_code == 200, response.text
    assert response.json()["contacts"] == [{"input": typed, "wa_id": wa_id}]


def test_to_wins_over_recipient(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = send(gateway, tenant, body(to="+44 7700 900123"))
    assert response.status_code == 200
    assert response.json()["contacts"] == [{"input": "+44 7700 900123", "wa_id": "447700900123"}]


def test_parent_bsuid_is_accepted(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = send(gateway, tenant, body(recipient="US.ENT.11815799212886844830"))
    assert response.status_code == 200
    assert response.json()["contacts"][0]["user_id"] == "US.ENT.11815799212886844830"


def test_optional_meta_and_cloud_api_fields_are_accepted(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    response = send(
        gateway,
        tenant,
        body(
            biz_opaque_callback_data="x" * 512,
            product_policy="STRICT",
            message_activity_sharing=True,
            context={"message_id": "wamid.ABC"},
            recipient_identity_key_hash="abc123",
        ),
    )
    assert response.status_code == 200, response.text


def test_recipient_type_may_be_left_out(gateway: GatewayProcess, tenant: Tenant) -> None:
    assert send(gateway, tenant, body(recipient_type=None)).status_code == 200


EVERY_COMPONENT = template(
    {"type": "header", "parameters": [{"type": "text", "text": "Winter"}]},
    {
        "type": "body",
        "parameters": [
            {"type": "text", "text": "Ana"},
            {
                "type": "currency",
                "currency": {"fallback_value": "$10", "code": "USD", "amount_1000": 10000},
            },
            {"type": "date_time", "date_time": {"fallback_value": "December 1"}},
        ],
    },
    {
        "type": "button",
        "sub_type": "url",
        "index": 0,
        "parameters": [{"type": "text", "text": "w"}],
    },
    {
        "type": "button",
        "sub_type": "copy_code",
        "index": "1",
        "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}],
    },
    {
        "type": "button",
        "sub_type": "quick_reply",
        "index": 2,
        "parameters": [{"type": "payload", "payload": "STOP"}],
    },
    {
        "type": "button",
        "sub_type": "catalog",
        "index": 3,
        "parameters": [{"type": "action", "action": {"thumbnail_product_retailer_id": "sku1"}}],
    },
    {
        "type": "button",
        "sub_type": "mpm",
        "index": 4,
        "parameters": [
            {
                "type": "action",
                "action": {
                    "thumbnail_product_retailer_id": "sku1",
                    "sections": [{"title": "Top", "product_items": [{"product_retailer_id": "a"}]}],
                },
            }
        ],
    },
    {
        "type": "button",
        "sub_type": "flow",
        "index": 5,
        "parameters": [
            {"type": "action", "action": {"flow_token": "t", "flow_action_data": {"k": 1}}}
        ],
    },
    {
        "type": "limited_time_offer",
        "parameters": [
            {"type": "limited_time_offer", "limited_time_offer": {"expiration_time_ms": 1}}
        ],
    },
)

MEDIA_HEADERS = [
    {"type": "image", "image": {"link": "https://example.com/a.jpg"}},
    {"type": "video", "video": {"id": "1234"}},
    {"type": "document", "document": {"link": "https://example.com/a.pdf", "filename": "a.pdf"}},
    {
        "type": "location",
        "location": {"latitude": 51.5, "longitude": "-0.1", "name": "Shop", "address": "1 Road"},
    },
    {"type": "product", "product": {"product_retailer_id": "sku", "catalog_id": "c1"}},
]


def test_every_component_and_parameter_type_is_accepted(
    unchecked_gateway: GatewayProcess,
) -> None:
    """The body's rules take every component at once (no one template has them all: the
    template checks are off for this one)."""
    tenant = make_tenant(unchecked_gateway.database_url)
    response = send(unchecked_gateway, tenant, body(template=EVERY_COMPONENT))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("header", MEDIA_HEADERS, ids=lambda h: h["type"])
def test_every_header_parameter_type_is_accepted(
    unchecked_gateway: GatewayProcess, header: dict[str, Any]
) -> None:
    """The body's rules take every header type (promo_template has no header: the
    template checks would refuse it, so this runs with them off)."""
    tenant = make_tenant(unchecked_gateway.database_url)
    payload = body(template=template({"type": "header", "parameters": [header]}))
    assert send(unchecked_gateway, tenant, payload).status_code == 200


def test_carousel_and_named_parameters_are_accepted(unchecked_gateway: GatewayProcess) -> None:
    gateway, tenant = unchecked_gateway, make_tenant(unchecked_gateway.database_url)
    carousel = template(
        {"type": "body", "parameters": [{"type": "text", "text": "Ana", "parameter_name": "n"}]},
        {
            "type": "carousel",
            "cards": [
                {
                    "card_index": 0,
                    "components": [
                        {"type": "header", "parameters": [MEDIA_HEADERS[0]]},
                        {
                            "type": "button",
                            "sub_type": "quick_reply",
                            "index": 0,
                            "parameters": [{"type": "payload", "payload": "p"}],
                        },
                    ],
                }
            ],
        },
    )
    response = send(gateway, tenant, body(template=carousel))
    assert response.status_code == 200, response.text


# ---- field rules -------------------------------------------------------------------

# Every rule is a unit test (tests/unit/test_body_rules.py); a few per code run here,
# over real HTTP on both backends, to show the door answers what the rules decide.
OVER_HTTP = {
    "messaging_product wrong",
    "unknown top-level field",
    "two bodies",
    "no recipient at all",
    "template missing",
    "button without sub_type",
    "to not a phone",
    "bsuid without dot",
    "header text over 60",
}
REPRESENTATIVE = [case for case in BAD_BODIES if case[0] in OVER_HTTP]
assert len(REPRESENTATIVE) == len(OVER_HTTP), "a case named above is gone from the unit tests"


@pytest.mark.parametrize(
    ("payload", "code"),
    [(b, c) for _, b, c in REPRESENTATIVE],
    ids=[n for n, _, _ in REPRESENTATIVE],
)
def test_a_broken_field_rule_is_refused_with_metas_code(
    gateway: GatewayProcess, tenant: Tenant, payload: dict[str, Any], code: int
) -> None:
    graph_error(send(gateway, tenant, payload), code, 400)


# A representative pair over HTTP; every case is a unit test (tests/unit/test_validation.py).
@pytest.mark.parametrize(("changes", "message"), ENUM_VIOLATIONS[:2])
def test_a_value_outside_an_enum_answers_like_graph(
    gateway: GatewayProcess, tenant: Tenant, changes: dict[str, Any], message: str
) -> None:
    error = graph_error(send(gateway, tenant, body(**changes)), 100, 400)
    assert error["message"] == message
    assert "must be one of" in error["error_data"]["details"]


def test_missing_recipient_says_what_to_send(gateway: GatewayProcess, tenant: Tenant) -> None:
    error = graph_error(send(gateway, tenant, body(recipient=None)), 131008, 400)
    assert "`to`" in error["error_data"]["details"]


def test_a_refused_message_is_not_stored(gateway: GatewayProcess, tenant: Tenant) -> None:
    send(gateway, tenant, body(type="text"))
    listing = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages",
        headers={"X-API-Key": tenant.api_key},
    )
    assert listing.json()["data"] == []


# ---- transport errors --------------------------------------------------------------


@pytest.mark.parametrize("content", [b"{", '{"é":1'.encode("latin-1")])
def test_malformed_json_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, content: bytes
) -> None:
    graph_error(send(gateway, tenant, content=content), 100, 400)


@pytest.mark.parametrize("content", [b"[]", b"null"])
def test_a_body_that_is_not_an_object_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, content: bytes
) -> None:
    graph_error(send(gateway, tenant, content=content), 100, 400)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
def test_wrong_content_type_is_refused(
    gateway: GatewayProcess, tenant: Tenant, content_type: str
) -> None:
    response = send(gateway, tenant, SEED_BODY, headers={"Content-Type": content_type})
    graph_error(response, 100, 415)


def test_json_with_charset_is_fine(gateway: GatewayProcess, tenant: Tenant) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert send(gateway, tenant, SEED_BODY, headers=headers).status_code == 200


def test_an_oversized_body_is_refused(gateway: GatewayProcess, tenant: Tenant) -> None:
    huge = body(biz_opaque_callback_data="x" * 200_000)
    graph_error(send(gateway, tenant, huge), 100, 413)


def test_an_unknown_graph_version_is_refused(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = loopback.post(
        url(gateway, tenant, version="latest"),
        json=SEED_BODY,
        headers={"X-API-Key": tenant.api_key},
    )
    graph_error(response, 100, 400)


def test_get_on_the_send_path_is_a_graph_error(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = loopback.get(url(gateway, tenant), headers={"X-API-Key": tenant.api_key})
    graph_error(response, 100, 405)


def test_options_on_the_send_path_lists_post(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = loopback.options(url(gateway, tenant))
    assert response.status_code == 204
    assert response.headers["allow"] == "OPTIONS, POST"


@pytest.mark.parametrize("spelling", ["{url}/", "{url}//", "{base}//meta/whatsapp{rest}"])
def test_the_send_path_is_served_with_empty_segments_as_every_route_is(
    gateway: GatewayProcess, tenant: Tenant, spelling: str
) -> None:
    rest = url(gateway, tenant).removeprefix(f"{gateway.base_url}/meta/whatsapp")
    target = spelling.format(url=url(gateway, tenant), base=gateway.base_url, rest=rest)
    headers = {"X-API-Key": tenant.api_key}
    response = loopback.post(target, json=SEED_BODY, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["messages"][0]["id"].startswith("wamid.")


# ---- auth and ownership ------------------------------------------------------------


def test_missing_key_is_401_code_190(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = loopback.post(url(gateway, tenant), json=SEED_BODY)
    graph_error(response, 190, 401)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "wg_not_a_key"},
        {"Authorization": "Bearer wg_not_a_key"},
        {"Authorization": "Basic x"},
    ],
)
def test_invalid_key_is_401_code_190(
    gateway: GatewayProcess, tenant: Tenant, headers: dict[str, str]
) -> None:
    response = loopback.post(url(gateway, tenant), json=SEED_BODY, headers=headers)
    graph_error(response, 190, 401)


def test_bearer_key_works(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = loopback.post(
        url(gateway, tenant), json=SEED_BODY, headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert response.status_code == 200, response.text


def test_another_projects_number_looks_like_a_missing_one(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    other = make_tenant(gateway.database_url)
    foreign = loopback.post(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{other.phone_number_id}/marketing_messages",
        json=SEED_BODY,
        headers={"X-API-Key": tenant.api_key},
    )
    missing = loopback.post(
        f"{gateway.base_url}/meta/whatsapp/v24.0/999999999999999/marketing_messages",
        json=SEED_BODY,
        headers={"X-API-Key": tenant.api_key},
    )
    foreign_error = graph_error(foreign, 100, 400)
    missing_error = graph_error(missing, 100, 400)
    assert foreign_error["error_subcode"] == missing_error["error_subcode"] == 33
    assert foreign_error["message"] == missing_error["message"]
    assert other.phone_number_id in foreign_error["error_data"]["details"]


def test_fbtrace_id_of_an_error_is_in_the_logs(gateway: GatewayProcess, tenant: Tenant) -> None:
    error = graph_error(send(gateway, tenant, body(type="text")), 100, 400)
    # The log is written by the server process; its handler may flush a moment later.
    wait_until(lambda: error["fbtrace_id"] in gateway.log_text(), 5, what="the logged trace id")


def test_fbtrace_ids_differ_per_request(gateway: GatewayProcess, tenant: Tenant) -> None:
    ids = {send(gateway, tenant, body(type="text")).json()["error"]["fbtrace_id"] for _ in range(3)}
    assert len(ids) == 3


# ---- idempotency -------------------------------------------------------------------


def _listing(gateway: GatewayProcess, tenant: Tenant) -> list[dict[str, Any]]:
    response = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages?limit=100",
        headers={"X-API-Key": tenant.api_key},
    )
    return list(response.json()["data"])


def test_same_idempotency_key_and_body_replays_the_first_answer(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    first = send(gateway, tenant, SEED_BODY, headers={"Idempotency-Key": "order-1"})
    again = send(gateway, tenant, SEED_BODY, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(_listing(gateway, tenant)) == 1


def test_idempotency_key_ignores_json_formatting(gateway: GatewayProcess, tenant: Tenant) -> None:
    compact = json.dumps(SEED_BODY).encode()
    spaced = json.dumps(dict(reversed(list(SEED_BODY.items()))), indent=2).encode()
    first = send(gateway, tenant, content=compact, headers={"Idempotency-Key": "k"})
    again = send(gateway, tenant, content=spaced, headers={"Idempotency-Key": "k"})
    assert first.json() == again.json()


def test_same_idempotency_key_with_another_body_is_refused(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    send(gateway, tenant, SEED_BODY, headers={"Idempotency-Key": "order-2"})
    other = send(
        gateway, tenant, body(to="+44 7700 900123"), headers={"Idempotency-Key": "order-2"}
    )
    error = graph_error(other, 100, 422)
    assert "Idempotency-Key" in error["error_data"]["details"]
    assert len(_listing(gateway, tenant)) == 1


def test_concurrent_requests_with_one_key_store_one_message(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    import asyncio

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await asyncio.gather(
                *[
                    client.post(
                        url(gateway, tenant),
                        json=SEED_BODY,
                        headers={"X-API-Key": tenant.api_key, "Idempotency-Key": "burst"},
                    )
                    for _ in range(20)
                ]
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["messages"][0]["id"] for r in responses}) == 1
    assert len(_listing(gateway, tenant)) == 1


def test_different_idempotency_keys_make_different_messages(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    a = send(gateway, tenant, SEED_BODY, headers={"Idempotency-Key": "a"})
    b = send(gateway, tenant, SEED_BODY, headers={"Idempotency-Key": "b"})
    assert a.json()["messages"][0]["id"] != b.json()["messages"][0]["id"]


def test_keys_are_per_project(gateway: GatewayProcess, tenant: Tenant) -> None:
    other = make_tenant(gateway.database_url)
    a = send(gateway, tenant, SEED_BODY, headers={"Idempotency-Key": "shared"})
    b = send(gateway, other, SEED_BODY, headers={"Idempotency-Key": "shared"})
    assert a.status_code == b.status_code == 200
    assert a.json()["messages"][0]["id"] != b.json()["messages"][0]["id"]


def test_an_unusable_idempotency_key_is_refused(gateway: GatewayProcess, tenant: Tenant) -> None:
    graph_error(send(gateway, tenant, SEED_BODY, headers={"Idempotency-Key": "x" * 256}), 100, 400)


# ---- health and docs ---------------------------------------------------------------


def test_healthz(gateway: GatewayProcess) -> None:
    response = loopback.get(f"{gateway.base_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_unknown_paths_answer_in_the_graph_envelope(gateway: GatewayProcess) -> None:
    response = loopback.get(f"{gateway.base_url}/nope")
    graph_error(response, 100, 404)
