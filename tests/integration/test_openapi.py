"""The OpenAPI document a live gateway serves, and requests generated from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
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

from tests import loopback
from tests.integration.test_send_endpoint import EVERY_COMPONENT, SEED_BODY, body, send
from tests.support import GatewayProcess, Tenant, make_tenant
from wagate.adapters.http.send_openapi import SEND_EXAMPLES

SEND = "/meta/whatsapp/{version}/{phone_number_id}/marketing_messages"
ONE = "/meta/whatsapp/{version}/{phone_number_id}/messages/{message_id}"
LIST = "/meta/whatsapp/{version}/{phone_number_id}/messages"
SUPPRESSIONS = "/platform/v1/whatsapp/phone_numbers/{phone_number_id}/suppressions"
OPENAPI_PATH = "/docs/openapi.json"


@pytest.fixture(scope="module")
def document(gateway: GatewayProcess) -> dict[str, Any]:
    """The OpenAPI document as the running gateway serves it."""
    response = loopback.get(f"{gateway.base_url}{OPENAPI_PATH}", timeout=10)
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
    response = loopback.get(f"{gateway.base_url}{OPENAPI_PATH}")
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "wagate"


def test_the_docs_page_and_yaml_are_served(gateway: GatewayProcess) -> None:
    page = loopback.get(f"{gateway.base_url}/docs")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    yaml = loopback.get(f"{gateway.base_url}/docs/openapi.yaml")
    assert yaml.status_code == 200
    assert "marketing_messages" in yaml.text


def test_the_docs_page_loads_nothing_from_another_host(gateway: GatewayProcess) -> None:
    page = loopback.get(f"{gateway.base_url}/docs").text
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert len(assets) >= 4, page  # script, preset, stylesheet, icon
    for asset in assets:
        assert asset.startswith("/docs/"), f"{asset} is not served by the gateway"
        response = loopback.get(f"{gateway.base_url}{asset}")
        assert response.status_code == 200, asset
        assert len(response.content) > 500, asset


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = set(refs(document))
    assert len(found) > 20
    for ref in sorted(found):
        assert isinstance(resolve(document, ref), dict), ref


def test_the_send_body_is_any_of_a_phone_send_and_a_bsuid_send(document: dict[str, Any]) -> None:
    operation = document["paths"][SEND]["post"]
    request_body = operation["requestBody"]
    assert request_body["required"] is True
    # anyOf: a body with both `to` and `recipient` is valid (`to` wins) and matches both.
    variants = request_body["content"]["application/json"]["schema"]["anyOf"]
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
    phone = deref(document, variants["schema"]["anyOf"][0])
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


# Readable operation ids, chosen, not generated from the path; `readyz` is the health
# check's (issue 11).
OPERATION_IDS = {
    "sendMarketingMessage",
    "getMessage",
    "listMessages",
    "verifyMetaWebhook",
    "receiveMetaWebhook",
    "healthz",
    "readyz",
    "listPhoneNumbers",
    "createPhoneNumber",
    "getPhoneNumber",
    "updatePhoneNumber",
    "deletePhoneNumber",
    "listWebhooks",
    "createWebhook",
    "getWebhook",
    "getPhoneNumberWebhook",
    "updateWebhook",
    "updatePhoneNumberWebhook",
    "deleteWebhook",
    "deletePhoneNumberWebhook",
    "testWebhook",
    "testPhoneNumberWebhook",
    "listWebhookDeliveries",
    "listPhoneNumberWebhookDeliveries",
    "listWebhookAttempts",
    "listPhoneNumberWebhookAttempts",
    "replayWebhookDeliveries",
    "replayPhoneNumberWebhookDeliveries",
    "pauseWebhook",
    "pausePhoneNumberWebhook",
    "resumeWebhook",
    "resumePhoneNumberWebhook",
    "listSuppressions",
    "addSuppressions",
    "deleteSuppression",
    "listMessageTemplates",
    "createMessageTemplate",
    "deleteMessageTemplate",
}
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
METHODS = ("get", "post", "put", "patch", "delete")


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation of the document."""
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A strict JSON Schema 2020-12 validator of `schema`, its references into the document."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


def test_the_document_is_openapi_3_1_with_an_answer_for_every_operation(
    document: dict[str, Any],
) -> None:
    assert document["openapi"].startswith("3.1")
    assert {"title", "version"} <= set(document["info"])
    found = list(operations(document))
    assert len(found) >= 6
    for path, method, operation in found:
        assert operation["responses"], (path, method)
        for status in operation["responses"]:
            assert status == "default" or (status.isdigit() and len(status) == 3), status
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (path, method)


def test_every_operation_has_a_readable_operation_id(document: dict[str, Any]) -> None:
    ids = [operation.get("operationId") for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), ids
    assert set(ids) <= OPERATION_IDS, ids
    assert set(ids) == OPERATION_IDS


def test_every_authenticated_operation_takes_an_api_key_or_a_bearer_token(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "name": "X-API-Key",
        "in": "header",
        "description": schemes["ApiKey"]["description"],
    }
    assert schemes["Bearer"]["type"] == "http"
    assert schemes["Bearer"]["scheme"] == "bearer"
    for path, method, operation in operations(document):
        if path.startswith(("/meta/", "/platform/")):
            assert operation.get("security") == API_KEY_SECURITY, (path, method)
            assert "401" in operation["responses"], (path, method)
        else:  # health, and Meta's webhooks (signed, not keyed)
            assert not operation.get("security"), (path, method)


def test_every_header_and_status_is_documented(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            # /readyz's 503 is the readiness answer, not a Graph error with a trace id.
            if status[0] in "45" and path != "/readyz":
                assert "x-fb-trace-id" in response.get("headers", {}), (path, method, status)
    send = document["paths"][SEND]["post"]
    assert {"idempotent-replayed", "x-fb-trace-id"} <= set(send["responses"]["200"]["headers"])
    assert "Retry-After" in send["responses"]["429"]["headers"]
    assert {"400", "401", "408", "413", "415", "422", "429", "500"} <= set(send["responses"])
    headers = {p["name"] for p in send["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    verify = document["paths"]["/webhooks/meta"]["get"]
    assert {"200", "403"} <= set(verify["responses"])
    assert {p["name"] for p in verify["parameters"]} >= {"hub.mode", "hub.verify_token"}
    receive = document["paths"]["/webhooks/meta"]["post"]
    assert {"200", "400", "401", "408", "413", "503"} <= set(receive["responses"])
    assert "X-Hub-Signature-256" in {p["name"] for p in receive["parameters"]}


def media_examples(document: dict[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(where, example, schema) for every example of a request or response body."""
    for path, method, operation in operations(document):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += list(operation["responses"].items())
        for status, holder in bodies:
            for media in holder.get("content", {}).values():
                where = f"{method} {path} {status}"
                if "example" in media:
                    yield where, media["example"], media["schema"]
                for name, example in media.get("examples", {}).items():
                    yield f"{where} {name}", example["value"], media["schema"]


def test_every_documented_example_is_valid_under_a_strict_validator(
    document: dict[str, Any],
) -> None:
    found = list(media_examples(document))
    send_body = document["paths"][SEND]["post"]["requestBody"]["content"]["application/json"]
    assert set(send_body["examples"]) == set(SEND_EXAMPLES)
    assert len(found) >= len(SEND_EXAMPLES) + 2
    for where, example, schema in found:
        errors = [str(e) for e in validator(document, schema).iter_errors(example)]
        assert not errors, (where, errors)


def test_the_send_schema_refuses_what_the_gateway_refuses(document: dict[str, Any]) -> None:
    send_body = document["paths"][SEND]["post"]["requestBody"]["content"]["application/json"]
    check = validator(document, send_body["schema"])
    both = send_body["examples"]["phone_and_bsuid"]["value"]
    assert check.is_valid(both)
    assert not check.is_valid({k: v for k, v in both.items() if k not in ("to", "recipient")})
    assert not check.is_valid({**both, "colour": "red"})
    assert not check.is_valid({**both, "to": None, "recipient": None})
    assert not check.is_valid({**both, "recipient": "not a bsuid", "to": None})


@pytest.mark.parametrize("name", sorted(SEND_EXAMPLES))
def test_every_documented_send_body_is_accepted_by_the_gateway(
    gateway: GatewayProcess, tenant: Tenant, name: str
) -> None:
    answer = send(gateway, tenant, SEND_EXAMPLES[name][1])
    assert answer.status_code == 200, answer.text


# ---- live answers against the document ---------------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_live_answers_match_their_documented_schemas(unchecked_gateway: GatewayProcess) -> None:
    # Every component at once (no one template has them all): template checks off.
    gateway, tenant = unchecked_gateway, make_tenant(unchecked_gateway.database_url)
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


def test_the_suppression_routes_document_their_body_and_parameters(
    document: dict[str, Any],
) -> None:
    body = document["paths"][SUPPRESSIONS]["post"]["requestBody"]
    assert body["required"] is True
    check = validator(document, body["content"]["application/json"]["schema"])
    assert check.is_valid({"suppression": {"recipient": "+44 7700 900123"}})
    assert check.is_valid({"suppressions": [{"recipient": "US.13491208655302741918"}]})
    assert not check.is_valid({"suppressions": [{"recipient": "447700900123"}] * 1001})
    assert not check.is_valid({"suppression": {"recipient": "447700900123", "colour": "red"}})
    listing = document["paths"][SUPPRESSIONS]["get"]
    query = {p["name"] for p in listing["parameters"] if p["in"] == "query"}
    assert query == {"limit", "before", "recipient"}
    removal = document["paths"][SUPPRESSIONS + "/{recipient}"]["delete"]
    assert {"200", "400", "401", "404"} <= set(removal["responses"])


def test_suppression_answers_match_their_documented_schemas(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}{OPENAPI_PATH}")
    where = {"phone_number_id": tenant.phone_number_id}
    one = {**where, "recipient": "447700900123"}
    key = {"X-API-Key": tenant.api_key}
    add = schema[SUPPRESSIONS]["POST"]
    removal = schema[SUPPRESSIONS + "/{recipient}"]["DELETE"]
    cases = [
        add.Case(
            path_parameters=where,
            headers=key,
            body={"suppression": {"recipient": "+44 7700 900123"}},
            media_type="application/json",
        ),
        add.Case(
            path_parameters=where,
            headers=key,
            body={"suppressions": [{"recipient": "US.1349120865"}, {"recipient": "nonsense"}]},
            media_type="application/json",
        ),
        schema[SUPPRESSIONS]["GET"].Case(path_parameters=where, headers=key, query={"limit": 1}),
        schema[SUPPRESSIONS]["GET"].Case(path_parameters=where, headers=key, query={"limit": 0}),
        removal.Case(path_parameters=one, headers=key),
        removal.Case(path_parameters=one, headers=key),
        removal.Case(path_parameters=one, headers={}),
    ]
    answers = [case.call(base_url=gateway.base_url, timeout=10) for case in cases]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 400, 200, 404, 401]
    assert answers[2].json()["paging"]["cursors"]["before"]
    for case, answer in zip(cases, answers, strict=True):
        case.validate_response(answer, checks=CHECKS)


# ---- generated requests ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"),
    [("/healthz", "GET"), (SEND, "POST"), (ONE, "GET"), (LIST, "GET")],
    ids=["healthz", "send", "one message", "listing"],
)
def test_generated_requests_get_documented_answers_and_never_a_server_error(
    unchecked_gateway: GatewayProcess, path: str, method: str
) -> None:
    # Generated bodies name random templates: the body's rules alone (template checks off;
    # tests/integration/test_accept_checks.py checks those answers).
    gateway, tenant = unchecked_gateway, make_tenant(unchecked_gateway.database_url)
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
