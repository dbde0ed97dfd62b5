"""The phone numbers management API over real HTTP, on SQLite and PostgreSQL: scoped to the
project of the key, Graph errors, `{"data": ...}` bodies, tokens never shown."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.integration.test_send_endpoint import SEED_BODY
from tests.support import (
    GatewayPool,
    GatewayProcess,
    make_tenant,
    sql,
)
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.tables import messages

PATH = "/platform/v1/whatsapp/phone_numbers"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, gateway_pool: GatewayPool) -> GatewayProcess:
    """A real gateway without a worker: what is sent stays queued (undelivered)."""
    return gateway_pool.get(request.param, WAGATE_WORKER="0")


def call(
    gateway: GatewayProcess,
    method: str,
    suffix: str = "",
    *,
    key: str | None,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to the management API with `key` (None: no key)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return loopback.request(
        method,
        f"{gateway.base_url}{PATH}{suffix}",
        json=body,
        params=params,
        headers=headers,
        timeout=10,
    )


def graph_error(response: httpx.Response, status: int, code: int = 100) -> dict[str, Any]:
    """The Graph error of a refused request."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert "fbtrace_id" in error
    return error


def new_id() -> str:
    return str(uuid.uuid4().int % 10**15)


def send(gateway: GatewayProcess, key: str, phone_number_id: str) -> httpx.Response:
    return loopback.post(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{phone_number_id}/marketing_messages",
        json=SEED_BODY,
        headers={"X-API-Key": key},
        timeout=10,
    )


def test_a_project_lists_adds_shows_updates_and_removes_its_numbers(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url)
    [listed] = call(gateway, "GET", key=tenant.api_key).json()["data"]
    assert listed["phone_number_id"] == tenant.phone_number_id
    assert listed["upstream"] == "sandbox"

    meta_id, token = new_id(), "EAAG-" + uuid.uuid4().hex
    body = {
        "whatsapp_phone_number": {
            "phone_number_id": meta_id,
            "upstream": "meta",
            "waba_id": "102290129340398",
            "access_token": token,
            "mps": 20,
        }
    }
    created = call(gateway, "POST", key=tenant.api_key, body=body)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "data": {
            "id": meta_id,
            "phone_number_id": meta_id,
            "waba_id": "102290129340398",
            "project_id": tenant.project_id,
            "upstream": "meta",
            "mps": 20,
        }
    }
    # The new number takes sends at once.
    assert send(gateway, tenant.api_key, meta_id).status_code == 200

    new_token = "EAAG-" + uuid.uuid4().hex
    patch = {"whatsapp_phone_number": {"access_token": new_token, "mps": 80}}
    updated = call(gateway, "PATCH", f"/{meta_id}", key=tenant.api_key, body=patch)
    assert updated.status_code == 200, updated.text
    assert updated.json()["data"]["mps"] == 80
    shown = call(gateway, "GET", f"/{meta_id}", key=tenant.api_key)
    assert shown.json()["data"]["mps"] == 80
    for response in (created, updated, shown, call(gateway, "GET", key=tenant.api_key)):
        assert token not in response.text
        assert new_token not in response.text
    assert stored_token(gateway.database_url, meta_id) == new_token

    # One message is still queued (no worker here): refused without force.
    busy = call(gateway, "DELETE", f"/{meta_id}", key=tenant.api_key)
    graph_error(busy, 409)
    assert "force=true" in busy.text
    removed = call(gateway, "DELETE", f"/{meta_id}", key=tenant.api_key, params={"force": "true"})
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"data": {"id": meta_id, "deleted": True, "deleted_undelivered": 1}}
    assert (
        sql(gateway.database_url, messages.select().where(messages.c.phone_number_id == meta_id))
        == []
    )
    gone = call(gateway, "GET", f"/{meta_id}", key=tenant.api_key)
    assert graph_error(gone, 400)["error_subcode"] == 33
    assert graph_error(send(gateway, tenant.api_key, meta_id), 400)["error_subcode"] == 33
    # A number without undelivered messages goes without force.
    idle = call(gateway, "POST", key=tenant.api_key, body={"phone_number_id": new_id()})
    idle_id = idle.json()["data"]["phone_number_id"]
    assert call(gateway, "DELETE", f"/{idle_id}", key=tenant.api_key).status_code == 200


def stored_token(database_url: str, phone_number_id: str) -> str:
    """A number's access token as the store opens it."""
    import asyncio

    async def work() -> str:
        store = SqlStore.from_url(database_url)
        try:
            number = await store.get_phone_number(phone_number_id)
            assert number is not None
            return number.access_token
        finally:
            await store.close()

    return asyncio.run(work())


def test_another_projects_key_sees_none_of_its_numbers(gateway: GatewayProcess) -> None:
    owner, other = make_tenant(gateway.database_url), make_tenant(gateway.database_url)
    mine = f"/{owner.phone_number_id}"
    listed = call(gateway, "GET", key=other.api_key).json()["data"]
    assert [n["phone_number_id"] for n in listed] == [other.phone_number_id]
    for method, body in (("GET", None), ("PATCH", {"mps": 1}), ("DELETE", None)):
        error = graph_error(call(gateway, method, mine, key=other.api_key, body=body), 400)
        assert error["error_subcode"] == 33
        assert owner.project_id not in str(error)
    # Untouched by the attempts.
    shown = call(gateway, "GET", mine, key=owner.api_key).json()["data"]
    assert shown["mps"] == 80


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_every_route_wants_a_live_key(gateway: GatewayProcess, method: str) -> None:
    tenant = make_tenant(gateway.database_url)
    suffix = "" if method in ("GET", "POST") else f"/{tenant.phone_number_id}"
    body = {"phone_number_id": new_id()} if method == "POST" else None
    graph_error(call(gateway, method, suffix, key=None, body=body), 401, code=190)
    graph_error(call(gateway, method, suffix, key="wg_wrong", body=body), 401, code=190)


def test_mistakes_are_graph_errors_that_say_what_to_fix(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "", {"phone_number_id": "abc"}, 400, "phone_number_id"),
        ("POST", "", {"phone_number_id": new_id(), "mps": 0}, 400, "mps"),
        ("POST", "", {"phone_number_id": new_id(), "colour": "red"}, 400, "colour"),
        (
            "POST",
            "",
            {"phone_number_id": new_id(), "upstream": "meta", "access_token": "t"},
            400,
            "waba",
        ),
        ("POST", "", {"phone_number_id": tenant.phone_number_id}, 409, "registered already"),
        ("POST", "", "not an object", 400, "Invalid body"),
        ("PATCH", f"/{tenant.phone_number_id}", {}, 400, "nothing to change"),
        ("PATCH", f"/{tenant.phone_number_id}", {"waba_id": "x1"}, 400, "waba_id"),
        ("DELETE", f"/{tenant.phone_number_id}?force=maybe", None, 400, "force"),
    ]
    for method, suffix, body, status, words in cases:
        response = call(gateway, method, suffix, key=tenant.api_key, body=body)
        error = graph_error(response, status)
        assert words in str(error), (method, suffix, body, error)
    assert call(gateway, "GET", f"/{tenant.phone_number_id}", key=tenant.api_key).status_code == 200


def test_the_routes_are_in_the_openapi_document_with_readable_ids(gateway: GatewayProcess) -> None:
    document = loopback.get(f"{gateway.base_url}/docs/openapi.json", timeout=10).json()
    ids = {
        operation["operationId"]
        for path, item in document["paths"].items()
        # A number's webhooks and suppressions live under its path too (their own tests).
        if path.startswith(PATH) and "/webhooks" not in path and "/suppressions" not in path
        for operation in item.values()
    }
    assert ids == {
        "listPhoneNumbers",
        "createPhoneNumber",
        "getPhoneNumber",
        "updatePhoneNumber",
        "deletePhoneNumber",
    }
    post = document["paths"][PATH]["post"]
    wrapped = post["requestBody"]["content"]["application/json"]["schema"]
    assert wrapped["required"] == ["whatsapp_phone_number"]
    assert "PhoneNumberCreate" in document["components"]["schemas"]
