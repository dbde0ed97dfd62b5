"""Reading messages back over real HTTP, against a real gateway on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests import loopback
from tests.integration.test_send_endpoint import (
    EVERY_COMPONENT,
    SEED_BODY,
    body,
    graph_error,
    send,
)
from tests.support import (
    GatewayPool,
    GatewayProcess,
    Tenant,
    make_tenant,
    sql,
)
from wagate.adapters.store.tables import messages

MANY = 25


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, gateway_pool: GatewayPool) -> GatewayProcess:
    """A real gateway without a delivery worker, so messages stay as accepted (`pending`).

    Overrides the session gateway for this module; `tenant` uses this one.
    """
    return gateway_pool.get(request.param, WAGATE_WORKER="0")


def messages_url(gateway: GatewayProcess, tenant: Tenant, suffix: str = "") -> str:
    """The listing URL of a tenant's number, or a message's URL with `suffix` = "/{id}"."""
    return f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages{suffix}"


def read(
    gateway: GatewayProcess,
    tenant: Tenant,
    suffix: str = "",
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    """GET a read endpoint with the tenant's key."""
    return loopback.get(
        messages_url(gateway, tenant, suffix),
        params=params,
        headers={"X-API-Key": tenant.api_key},
        timeout=10,
    )


def listing(
    gateway: GatewayProcess, tenant: Tenant, **params: Any
) -> tuple[list[str], dict[str, Any]]:
    """The ids on one page of the listing, and its `paging`."""
    response = read(gateway, tenant, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    return [m["id"] for m in page["data"]], page["paging"]


def send_ok(gateway: GatewayProcess, tenant: Tenant, payload: dict[str, Any]) -> str:
    """Send a message that must be accepted; its id."""
    response = send(gateway, tenant, payload)
    assert response.status_code == 200, response.text
    return str(response.json()["messages"][0]["id"])


@pytest.fixture(scope="module")
def filled(gateway: GatewayProcess) -> tuple[Tenant, list[str]]:
    """A tenant with MANY messages sent one after another; their ids, newest first."""
    tenant = make_tenant(gateway.database_url)
    ids = [send_ok(gateway, tenant, SEED_BODY) for _ in range(MANY)]
    return tenant, ids[::-1]


def cursor(text: str) -> str:
    """A cursor in the API's encoding, for forged-cursor tests."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# ---- one message -------------------------------------------------------------------


def test_a_phone_send_reads_back_as_it_was_sent(unchecked_gateway: GatewayProcess) -> None:
    # Every component at once (no one template has them all): the template checks are off.
    gateway, tenant = unchecked_gateway, make_tenant(unchecked_gateway.database_url)
    before = int(time.time())
    payload = body(
        recipient=None,
        to="+44 7700 900123",
        template=EVERY_COMPONENT,
        biz_opaque_callback_data="order-7",
    )
    message_id = send_ok(gateway, tenant, payload)
    response = read(gateway, tenant, f"/{message_id}")
    assert response.status_code == 200, response.text
    message = response.json()
    assert message["id"] == message_id
    assert message["messaging_product"] == "whatsapp"
    assert message["to"] == "447700900123"
    assert message["input"] == "+44 7700 900123"
    assert "recipient" not in message
    assert message["type"] == "template"
    assert message["template"] == EVERY_COMPONENT
    assert before - 1 <= int(message["timestamp"]) <= time.time() + 1
    assert message["timestamp"].isdigit()
    assert message["status"] == "pending"
    assert message["statuses"] == []
    assert "errors" not in message
    assert message["biz_opaque_callback_data"] == "order-7"


def test_a_bsuid_send_reads_back_with_its_recipient(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    message_id = send_ok(gateway, tenant, body(recipient="US.ENT.11815799212886844830"))
    message = read(gateway, tenant, f"/{message_id}").json()
    assert message["recipient"] == "US.ENT.11815799212886844830"
    assert message["input"] == "US.ENT.11815799212886844830"
    assert "to" not in message
    assert message["template"] == SEED_BODY["template"]
    assert message["status"] == "pending"
    assert "biz_opaque_callback_data" not in message


def test_the_single_read_and_the_listing_show_the_same_message(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    message_id = send_ok(gateway, tenant, body(biz_opaque_callback_data="cb"))
    [listed] = read(gateway, tenant).json()["data"]
    assert listed == read(gateway, tenant, f"/{message_id}").json()


def test_an_unknown_message_id_is_code_100(gateway: GatewayProcess, tenant: Tenant) -> None:
    error = graph_error(read(gateway, tenant, "/wamid.does-not-exist"), 100, 400)
    assert error["error_subcode"] == 33
    assert "wamid.does-not-exist" in error["error_data"]["details"]


def test_a_message_of_another_project_cannot_be_read_through_its_own_number(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    other = make_tenant(gateway.database_url)
    message_id = send_ok(gateway, other, SEED_BODY)
    graph_error(read(gateway, tenant, f"/{message_id}"), 100, 400)


@pytest.mark.parametrize("suffix", ["", "/wamid.any"], ids=["listing", "one message"])
def test_another_projects_number_looks_like_a_missing_one(
    gateway: GatewayProcess, tenant: Tenant, suffix: str
) -> None:
    other = make_tenant(gateway.database_url)
    send_ok(gateway, other, SEED_BODY)
    headers = {"X-API-Key": tenant.api_key}
    base = f"{gateway.base_url}/meta/whatsapp/v24.0"
    foreign = loopback.get(f"{base}/{other.phone_number_id}/messages{suffix}", headers=headers)
    missing = loopback.get(f"{base}/999999999999999/messages{suffix}", headers=headers)
    foreign_error = graph_error(foreign, 100, 400)
    missing_error = graph_error(missing, 100, 400)
    assert foreign_error["error_subcode"] == missing_error["error_subcode"] == 33
    assert foreign_error["message"] == missing_error["message"]
    assert foreign_error["error_data"]["details"] == missing_error["error_data"]["details"].replace(
        "999999999999999", other.phone_number_id
    )


@pytest.mark.parametrize("suffix", ["", "/wamid.any"], ids=["listing", "one message"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wg_not_a_key"}, {"Authorization": "Bearer wg_not_a_key"}],
    ids=["no key", "wrong key", "wrong bearer"],
)
def test_reads_need_a_valid_key(
    gateway: GatewayProcess, tenant: Tenant, suffix: str, headers: dict[str, str]
) -> None:
    response = loopback.get(messages_url(gateway, tenant, suffix), headers=headers)
    graph_error(response, 190, 401)


def test_a_bearer_key_reads_too(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = loopback.get(
        messages_url(gateway, tenant), headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert response.status_code == 200, response.text


def test_reads_refuse_an_unknown_graph_version(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/latest/{tenant.phone_number_id}/messages",
        headers={"X-API-Key": tenant.api_key},
    )
    assert "version" in graph_error(response, 100, 400)["error_data"]["details"]


@pytest.mark.parametrize(
    "path", ["/{pnid}/messages/wamid%00x", "/1%002/messages", "/1%002/messages/wamid.x"]
)
def test_ids_with_a_nul_character_are_not_found_rather_than_a_server_error(
    gateway: GatewayProcess, tenant: Tenant, path: str
) -> None:
    response = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0{path.format(pnid=tenant.phone_number_id)}",
        headers={"X-API-Key": tenant.api_key},
    )
    assert graph_error(response, 100, 400)["error_subcode"] == 33


# ---- the listing -------------------------------------------------------------------


def test_a_number_without_messages_lists_nothing(gateway: GatewayProcess, tenant: Tenant) -> None:
    response = read(gateway, tenant)
    assert response.status_code == 200
    assert response.json() == {"data": [], "paging": {"cursors": {}}}


def test_the_listing_is_newest_first(gateway: GatewayProcess, tenant: Tenant) -> None:
    sent = [send_ok(gateway, tenant, SEED_BODY) for _ in range(3)]
    ids, paging = listing(gateway, tenant)
    assert ids == sent[::-1]
    assert "next" not in paging
    assert "previous" not in paging


def test_the_listing_shows_only_the_numbers_own_messages(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, _ = filled
    other = make_tenant(gateway.database_url)
    theirs = send_ok(gateway, other, SEED_BODY)
    assert listing(gateway, other)[0] == [theirs]
    assert theirs not in listing(gateway, tenant, limit=100)[0]


def test_the_default_page_is_20_messages(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, newest_first = filled
    ids, paging = listing(gateway, tenant)
    assert ids == newest_first[:20]
    assert paging["cursors"]["after"]
    assert "next" in paging


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_limit_sets_the_page_size(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]], limit: int
) -> None:
    tenant, newest_first = filled
    ids, paging = listing(gateway, tenant, limit=limit)
    assert ids == newest_first[:limit]
    assert ("next" in paging) == (limit < MANY)


@pytest.mark.parametrize("limit", ["0", "101", "x", "", "-1", "1.5", "²"])
def test_a_limit_outside_1_to_100_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, limit: str
) -> None:
    error = graph_error(read(gateway, tenant, params={"limit": limit}), 100, 400)
    assert "limit" in error["error_data"]["details"]


def test_following_next_links_visits_every_message_once_in_order(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, newest_first = filled
    response = read(gateway, tenant, params={"limit": 10})
    pages: list[list[str]] = []
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([m["id"] for m in page["data"]])
        if "next" not in page["paging"]:
            break
        assert len(pages) < 10, "paging does not end"
        response = loopback.get(page["paging"]["next"], headers={"X-API-Key": tenant.api_key})
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == newest_first


def test_after_cursors_page_forward_and_before_cursors_page_back(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, newest_first = filled
    first, first_paging = listing(gateway, tenant, limit=10)
    second, second_paging = listing(
        gateway, tenant, limit=10, after=first_paging["cursors"]["after"]
    )
    third, third_paging = listing(
        gateway, tenant, limit=10, after=second_paging["cursors"]["after"]
    )
    assert first + second + third == newest_first
    assert "next" not in third_paging
    assert "previous" in third_paging

    back, back_paging = listing(gateway, tenant, limit=10, before=third_paging["cursors"]["before"])
    assert back == second
    again, again_paging = listing(
        gateway, tenant, limit=10, before=back_paging["cursors"]["before"]
    )
    assert again == first
    assert "previous" not in again_paging
    assert listing(gateway, tenant, limit=10, before=again_paging["cursors"]["before"])[0] == []


def test_previous_links_lead_back_to_the_newer_page(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, newest_first = filled
    _, paging = listing(
        gateway, tenant, limit=10, after=listing(gateway, tenant, limit=10)[1]["cursors"]["after"]
    )
    response = loopback.get(paging["previous"], headers={"X-API-Key": tenant.api_key})
    assert [m["id"] for m in response.json()["data"]] == newest_first[:10]


def test_paging_links_keep_the_filters(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, newest_first = filled
    _, paging = listing(gateway, tenant, limit=4, status="pending")
    following = loopback.get(paging["next"], headers={"X-API-Key": tenant.api_key})
    assert following.url.params["status"] == "pending"
    assert following.url.params["limit"] == "4"
    assert [m["id"] for m in following.json()["data"]] == newest_first[4:8]


@pytest.mark.parametrize(
    "params",
    [
        {"after": "nope"},
        {"before": "!!!"},
        {"after": cursor("seq:abc")},
        {"after": cursor("page:3")},
        {"before": cursor("seq:" + "9" * 30)},
    ],
    ids=["not base64", "punctuation", "not a number", "other kind", "out of range"],
)
def test_a_cursor_the_api_did_not_give_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, params: dict[str, str]
) -> None:
    error = graph_error(read(gateway, tenant, params=params), 100, 400)
    assert "cursor" in error["error_data"]["details"]


def test_before_and_after_together_are_code_100(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, _ = filled
    _, paging = listing(gateway, tenant, limit=5)
    both = {"before": paging["cursors"]["before"], "after": paging["cursors"]["after"]}
    graph_error(read(gateway, tenant, params=both), 100, 400)


@pytest.mark.parametrize("params", [{"colour": "blue"}, {"page": "2"}, {"Limit": "5"}])
def test_an_unknown_query_parameter_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, params: dict[str, str]
) -> None:
    error = graph_error(read(gateway, tenant, params=params), 100, 400)
    assert next(iter(params)) in error["error_data"]["details"]


# ---- filters -----------------------------------------------------------------------


def test_status_filters_the_listing(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, newest_first = filled
    assert listing(gateway, tenant, status="pending", limit=100)[0] == newest_first
    for status in ("sent", "delivered", "read", "failed"):
        assert listing(gateway, tenant, status=status)[0] == [], status


@pytest.mark.parametrize("status", ["seen", "PENDING", "accepted", ""])
def test_an_unknown_status_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, status: str
) -> None:
    error = graph_error(read(gateway, tenant, params={"status": status}), 100, 400)
    assert "status" in error["error_data"]["details"]


def iso(seconds: int) -> str:
    """An ISO 8601 UTC time with a Z."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_since_and_until_take_unix_seconds_and_iso_times(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    earlier = send_ok(gateway, tenant, SEED_BODY)
    later = send_ok(gateway, tenant, SEED_BODY)
    # Accepted ten seconds apart, without waiting ten (or one) seconds for it.
    sql(
        gateway.database_url,
        update(messages)
        .where(messages.c.id == earlier)
        .values(created_at=messages.c.created_at - 10_000),
    )
    t_earlier = int(read(gateway, tenant, f"/{earlier}").json()["timestamp"])
    t_later = int(read(gateway, tenant, f"/{later}").json()["timestamp"])
    assert t_later > t_earlier

    for since, until in [(t_later, t_earlier), (iso(t_later), iso(t_earlier))]:
        assert listing(gateway, tenant, since=since)[0] == [later]
        assert listing(gateway, tenant, until=until)[0] == [earlier]
        assert listing(gateway, tenant, since=since, until=until)[0] == []
        assert listing(gateway, tenant, since=until, until=since)[0] == [later, earlier]
    india = timezone(timedelta(hours=5, minutes=30))
    offset = datetime.fromtimestamp(t_later, india).isoformat()
    assert offset.endswith("+05:30")
    assert listing(gateway, tenant, since=offset)[0] == [later]


def test_a_time_window_around_now_finds_recent_messages(
    gateway: GatewayProcess, filled: tuple[Tenant, list[str]]
) -> None:
    tenant, newest_first = filled
    now = int(time.time())
    everything = {"limit": 100}
    assert listing(gateway, tenant, since=now - 3600, **everything)[0] == newest_first
    assert listing(gateway, tenant, since=iso(now + 3600), **everything)[0] == []
    assert listing(gateway, tenant, until=iso(now - 3600), **everything)[0] == []
    assert listing(gateway, tenant, until=now + 3600, **everything)[0] == newest_first


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize(
    "value",
    ["yesterday", "2026-13-01T00:00:00Z", "1.5", "1e9", "", "9" * 30, "2026-11-23T10:00:00+25:00"],
)
def test_an_unreadable_time_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, name: str, value: str
) -> None:
    error = graph_error(read(gateway, tenant, params={name: value}), 100, 400)
    assert name in error["error_data"]["details"]


@pytest.mark.parametrize("value", ["2026-11-23T10:00:00", "2026-11-23"])
def test_an_iso_time_without_a_zone_is_code_100(
    gateway: GatewayProcess, tenant: Tenant, value: str
) -> None:
    error = graph_error(read(gateway, tenant, params={"since": value}), 100, 400)
    assert "time zone" in error["error_data"]["details"]
