"""Delivery over real HTTP on loopback, on SQLite and on PostgreSQL.

Two kinds of gateway: the shared session gateway (worker + embedded sandbox, whose
deterministic recipients decide each message's fate), and one started here without a
worker, with a known webhook secret and verify token (for webhooks crafted here) and a
one-second message TTL (a `wagate worker` started after it has passed must expire it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Row, select, update

from tests import loopback
from tests.integration.test_send_endpoint import body, graph_error, send
from tests.support import (
    ADMIN,
    WAGATE,
    GatewayProcess,
    Tenant,
    database_url_for,
    dispose_database,
    make_tenant,
    sql,
    wait_until,
)
from wagate.adapters.store.engine import create_engine
from wagate.adapters.store.queue import SqlQueue
from wagate.adapters.store.tables import message_events, message_statuses, messages, suppressions
from wagate.domain.delivery import Outcome
from wagate.domain.errors import MESSAGE_EXPIRED

BACKENDS = ["sqlite", "postgres"]
APP_SECRET = "s3cret"
VERIFY_TOKEN = "tok"
TTL_S = 1
# Statuses come 0.05 s apart from the sandbox; a few seconds is plenty on a loaded machine.
DEADLINE_S = 5.0
# 9500 is refused twice: retries after ~1 s and ~2 s (the default backoff), then delivered.
RETRY_DEADLINE_S = 8.0


# ---- helpers -------------------------------------------------------------------------


def unique_phone(last_four: str) -> str:
    """A UK mobile number of its own, ending in the digits that pick its sandbox fate."""
    return f"+447{secrets.randbelow(10**5):05d}{last_four}"


def unique_bsuid(*, parent: bool = False) -> str:
    """A BSUID (or parent BSUID) of its own whose fate is the ordinary sent/delivered/read."""
    return f"US.{'ENT.' if parent else ''}{secrets.randbelow(10**12):012d}1234"


def accept(gateway: GatewayProcess, tenant: Tenant, **recipient: str) -> str:
    """Send a message through the gateway (`to=` or `recipient=`); its gateway id."""
    changes: dict[str, Any] = {"recipient": None, **recipient}
    response = send(gateway, tenant, body(**changes))
    assert response.status_code == 200, response.text
    return str(response.json()["messages"][0]["id"])


def read_message(gateway: GatewayProcess, tenant: Tenant, message_id: str) -> dict[str, Any]:
    """`GET .../messages/{id}`."""
    response = loopback.get(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages/{message_id}",
        headers={"X-API-Key": tenant.api_key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def settled(
    gateway: GatewayProcess, tenant: Tenant, message_id: str, timeout: float = DEADLINE_S
) -> dict[str, Any]:
    """The message once it is read or failed."""

    def final() -> dict[str, Any] | None:
        message = read_message(gateway, tenant, message_id)
        return message if message["status"] in ("read", "failed") else None

    return wait_until(final, timeout)


def timeline(message: dict[str, Any]) -> list[str]:
    """The statuses of a message's timeline, oldest first."""
    return [step["status"] for step in message["statuses"]]


def stored_message(database_url: str, message_id: str) -> Row[Any]:
    """The message's row."""
    [row] = sql(database_url, select(messages).where(messages.c.id == message_id))
    return row


def upstream_wamid(database_url: str, message_id: str) -> str:
    """The wamid Meta (the sandbox) gave the message."""
    wamid = stored_message(database_url, message_id).upstream_wamid
    assert wamid, f"message {message_id} was never forwarded"
    return str(wamid)


# ---- the shared gateway: worker and embedded sandbox ---------------------------------


@pytest.fixture(scope="module")
def served(gateway: GatewayProcess) -> Tenant:
    """A tenant whose number the shared gateway's worker already serves.

    The worker reloads its phone numbers every few seconds, so a new number's first
    message waits for that; it is paid here once instead of in every test.
    """
    tenant = make_tenant(gateway.database_url)
    message_id = accept(gateway, tenant, to=unique_phone("0000"))
    settled(gateway, tenant, message_id, timeout=15)
    return tenant


def test_a_message_reaches_read_with_sent_delivered_read_in_order(
    gateway: GatewayProcess, served: Tenant
) -> None:
    message_id = accept(gateway, served, to=unique_phone("0002"))
    message = settled(gateway, served, message_id)
    assert message["status"] == "read"
    assert "errors" not in message
    assert timeline(message) == ["sent", "delivered", "read"]
    stamps = [int(step["timestamp"]) for step in message["statuses"]]
    assert stamps == sorted(stamps)
    assert abs(stamps[0] - time.time()) < 60
    assert {step["pricing"]["category"] for step in message["statuses"]} == {"marketing_lite"}


@pytest.mark.parametrize("parent", [False, True], ids=["bsuid", "parent-bsuid"])
def test_a_bsuid_send_reaches_read(gateway: GatewayProcess, served: Tenant, parent: bool) -> None:
    bsuid = unique_bsuid(parent=parent)
    message_id = accept(gateway, served, recipient=bsuid)
    message = settled(gateway, served, message_id)
    assert message["status"] == "read"
    assert message["recipient"] == bsuid
    assert timeline(message) == ["sent", "delivered", "read"]


@pytest.mark.parametrize(
    ("last_four", "code"),
    [("9026", 131026), ("9049", 131049), ("9050", 131050)],
    ids=["undeliverable", "ecosystem-limit", "stopped-marketing"],
)
def test_a_recipient_meta_does_not_deliver_to_ends_failed_with_metas_code(
    gateway: GatewayProcess, served: Tenant, last_four: str, code: int
) -> None:
    message_id = accept(gateway, served, to=unique_phone(last_four))
    message = settled(gateway, served, message_id)
    assert message["status"] == "failed"
    [error] = message["errors"]
    assert error["code"] == code
    assert error["title"]
    assert error["error_data"]["details"]
    assert timeline(message) == ["failed"]
    assert message["statuses"][0]["errors"][0]["code"] == code


def test_a_recipients_stop_is_recorded_as_a_suppression(
    gateway: GatewayProcess, served: Tenant
) -> None:
    phone = unique_phone("9050")
    wa_id = phone.lstrip("+")
    message_id = accept(gateway, served, to=phone)
    assert settled(gateway, served, message_id)["status"] == "failed"
    rows = wait_until(
        lambda: sql(
            gateway.database_url,
            select(suppressions.c.value).where(suppressions.c.recipient == wa_id),
        ),
        DEADLINE_S,
    )
    assert [row.value for row in rows] == ["stop"]


def test_a_server_error_twice_is_retried_until_the_message_is_read(
    gateway: GatewayProcess, served: Tenant
) -> None:
    message_id = accept(gateway, served, to=unique_phone("9500"))
    message = settled(gateway, served, message_id, timeout=RETRY_DEADLINE_S)
    assert message["status"] == "read"
    assert "errors" not in message
    assert timeline(message) == ["sent", "delivered", "read"]
    assert stored_message(gateway.database_url, message_id).attempts == 3
    stats = loopback.get(f"{gateway.base_url}/sandbox/_stats", headers=ADMIN, timeout=10).json()
    number = stats["numbers"][served.phone_number_id]
    assert number["errors"].get("131000") == 2


def test_the_read_api_shows_the_last_upstream_error_while_retrying_then_metas_wamid(
    gateway: GatewayProcess, served: Tenant
) -> None:
    message_id = accept(gateway, served, to=unique_phone("9500"))

    def retrying() -> dict[str, Any] | None:
        message = read_message(gateway, served, message_id)
        return message if message["last_error"] is not None else None

    message = wait_until(retrying, RETRY_DEADLINE_S, interval=0.02, what="a last_error")
    assert message["status"] == "pending"
    assert message["upstream_wamid"] is None
    error = message["last_error"]
    assert (error["code"], error["title"]) == (131000, "Something went wrong")
    assert error["message"]
    assert abs(int(error["at"]) - time.time()) < 30
    assert "errors" not in message  # `errors` stays the failure's; the message has not failed

    message = settled(gateway, served, message_id, timeout=RETRY_DEADLINE_S)
    assert message["status"] == "read"
    assert message["last_error"] is None
    wamid = upstream_wamid(gateway.database_url, message_id)
    assert message["upstream_wamid"] == wamid != message_id
    listing = f"{gateway.base_url}/meta/whatsapp/v24.0/{served.phone_number_id}/messages"
    keyed = {"X-API-Key": served.api_key}
    found = loopback.get(listing, params={"upstream_wamid": wamid}, headers=keyed, timeout=10)
    assert found.status_code == 200, found.text
    assert [(m["id"], m["upstream_wamid"]) for m in found.json()["data"]] == [(message_id, wamid)]
    listed = loopback.get(listing, params={"limit": "100"}, headers=keyed, timeout=10).json()[
        "data"
    ]
    assert {"upstream_wamid", "last_error"} <= set(listed[0])
    empty = loopback.get(
        listing, params={"upstream_wamid": "wamid.nobody"}, headers=keyed, timeout=10
    )
    assert empty.json()["data"] == []
    # Another project's key finds nothing by the wamid: the number is not its own.
    other = make_tenant(gateway.database_url)
    foreign = loopback.get(
        listing, params={"upstream_wamid": wamid}, headers={"X-API-Key": other.api_key}, timeout=10
    )
    assert foreign.status_code == 400
    assert foreign.json()["error"]["error_subcode"] == 33


def test_a_clicked_message_is_read_and_its_click_is_stored(
    gateway: GatewayProcess, served: Tenant
) -> None:
    message_id = accept(gateway, served, to=unique_phone("9001"))
    assert settled(gateway, served, message_id)["status"] == "read"
    wamid = upstream_wamid(gateway.database_url, message_id)
    clicks = wait_until(
        lambda: sql(
            gateway.database_url,
            select(message_events).where(message_events.c.upstream_wamid == wamid),
        ),
        DEADLINE_S,
    )
    [click] = clicks
    assert click.kind == "marketing_messages_link_click"
    data = json.loads(click.payload)["marketing_messages_link_click_data"]
    assert data["click_id"]
    assert data["click_component"] == "cta"


# ---- crafted webhooks: a gateway without a worker, with a known secret ----------------


@pytest.fixture(scope="module", params=BACKENDS)
def hooks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway without a worker: app secret `s3cret`, verify token `tok`, a 1 s message TTL."""
    tmp = tmp_path_factory.mktemp(f"hooks-{request.param}")
    url = database_url_for(request.param, tmp)
    process = GatewayProcess(
        url,
        tmp / "gateway.log",
        WAGATE_META_APP_SECRET=APP_SECRET,
        WAGATE_META_VERIFY_TOKEN=VERIFY_TOKEN,
        WAGATE_MESSAGE_TTL_SECONDS=str(TTL_S),
        WAGATE_WORKER="0",
    )
    try:
        yield process.start()
    finally:
        process.stop()
        dispose_database(url)


@pytest.fixture
def hooks_tenant(hooks: GatewayProcess) -> Tenant:
    """A tenant of its own on the crafted-webhook gateway."""
    return make_tenant(hooks.database_url)


@pytest.fixture
def forwarded(hooks: GatewayProcess, hooks_tenant: Tenant) -> tuple[str, str]:
    """A message accepted over HTTP and marked as handed to Meta: (gateway id, upstream wamid)."""
    message_id = accept(hooks, hooks_tenant, to=unique_phone("1234"))
    wamid = f"wamid.TEST{secrets.token_hex(8).upper()}"
    sql(
        hooks.database_url,
        update(messages)
        .where(messages.c.id == message_id)
        .values(state="forwarded", upstream_wamid=wamid),
    )
    return message_id, wamid


BASE_TS = int(time.time()) - 600


def status(wamid: str, kind: str, offset: int = 0, **extra: Any) -> dict[str, Any]:
    """One entry of `statuses`, `offset` seconds after a fixed base time."""
    return {
        "id": wamid,
        "status": kind,
        "timestamp": str(BASE_TS + offset),
        "recipient_id": "447700901234",
        "pricing": {
            "billable": True,
            "pricing_model": "PMP",
            "type": "regular",
            "category": "marketing_lite",
        },
        **extra,
    }


def failed(wamid: str, offset: int = 0, code: int = 131026) -> dict[str, Any]:
    """A `failed` status with Meta's error."""
    return {
        "id": wamid,
        "status": "failed",
        "timestamp": str(BASE_TS + offset),
        "recipient_id": "447700901234",
        "errors": [
            {
                "code": code,
                "title": "Message undeliverable",
                "message": "Message undeliverable",
                "error_data": {"details": "The recipient cannot receive WhatsApp messages"},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }
        ],
    }


def change(*statuses: dict[str, Any], field: str = "messages", **value: Any) -> dict[str, Any]:
    """One change carrying `statuses` (and any other value keys)."""
    return {
        "field": field,
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": "1065403"},
            "statuses": list(statuses),
            **value,
        },
    }


def payload(*changes: dict[str, Any]) -> dict[str, Any]:
    """Meta's webhook envelope around `changes`."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": list(changes)}],
    }


def hub_signature(raw: bytes, secret: str = APP_SECRET) -> str:
    """`X-Hub-Signature-256` as Meta computes it (independently of the gateway's code)."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def deliver(
    gateway: GatewayProcess,
    content: dict[str, Any] | bytes,
    *,
    signature: str | None = "sign",
) -> httpx.Response:
    """POST a webhook, signed with the app secret unless a signature (or None) is given."""
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers["X-Hub-Signature-256"] = hub_signature(raw)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return loopback.post(
        f"{gateway.base_url}/webhooks/meta", content=raw, headers=headers, timeout=10
    )


def delivered_ok(
    gateway: GatewayProcess, *statuses: dict[str, Any], **value: Any
) -> dict[str, Any]:
    """Deliver statuses (and other value keys) in one signed POST; assert 200, return the answer."""
    response = deliver(gateway, payload(change(*statuses, **value)))
    assert response.status_code == 200, response.text
    return dict(response.json())


def stored_statuses(database_url: str, wamid: str) -> list[str]:
    """Every status stored for a wamid."""
    rows = sql(
        database_url,
        select(message_statuses.c.status)
        .where(message_statuses.c.upstream_wamid == wamid)
        .order_by(message_statuses.c.seq),
    )
    return [row.status for row in rows]


def verify(gateway: GatewayProcess, params: dict[str, str]) -> httpx.Response:
    """Meta's subscription check."""
    return loopback.get(f"{gateway.base_url}/webhooks/meta", params=params, timeout=10)


def test_verification_with_the_right_token_answers_the_challenge(hooks: GatewayProcess) -> None:
    response = verify(
        hooks,
        {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN},
    )
    assert response.status_code == 200
    assert response.text == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "wrong"},
        {"hub.mode": "subscribe", "hub.challenge": "42"},
        {"hub.mode": "unsubscribe", "hub.challenge": "42", "hub.verify_token": VERIFY_TOKEN},
    ],
    ids=["wrong-token", "no-token", "wrong-mode"],
)
def test_verification_without_the_right_token_is_refused_with_403(
    hooks: GatewayProcess, params: dict[str, str]
) -> None:
    response = verify(hooks, params)
    graph_error(response, 10, 403)
    assert "42" not in response.text


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "sha256=" + "0" * 64,
        "other secret",
        "other body",
        "no prefix",
    ],
    ids=["missing", "empty", "zeros", "other-secret", "other-body", "no-prefix"],
)
def test_a_webhook_without_a_valid_signature_is_refused_and_stores_nothing(
    hooks: GatewayProcess,
    hooks_tenant: Tenant,
    forwarded: tuple[str, str],
    signature: str | None,
) -> None:
    message_id, wamid = forwarded
    raw = json.dumps(payload(change(status(wamid, "read")))).encode()
    if signature == "other secret":
        signature = hub_signature(raw, "not-the-secret")
    elif signature == "other body":
        signature = hub_signature(raw + b" ")
    elif signature == "no prefix":
        signature = hub_signature(raw).removeprefix("sha256=")
    response = deliver(hooks, raw, signature=signature)
    graph_error(response, 190, 401)
    assert stored_statuses(hooks.database_url, wamid) == []
    assert read_message(hooks, hooks_tenant, message_id)["status"] == "pending"


def test_statuses_out_of_order_end_read_with_each_status_once(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    delivered_ok(hooks, status(wamid, "read", 2))
    # `read` may come without `delivered` (or `sent`) before it.
    assert read_message(hooks, hooks_tenant, message_id)["status"] == "read"
    delivered_ok(hooks, status(wamid, "delivered", 1))
    delivered_ok(hooks, status(wamid, "sent", 0))
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "read"
    assert timeline(message) == ["sent", "delivered", "read"]


def test_duplicate_deliveries_store_each_status_once(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    batch = [status(wamid, "sent", 0), status(wamid, "delivered", 1), status(wamid, "read", 2)]
    first = delivered_ok(hooks, *batch)
    assert first["stored"] == 3
    again = delivered_ok(hooks, *batch)
    assert again["stored"] == 0
    assert again["duplicates"] == 3
    # The same update twice inside one POST, too.
    delivered_ok(hooks, status(wamid, "read", 2), status(wamid, "read", 2))
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "read"
    assert timeline(message) == ["sent", "delivered", "read"]
    assert sorted(stored_statuses(hooks.database_url, wamid)) == ["delivered", "read", "sent"]


def test_a_failed_after_read_does_not_change_the_message(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    delivered_ok(hooks, status(wamid, "sent", 0), status(wamid, "read", 1))
    delivered_ok(hooks, failed(wamid, 2))
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "read"
    assert "errors" not in message
    assert stored_message(hooks.database_url, message_id).error_code is None


def test_a_read_and_a_failed_in_one_delivery_leave_the_message_read_without_an_error(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    delivered_ok(hooks, status(wamid, "read", 1), failed(wamid, 2))
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "read"
    row = stored_message(hooks.database_url, message_id)
    assert (row.status, row.error_code, row.error_details) == ("read", None, None)


def test_delivered_after_read_does_not_move_the_message_back(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    delivered_ok(hooks, status(wamid, "sent", 0), status(wamid, "read", 2))
    answer = delivered_ok(hooks, status(wamid, "delivered", 1))
    assert answer["moved"] == 0
    assert read_message(hooks, hooks_tenant, message_id)["status"] == "read"


def test_a_failed_status_fails_the_message_with_metas_error(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    delivered_ok(hooks, failed(wamid, 0, code=131049))
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "failed"
    [error] = message["errors"]
    assert error["code"] == 131049
    assert error["error_data"]["details"] == "The recipient cannot receive WhatsApp messages"
    # Failed is final: a late read does not revive it.
    delivered_ok(hooks, status(wamid, "read", 1))
    assert read_message(hooks, hooks_tenant, message_id)["status"] == "failed"


def record_forwarded(database_url: str, phone_number_id: str, message_id: str, wamid: str) -> None:
    """Do what a worker does once Meta accepted a message: claim it, record Meta's wamid."""

    async def work() -> None:
        engine = create_engine(database_url)
        queue = SqlQueue(engine)
        try:
            claimed = await queue.claim(
                phone_number_id, "test-worker", time.time(), lease_s=60, horizon_s=0.5, limit=10
            )
            [message] = [c for c in claimed if c.id == message_id]
            outcome = Outcome(
                message.seq,
                "test-worker",
                "forwarded",
                int(time.time() * 1000),
                wamid=wamid,
                upstream_status="accepted",
            )
            await queue.record(outcome)
        finally:
            await queue.close()
            await engine.dispose()

    asyncio.run(work())


def test_statuses_that_arrive_before_the_wamid_is_recorded_are_applied_then(
    hooks: GatewayProcess, hooks_tenant: Tenant
) -> None:
    message_id = accept(hooks, hooks_tenant, to=unique_phone("1234"))
    wamid = f"wamid.EARLY{secrets.token_hex(8).upper()}"
    # Meta's webhook can beat the worker's commit of the wamid Meta just returned.
    delivered_ok(hooks, status(wamid, "sent", 0), status(wamid, "read", 1))
    record_forwarded(hooks.database_url, hooks_tenant.phone_number_id, message_id, wamid)
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "read"
    assert timeline(message) == ["sent", "read"]


def test_a_failure_that_arrives_before_the_wamid_is_recorded_keeps_metas_error(
    hooks: GatewayProcess, hooks_tenant: Tenant
) -> None:
    message_id = accept(hooks, hooks_tenant, to=unique_phone("1234"))
    wamid = f"wamid.EARLY{secrets.token_hex(8).upper()}"
    delivered_ok(hooks, failed(wamid, 0, code=131049))
    record_forwarded(hooks.database_url, hooks_tenant.phone_number_id, message_id, wamid)
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "failed"
    [error] = message["errors"]
    assert error["code"] == 131049
    assert error["error_data"]["details"] == "The recipient cannot receive WhatsApp messages"


def test_one_bad_status_in_a_batch_does_not_cost_the_good_ones(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    answer = delivered_ok(
        hooks,
        status(wamid, "sent", 0),
        status(f"wamid.NUL\u0000{secrets.token_hex(4)}", "sent", 0),
        status("wamid." + "Z" * 5000, "delivered", 1),
        {**status(wamid, "delivered", 1), "timestamp": "1e30"},
        status(wamid, "read", 2),
    )
    assert (answer["stored"], answer["rejected"]) == (2, 3)
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "read"
    assert timeline(message) == ["sent", "read"]


def test_a_click_meta_delivers_twice_is_stored_once(
    hooks: GatewayProcess, forwarded: tuple[str, str]
) -> None:
    _, wamid = forwarded
    click = {
        "action_type": "marketing_messages_link_click",
        "timestamp": str(BASE_TS),
        "marketing_messages_link_click_data": {
            "click_id": f"click.{secrets.token_hex(6)}",
            "tracking_token": wamid,
            "click_component": "cta",
        },
    }
    for _ in range(2):
        delivered_ok(hooks, user_actions=[click], contacts=[{"wa_id": "447700901234"}])
    rows = sql(
        hooks.database_url, select(message_events).where(message_events.c.upstream_wamid == wamid)
    )
    assert len(rows) == 1


def test_statuses_of_an_unknown_wamid_are_accepted(hooks: GatewayProcess) -> None:
    answer = delivered_ok(hooks, status(f"wamid.UNKNOWN{secrets.token_hex(6)}", "delivered"))
    assert answer["moved"] == 0


def test_unknown_keys_fields_and_status_kinds_are_tolerated(
    hooks: GatewayProcess, hooks_tenant: Tenant, forwarded: tuple[str, str]
) -> None:
    message_id, wamid = forwarded
    content = payload(
        change(
            status(wamid, "deleted", 0),
            status(
                wamid,
                "delivered",
                1,
                new_status_key={"nested": [1, 2]},
                pricing={"billable": False, "category": "marketing_lite", "new_price_key": 1},
            ),
            new_value_key="x",
        ),
        {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT", "ban_info": {}}},
        {**change(field="message_template_status_update"), "new_change_key": True},
    )
    content["new_top_level_key"] = {"a": 1}
    content["entry"][0]["new_entry_key"] = 123
    content["entry"][0]["time"] = 1_700_000_000
    response = deliver(hooks, content)
    assert response.status_code == 200, response.text
    message = read_message(hooks, hooks_tenant, message_id)
    assert message["status"] == "delivered"
    assert timeline(message) == ["delivered"]


def test_a_status_kind_meta_may_add_later_is_accepted_alone(
    hooks: GatewayProcess, forwarded: tuple[str, str]
) -> None:
    _, wamid = forwarded
    delivered_ok(hooks, status(wamid, "deleted"))
    assert stored_statuses(hooks.database_url, wamid) == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"hello": "world"}',
        b"[]",
        b"not json at all",
        b'{"object": "whatsapp_business_account", "entry": "none"}',
        b'{"object": "whatsapp_business_account", "entry": [{"changes": []}]}',
        b'{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": '
        b'[{"field": "messages", "value": {"statuses": [{"status": "read"}]}}]}]}',
    ],
    ids=["other-object", "array", "not-json", "entry-not-list", "entry-without-id", "status-no-id"],
)
def test_a_signed_body_that_is_not_metas_payload_is_a_400(
    hooks: GatewayProcess, raw: bytes
) -> None:
    graph_error(deliver(hooks, raw), 100, 400)


# ---- TTL: a message that waited too long is failed, never sent --------------------------
# The crafted-webhook gateway gives every message a one-second TTL and has no worker;
# the others' messages are marked forwarded at once, so the TTL only matters here.


def test_a_message_past_its_ttl_is_failed_by_the_worker_without_being_sent(
    hooks: GatewayProcess, hooks_tenant: Tenant, tmp_path: Path
) -> None:
    message_id = accept(hooks, hooks_tenant, to=unique_phone("0003"))
    row = stored_message(hooks.database_url, message_id)
    assert row.expires_at - row.created_at == TTL_S * 1000
    wait_until(lambda: time.time() * 1000 > row.expires_at, TTL_S + 5, what="the TTL passing")
    assert read_message(hooks, hooks_tenant, message_id)["status"] == "pending"
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [WAGATE, "worker"],
            env={
                **hooks.env,
                # Were the message sent after all, it would go to this gateway's sandbox.
                "WAGATE_PUBLIC_URL": hooks.base_url,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        message = settled(hooks, hooks_tenant, message_id, timeout=20)
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
    assert message["status"] == "failed", message
    [error] = message["errors"]
    assert error["code"] == MESSAGE_EXPIRED
    assert error["title"] == "Message expired before it could be sent"
    assert "time to live" in error["error_data"]["details"]
    assert (
        loopback.get(f"{hooks.base_url}/sandbox/_stats", headers=ADMIN, timeout=10).json()[
            "requests"
        ]
        == 0
    )
