"""The suppressions management API over real HTTP, on SQLite and PostgreSQL: recipients
read as a send reads them, imports that report each bad recipient, pages, Meta's
opt-outs on the same list, scoping to the key's project, and Graph errors, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from tests import loopback
from tests.integration.test_webhooks_api import call, data, graph_error, is_iso
from tests.support import (
    GatewayPool,
    GatewayProcess,
    Tenant,
    make_tenant,
    sql,
)
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.statuses import SqlStatusStore
from wagate.adapters.store.tables import suppressions
from wagate.domain.statuses import PreferenceRow

BSUID = "US.13491208655302741918"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, gateway_pool: GatewayPool) -> GatewayProcess:
    """A real gateway without a worker."""
    return gateway_pool.get(request.param, WAGATE_WORKER="0")


def path(tenant: Tenant, recipient: str | None = None) -> str:
    """The suppressions of the tenant's number (one recipient's, URL-encoded)."""
    base = f"/phone_numbers/{tenant.phone_number_id}/suppressions"
    return base if recipient is None else f"{base}/{quote(recipient, safe='')}"


def add(gateway: GatewayProcess, tenant: Tenant, recipient: str) -> dict[str, Any]:
    """Suppress one recipient; the answer's `data`."""
    body = {"suppression": {"recipient": recipient}}
    added: dict[str, Any] = data(call(gateway, "POST", path(tenant), key=tenant.api_key, body=body))
    return added


def add_many(gateway: GatewayProcess, tenant: Tenant, recipients: list[Any]) -> dict[str, Any]:
    """Import recipients; the answer's `data`."""
    body = {"suppressions": [{"recipient": r} for r in recipients]}
    imported: dict[str, Any] = data(
        call(gateway, "POST", path(tenant), key=tenant.api_key, body=body)
    )
    return imported


def listed(
    gateway: GatewayProcess, tenant: Tenant, **params: str
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of suppressions and the cursor of the next one."""
    response = call(gateway, "GET", path(tenant), key=tenant.api_key, params=params)
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["data"], answer["paging"]["cursors"].get("before")


def waba_of(gateway: GatewayProcess, tenant: Tenant) -> str:
    """The WABA of the tenant's number, as the numbers API shows it."""
    number = data(
        call(gateway, "GET", f"/phone_numbers/{tenant.phone_number_id}", key=tenant.api_key)
    )
    waba_id: str = number["waba_id"]
    return waba_id


def meta_says(
    database_url: str, waba_id: str, recipients: list[str], value: str, at_ms: int
) -> None:
    """`user_preferences` opt-outs or opt-ins from Meta, stored by the real ingest."""

    async def work() -> None:
        store = SqlStore.from_url(database_url)
        try:
            rows = [PreferenceRow(waba_id, recipient, value, at_ms) for recipient in recipients]
            await SqlStatusStore(store.engine).ingest([], rows, [], at_ms)
        finally:
            await store.close()

    asyncio.run(work())


def stored_value(database_url: str, waba_id: str, recipient: str) -> str | None:
    """The row's value (`stop` / `resume`), or None without a row."""
    rows = sql(
        database_url,
        select(suppressions.c.value).where(
            suppressions.c.waba_id == waba_id, suppressions.c.recipient == recipient
        ),
    )
    return None if not rows else str(rows[0].value)


def test_a_project_adds_looks_up_lists_and_removes_suppressions(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    added = add(gateway, tenant, "+44 7700 900123")
    assert added == {
        "recipient": "447700900123",
        "kind": "phone",
        "since": added["since"],
        "updated_at": added["since"],
        "added": True,
    }
    assert is_iso(added["since"])
    again = add(gateway, tenant, "447700900123")
    assert (again["added"], again["since"]) == (False, added["since"])
    bsuid = add(gateway, tenant, BSUID)
    assert (bsuid["recipient"], bsuid["kind"], bsuid["added"]) == (BSUID, "bsuid", True)

    page, cursor = listed(gateway, tenant)
    assert [item["recipient"] for item in page] == [BSUID, "447700900123"]
    assert cursor is None
    assert set(page[1]) == {"recipient", "kind", "since", "updated_at"}
    found, _ = listed(gateway, tenant, recipient="+44 (7700) 900-123")
    assert found == [page[1]]
    assert listed(gateway, tenant, recipient="447700900999") == ([], None)

    removed = call(gateway, "DELETE", path(tenant, "+44 7700 900123"), key=tenant.api_key)
    assert data(removed) == {"recipient": "447700900123", "removed": True}
    assert stored_value(gateway.database_url, waba_of(gateway, tenant), "447700900123") == "resume"
    again_removed = call(gateway, "DELETE", path(tenant, "447700900123"), key=tenant.api_key)
    assert "not suppressed" in str(graph_error(again_removed, 404))
    assert data(call(gateway, "DELETE", path(tenant, BSUID), key=tenant.api_key))["removed"]
    assert listed(gateway, tenant) == ([], None)


def test_an_import_stores_the_valid_and_reports_each_invalid_by_index(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url)
    add(gateway, tenant, "447700900000")
    recipients = [f"+44 7700 9{i:05d}" for i in range(995)]
    bad = {3: "nonsense", 10: "07700 900123", 500: "1" * 300, 998: "", 999: "us.1"}
    for index, value in bad.items():
        recipients.insert(index, value)
    imported = add_many(gateway, tenant, recipients)
    assert len(recipients) == 1000
    assert (imported["added"], imported["already_suppressed"]) == (994, 1)
    assert [item["index"] for item in imported["invalid"]] == sorted(bad)
    for item in imported["invalid"]:
        assert "neither a phone number" in item["error"], item
        assert len(item["recipient"]) <= 203
    assert imported["invalid"][0]["recipient"] == "nonsense"
    waba_id = waba_of(gateway, tenant)
    count = sql(
        gateway.database_url,
        select(suppressions.c.recipient).where(
            suppressions.c.waba_id == waba_id, suppressions.c.value == "stop"
        ),
    )
    assert len(count) == 995


def test_pages_go_newest_first_and_cover_every_suppression_once(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url)
    older = [f"4477009001{i:02d}" for i in range(25)]
    newer = [f"4477009002{i:02d}" for i in range(20)]
    # Meta's opt-outs of 2023, all at one moment: ties are ordered by recipient.
    meta_says(gateway.database_url, waba_of(gateway, tenant), older, "stop", 1_700_000_000_000)
    add_many(gateway, tenant, newer)
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params = {"limit": "20"} if cursor is None else {"limit": "20", "before": cursor}
        page, cursor = listed(gateway, tenant, **params)
        seen += [item["recipient"] for item in page]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 45
    assert set(seen[:20]) == set(newer)
    assert set(seen[20:]) == set(older)
    assert seen[20:] == sorted(older, reverse=True), "ties are ordered by recipient"
    first, cursor = listed(gateway, tenant)
    assert len(first) == 20
    assert cursor is not None


def test_metas_opt_outs_are_listed_and_a_removal_outlasts_a_late_retry(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url)
    waba_id = waba_of(gateway, tenant)
    stop_ms = 1_700_000_000_000
    meta_says(gateway.database_url, waba_id, ["447700900321"], "stop", stop_ms)
    [item], _ = listed(gateway, tenant)
    assert (item["recipient"], item["since"]) == ("447700900321", "2023-11-14T22:13:20.000Z")
    data(call(gateway, "DELETE", path(tenant, "447700900321"), key=tenant.api_key))
    meta_says(gateway.database_url, waba_id, ["447700900321"], "stop", stop_ms)  # Meta retries
    assert listed(gateway, tenant) == ([], None)
    meta_says(gateway.database_url, waba_id, ["447700900321"], "stop", 4_000_000_000_000)
    [item], _ = listed(gateway, tenant)
    assert item["recipient"] == "447700900321"


def test_another_projects_key_sees_and_changes_nothing(gateway: GatewayProcess) -> None:
    owner, other = make_tenant(gateway.database_url), make_tenant(gateway.database_url)
    add(gateway, owner, "447700900123")
    attempts: list[tuple[str, str, Any]] = [
        ("GET", path(owner), None),
        ("POST", path(owner), {"suppression": {"recipient": "447700900124"}}),
        ("POST", path(owner), {"suppressions": [{"recipient": "447700900124"}]}),
        ("DELETE", path(owner, "447700900123"), None),
    ]
    for method, where, body in attempts:
        error = graph_error(call(gateway, method, where, key=other.api_key, body=body), 400)
        assert error["error_subcode"] == 33, (method, where)
        assert owner.project_id not in str(error)
    [item], _ = listed(gateway, owner)
    assert item["recipient"] == "447700900123"
    assert listed(gateway, other) == ([], None)


def test_every_route_wants_a_live_key(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    add(gateway, tenant, "447700900123")
    for method, where in (
        ("GET", path(tenant)),
        ("POST", path(tenant)),
        ("DELETE", path(tenant, "447700900123")),
    ):
        for key in (None, "wg_wrong"):
            body = {"suppression": {"recipient": "447700900124"}}
            graph_error(call(gateway, method, where, key=key, body=body), 401, code=190)
    [item], _ = listed(gateway, tenant)
    assert item["recipient"] == "447700900123"


def test_mistakes_are_graph_errors_that_say_what_to_fix(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    add(gateway, tenant, "447700900123")
    one = {"recipient": "447700900124"}
    cases: list[tuple[str, str, Any, dict[str, str] | None, str]] = [
        ("POST", path(tenant), {"suppression": {"recipient": "hello"}}, None, "'hello'"),
        ("POST", path(tenant), {"suppression": {"recipient": "0770090012"}}, None, "country code"),
        ("POST", path(tenant), {"suppression": {"recipient": 447700900124}}, None, "recipient"),
        ("POST", path(tenant), {"suppression": {}}, None, "recipient"),
        ("POST", path(tenant), {"suppression": one, "suppressions": [one]}, None, "one of"),
        ("POST", path(tenant), {}, None, "one of"),
        ("POST", path(tenant), {"suppressions": []}, None, "1 to 1000"),
        ("POST", path(tenant), {"suppressions": [one] * 1001}, None, "1000"),
        ("POST", path(tenant), {"suppressions": "447700900124"}, None, "suppressions"),
        ("POST", path(tenant), {"suppressions": [one], "colour": "red"}, None, "colour"),
        ("POST", path(tenant), "not an object", None, "Invalid body"),
        ("GET", path(tenant), None, {"limit": "0"}, "limit"),
        ("GET", path(tenant), None, {"limit": "101"}, "limit"),
        ("GET", path(tenant), None, {"limit": "ten"}, "limit"),
        ("GET", path(tenant), None, {"before": "nonsense"}, "before"),
        ("GET", path(tenant), None, {"before": "c3VwOjE6AA"}, "before"),  # sup:1:NUL
        ("GET", path(tenant), None, {"recipient": "x\x00y"}, "neither a phone number"),
        ("DELETE", path(tenant, "not-a-number"), None, None, "neither a phone number"),
        ("DELETE", path(tenant, "1\x002"), None, None, "neither a phone number"),
    ]
    for method, where, body, params, words in cases:
        response = call(gateway, method, where, key=tenant.api_key, body=body, params=params)
        error = graph_error(response, 400)
        assert words in str(error), (method, where, body, error)
    huge = {"suppressions": [{"recipient": "4" * 300}] * 1000}
    too_large = call(gateway, "POST", path(tenant), key=tenant.api_key, body=huge)
    assert "larger than" in str(graph_error(too_large, 413))
    for number in ("999", "1%002", "9" * 500):
        where = f"/phone_numbers/{number}/suppressions"
        for method in ("GET", "POST"):
            response = call(gateway, method, where, key=tenant.api_key, body={"suppression": one})
            assert graph_error(response, 400)["error_subcode"] == 33, (number, method)
    [item], _ = listed(gateway, tenant)
    assert item["recipient"] == "447700900123"


def test_a_bsuid_in_the_path_and_in_a_query_works_as_typed(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    parent = "US.ENT.11815799212886844830"
    add_many(gateway, tenant, [BSUID, parent])
    assert [i["recipient"] for i in listed(gateway, tenant, recipient=parent)[0]] == [parent]
    raw = loopback.delete(
        f"{gateway.base_url}/platform/v1/whatsapp{path(tenant)}/{parent}",
        headers={"X-API-Key": tenant.api_key},
        timeout=10,
    )
    assert data(raw) == {"recipient": parent, "removed": True}
    assert [i["recipient"] for i in listed(gateway, tenant)[0]] == [BSUID]
