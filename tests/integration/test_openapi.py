"""The OpenAPI document a live gateway serves, and requests generated from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_send_endpoint import EVERY_COMPONENT, SEED_BODY, body, send
from tests.support import GatewayProcess, Tenant

SEND = "/meta/whatsapp/{version}/{phone_number_id}/marketing_messages"
ONE = "/meta/whatsapp/{version}/{phone_number_id}/messages/{message_id}"
LIST = "/meta/whatsapp/{version}/{phone_number_id}/messages"
OPENAPI_PATH = "/docs/openapi.json"


@pytest.fixture(scope="module")
def document(gateway: GatewayProcess) -> dict[str, Any]:
    """The OpenAPI document as the running gateway serves it."""
    response = httpx.get(f"{gateway.base_url}{OPENAPI_PATH}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The object a local `$ref` (a JSON pointer) points at; KeyError when it does not resolve."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its `$ref` (if any) followed."""
    while "$ref" in schema:
        schema = resolve(document, schema["$ref"])
    return schema


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` anywhere in a JSON value, and every discriminator mapping target."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            elif key == "discriminator" and isinstance(value, dict):
                yield from value.get("mapping", {}).values()
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def json_schema(document: dict[str, Any], operation: dict[str, Any], status: str) -> dict[str, Any]:
    """The JSON schema of one documented response, references followed."""
    content = operation["responses"][status]["content"]["application/json"]
    return deref(document, content["schema"])


# ---- the document ------------------------------------------------------------------


def test_the_openapi_document_is_served_as_json(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.base_url}{OPENAPI_PATH}")
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "wagate"


def test_the_docs_page_and_yaml_are_served(gateway: GatewayProcess) -> None:
    page = httpx.get(f"{gateway.base_url}/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    yaml = httpx.get(f"{gateway.base_url}/docs/openapi.yaml")
    assert yaml.status_code == 200
    assert "marketing_messages" in yaml.text


def test_the_docs_page_loads_nothing_from_another_host(gateway: GatewayProcess) -> None:
    page = httpx.get(f"{gateway.base_url}/docs").text
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert len(assets) >= 4, page  # script, preset, stylesheet, icon
    for asset in assets:
        assert asset.startswith("/docs/"), f"{asset} is not served by the gateway"
        response = httpx.get(f"{gateway.base_url}{asset}")
        assert response.status_code == 200, asset
        assert len(response.content) > 500, asset


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = set(refs(document))
    assert len(found) > 20
    for ref in sorted(found):
        assert isinstance(resolve(document, ref), dict), ref


def test_the_send_body_is_one_of_a_phone_send_and_a_bsuid_send(document: dict[str, Any]) -> None:
    operation = document["paths"][SEND]["post"]
    request_body = operation["requestBody"]
    assert request_body["required"] is True
    variants = request_body["content"]["application/json"]["schema"]["oneOf"]
    phone, bsuid = (deref(document, variant) for variant in variants)
    for variant in (phone, bsuid):
        assert {"messaging_product", "type", "template"} <= set(variant["required"])
        assert {"to", "recipient", "biz_opaque_callback_data"} <= set(variant["properties"])
    assert "to" in phone["required"]
    assert "recipient" not in phone["required"]
    assert "recipient" in bsuid["required"]
    assert "to" not in bsuid["required"]


def test_the_send_body_describes_the_template_components(document: dict[str, Any]) -> None:
    variants = document["paths"][SEND]["post"]["requestBody"]["content"]["application/json"]
    phone = deref(document, variants["schema"]["oneOf"][0])
    template = deref(document, phone["properties"]["template"])
    assert {"name", "language"} <= set(template["required"])
    [array] = [s for s in template["properties"]["components"]["anyOf"] if s.get("type") == "array"]
    discriminator = array["items"]["discriminator"]
    assert discriminator["propertyName"] == "type"
    assert set(discriminator["mapping"]) >= {
        "header",
        "body",
        "button",
        "limited_time_offer",
        "carousel",
    }
    button = resolve(document, discriminator["mapping"]["button"])
    assert {"sub_type", "index", "parameters"} <= set(button["properties"])
    header = resolve(document, discriminator["mapping"]["header"])
    parameter_types = set(header["properties"]["parameters"]["items"]["discriminator"]["mapping"])
    assert {"text", "image", "video", "document", "location", "product"} <= parameter_types


def test_the_send_answer_is_documented(document: dict[str, Any]) -> None:
    operation = document["paths"][SEND]["post"]
    answer = json_schema(document, operation, "200")
    assert {"messaging_product", "contacts", "messages"} <= set(answer["properties"])
    message = deref(document, answer["properties"]["messages"]["items"])
    assert {"id", "message_status"} <= set(message["properties"])


@pytest.mark.parametrize(("path", "method"), [(SEND, "post"), (ONE, "get"), (LIST, "get")])
@pytest.mark.parametrize("status", ["400", "401"])
def test_errors_are_documented_in_the_graph_envelope(
    document: dict[str, Any], path: str, method: str, status: str
) -> None:
    envelope = json_schema(document, document["paths"][path][method], status)
    assert envelope["required"] == ["error"]
    error = deref(document, envelope["properties"]["error"])
    assert {"code", "fbtrace_id", "message", "type", "error_data"} <= set(error["required"])
    assert error["properties"]["code"]["type"] == "integer"
    data = deref(document, error["properties"]["error_data"])
    assert {"messaging_product", "details"} <= set(data["properties"])


def test_reading_one_message_is_documented(document: dict[str, Any]) -> None:
    operation = document["paths"][ONE]["get"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
    assert names == {"version", "phone_number_id", "message_id"}
    message = json_schema(document, operation, "200")
    assert {
        "id",
        "to",
        "recipient",
        "input",
        "type",
        "template",
        "timestamp",
        "status",
        "statuses",
        "errors",
        "biz_opaque_callback_data",
        "upstream_wamid",
        "last_error",
    } <= set(message["properties"])
    assert {"id", "type", "template", "timestamp", "status", "statuses"} <= set(message["required"])
    # Always present, null when there is none.
    assert {"upstream_wamid", "last_error"} <= set(message["required"])
    assert set(message["properties"]["status"]["enum"]) == {
        "pending",
        "sent",
        "delivered",
        "read",
        "failed",
    }


def test_the_listing_and_its_query_parameters_are_documented(document: dict[str, Any]) -> None:
    operation = document["paths"][LIST]["get"]
    query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(query) == {"status", "upstream_wamid", "since", "until", "limit", "before", "after"}
    assert query["limit"]["schema"]["minimum"] == 1
    assert query["limit"]["schema"]["maximum"] == 100
    assert "read" in query["status"]["schema"]["enum"]
    page = json_schema(document, operation, "200")
    assert {"data", "paging"} <= set(page["required"])
    paging = deref(document, page["properties"]["paging"])
    cursors = deref(document, paging["properties"]["cursors"])
    assert {"before", "after"} <= set(cursors["properties"])
    assert "next" in paging["properties"]


def test_healthz_is_documented(document: dict[str, Any]) -> None:
    health = json_schema(document, document["paths"]["/healthz"]["get"], "200")
    assert "status" in health["properties"]


def test_readyz_and_its_503_are_documented(document: dict[str, Any]) -> None:
    operation = document["paths"]["/readyz"]["get"]
    for status in ("200", "503"):
        readiness = json_schema(document, operation, status)
        assert {"status", "checks", "failed"} <= set(readiness["properties"])


# ---- live answers against the document ---------------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_live_answers_match_their_documented_schemas(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}{OPENAPI_PATH}")
    where = {"version": "v24.0", "phone_number_id": tenant.phone_number_id}
    key = {"X-API-Key": tenant.api_key}
    sends = [
        body(
            recipient=None,
            to="+44 7700 900123",
            template=EVERY_COMPONENT,
            biz_opaque_callback_data="x",
        ),
        SEED_BODY,
        body(type="text"),
    ]
    cases = [
        schema[SEND]["POST"].Case(
            path_parameters=where, headers=key, body=payload, media_type="application/json"
        )
        for payload in sends
    ]
    answers = [case.call(base_url=gateway.base_url, timeout=10) for case in cases]
    assert [answer.status_code for answer in answers] == [200, 200, 400]
    message_id = answers[0].json()["messages"][0]["id"]
    one = schema[ONE]["GET"]
    listing = schema[LIST]["GET"]
    cases += [
        one.Case(path_parameters={**where, "message_id": message_id}, headers=key),
        one.Case(path_parameters={**where, "message_id": "wamid.missing"}, headers=key),
        one.Case(path_parameters={**where, "message_id": message_id}, headers={}),
        listing.Case(path_parameters=where, headers=key, query={"limit": 1}),
        listing.Case(path_parameters=where, headers=key, query={"limit": 0}),
        schema["/healthz"]["GET"].Case(),
        schema["/readyz"]["GET"].Case(),
    ]
    answers += [case.call(base_url=gateway.base_url, timeout=10) for case in cases[3:]]
    assert [answer.status_code for answer in answers[3:]] == [200, 400, 401, 200, 400, 200, 200]
    assert answers[6].json()["paging"]["next"]
    for case, answer in zip(cases, answers, strict=True):
        case.validate_response(answer, checks=CHECKS)


# ---- generated requests ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"),
    [("/healthz", "GET"), (SEND, "POST"), (ONE, "GET"), (LIST, "GET")],
    ids=["healthz", "send", "one message", "listing"],
)
def test_generated_requests_get_documented_answers_and_never_a_server_error(
    gateway: GatewayProcess, tenant: Tenant, path: str, method: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}{OPENAPI_PATH}")
    operation = schema[path][method]
    # Aim at the tenant's own number so requests get past auth and ownership checks.
    fixed = {"version": "v24.0", "phone_number_id": tenant.phone_number_id}
    strategy = operation.as_strategy(
        path_parameters={k: v for k, v in fixed.items() if k in path},
        headers={"X-API-Key": tenant.api_key},
    )
    if path != "/healthz":
        # Stored messages make listings and reads answer with real data to check.
        for payload in (body(template=EVERY_COMPONENT), body(recipient=None, to="+15551234567")):
            assert send(gateway, tenant, payload).status_code == 200

    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Case[Any]) -> None:
        response = case.call(base_url=gateway.base_url, timeout=10)
        case.validate_response(response, checks=CHECKS)

    check()
