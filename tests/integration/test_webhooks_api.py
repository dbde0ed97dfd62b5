"""The customer webhooks management API over real HTTP, on SQLite and PostgreSQL: Kapso's
routes and bodies, scoped to the project of the key, secrets shown once, Graph errors."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests import loopback
from tests.support import (
    GatewayPool,
    GatewayProcess,
    Tenant,
    fail_for_good,
    make_tenant,
    running_gateway,
)
from wagate.adapters.store.notify import SqlNotifications
from wagate.adapters.store.sql import SqlStore
from wagate.domain.notifications import WebhookEndpoint
from wagate.domain.notify_formats import mask_secret

BASE = "/platform/v1/whatsapp"
URL = "https://hooks.example.com/wagate"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, gateway_pool: GatewayPool) -> GatewayProcess:
    """A real gateway without a worker: deliveries stay as the test leaves them."""
    return gateway_pool.get(request.param, WAGATE_WORKER="0")


def call(
    gateway: GatewayProcess,
    method: str,
    path: str,
    *,
    key: str | None,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to the management API with `key` (None: no key)."""
    headers = {} if key is None else {"X-API-Key": key}
    return loopback.request(
        method,
        f"{gateway.base_url}{BASE}{path}",
        json=body,
        params=params,
        headers=headers,
        timeout=10,
    )


def data(response: httpx.Response, status: int = 200) -> Any:
    """The `data` of a successful answer."""
    assert response.status_code == status, response.text
    return response.json()["data"]


def graph_error(response: httpx.Response, status: int, code: int = 100) -> dict[str, Any]:
    """The Graph error of a refused request."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert "fbtrace_id" in error
    return error


def create(gateway: GatewayProcess, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    """A new webhook of the tenant's number, as the create answer shows it."""
    body = {"whatsapp_webhook": {"url": URL, **fields}}
    path = f"/phone_numbers/{tenant.phone_number_id}/webhooks"
    created: dict[str, Any] = data(call(gateway, "POST", path, key=tenant.api_key, body=body), 201)
    return created


def stored(database_url: str, webhook_id: str) -> WebhookEndpoint | None:
    """A webhook as the store opens it (secret in the clear)."""

    async def work() -> WebhookEndpoint | None:
        store = SqlStore.from_url(database_url)
        try:
            return await SqlNotifications(store.engine, store.secrets).get_endpoint(webhook_id)
        finally:
            await store.close()

    return asyncio.run(work())


def is_iso(value: str) -> bool:
    """Whether `value` is an ISO 8601 time in UTC."""
    return value.endswith("Z") and datetime.fromisoformat(value.replace("Z", "+00:00")) is not None


def test_a_project_adds_lists_shows_updates_and_removes_its_webhooks(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url)
    number_path = f"/phone_numbers/{tenant.phone_number_id}/webhooks"
    created = create(
        gateway,
        tenant,
        events=["whatsapp.message.delivered", "whatsapp.message.read"],
        headers={"X-Source": "wagate"},
    )
    webhook_id = created["id"]
    secret = created["secret_key"]
    assert created == {
        "id": webhook_id,
        "phone_number_id": tenant.phone_number_id,
        "url": URL,
        "kind": "kapso",
        "events": ["whatsapp.message.delivered", "whatsapp.message.read"],
        "active": True,
        "headers": {"X-Source": "wagate"},
        "secret_key": secret,
        "paused": False,
        "paused_at": None,
        "failing_since": None,
        "created_at": created["created_at"],
        "updated_at": created["created_at"],
    }
    assert is_iso(created["created_at"])
    endpoint = stored(gateway.database_url, webhook_id)
    assert endpoint is not None
    assert endpoint.secret == secret

    listed = data(call(gateway, "GET", number_path, key=tenant.api_key))
    flat = data(call(gateway, "GET", f"/webhooks/{webhook_id}", key=tenant.api_key))
    nested = data(call(gateway, "GET", f"{number_path}/{webhook_id}", key=tenant.api_key))
    assert listed == [flat]
    assert nested == flat
    assert flat["secret_key"] == mask_secret(secret)
    assert secret not in str(flat)

    patch = {"whatsapp_webhook": {"url": "https://other.example.com/in", "active": False}}
    updated = data(
        call(gateway, "PATCH", f"/webhooks/{webhook_id}", key=tenant.api_key, body=patch)
    )
    assert updated["url"] == "https://other.example.com/in"
    assert updated["active"] is False
    assert updated["secret_key"] == mask_secret(secret)
    assert updated["headers"] == {"X-Source": "wagate"}
    assert updated["updated_at"] >= created["updated_at"]

    removed = call(gateway, "DELETE", f"{number_path}/{webhook_id}", key=tenant.api_key)
    assert data(removed) == {"id": webhook_id, "deleted": True}
    gone = call(gateway, "GET", f"/webhooks/{webhook_id}", key=tenant.api_key)
    assert graph_error(gone, 400)["error_subcode"] == 33
    assert data(call(gateway, "GET", number_path, key=tenant.api_key)) == []
    assert stored(gateway.database_url, webhook_id) is None


def test_a_bare_body_works_too_and_defaults_are_kapsos(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    path = f"/phone_numbers/{tenant.phone_number_id}/webhooks"
    created = data(call(gateway, "POST", path, key=tenant.api_key, body={"url": URL}), 201)
    assert created["kind"] == "kapso"
    assert created["events"] == [
        "whatsapp.message.sent",
        "whatsapp.message.delivered",
        "whatsapp.message.read",
        "whatsapp.message.failed",
    ]
    assert len(created["secret_key"]) == 64


def test_a_standard_secret_rotates_with_the_old_one_still_signing(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url)
    created = create(gateway, tenant, kind="standard", secret_key=STANDARD_SECRET)
    assert created["secret_key"] == STANDARD_SECRET
    path = f"/webhooks/{created['id']}"
    rotated = data(call(gateway, "PATCH", path, key=tenant.api_key, body={"rotate_secret": True}))
    assert rotated["secret_key"].startswith("whsec_")
    assert rotated["secret_key"] != STANDARD_SECRET
    endpoint = stored(gateway.database_url, created["id"])
    assert endpoint is not None
    assert endpoint.secret == rotated["secret_key"]
    assert endpoint.previous_secret == STANDARD_SECRET
    assert endpoint.previous_secret_until is not None
    assert endpoint.previous_secret_until > time.time() * 1000 + 23 * 3600 * 1000
    shown = data(call(gateway, "GET", path, key=tenant.api_key))
    assert shown["secret_key"] == mask_secret(rotated["secret_key"])


def test_test_events_deliveries_dead_letters_replay_and_pause(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    webhook_id = create(gateway, tenant)["id"]
    path = f"/webhooks/{webhook_id}"
    key = tenant.api_key
    first = data(call(gateway, "POST", f"{path}/test", key=key), 202)
    assert first["event"] == "whatsapp.webhook.test"
    assert first["delivery_id"].startswith("evt_")
    dead = fail_for_good(gateway.database_url, webhook_id)
    assert dead == [first["delivery_id"]]
    second = data(call(gateway, "POST", f"{path}/test", key=key), 202)["delivery_id"]

    page = call(gateway, "GET", f"{path}/deliveries", key=key, params={"limit": "1"})
    assert page.status_code == 200, page.text
    [newest] = page.json()["data"]
    assert (newest["id"], newest["state"], newest["event"]) == (
        second,
        "pending",
        "whatsapp.webhook.test",
    )
    assert newest["data"]["phone_number_id"] == tenant.phone_number_id
    assert newest["data"]["test"] is True
    cursor = page.json()["paging"]["cursors"]["before"]
    older = call(
        gateway, "GET", f"{path}/deliveries", key=key, params={"limit": "1", "before": cursor}
    )
    [letter] = older.json()["data"]
    assert (letter["id"], letter["state"], letter["attempts"]) == (dead[0], "dead", 1)
    assert letter["last_status_code"] == 503
    dead_only = call(gateway, "GET", f"{path}/deliveries", key=key, params={"state": "dead"})
    assert [d["id"] for d in dead_only.json()["data"]] == dead
    assert dead_only.json()["paging"]["cursors"]["before"] is None
    attempts = call(gateway, "GET", f"{path}/attempts", key=key).json()["data"]
    assert [(a["delivery_id"], a["status_code"], a["error"]) for a in attempts] == [
        (dead[0], 503, "HTTP 503")
    ]

    named = call(gateway, "POST", f"{path}/replay", key=key, body={"delivery_id": dead[0]})
    assert data(named) == {"webhook_id": webhook_id, "replayed": 1}
    again = call(gateway, "POST", f"{path}/replay", key=key, body={"delivery_id": dead[0]})
    assert "no dead delivery" in str(graph_error(again, 400))
    assert data(call(gateway, "POST", f"{path}/replay", key=key)) == {
        "webhook_id": webhook_id,
        "replayed": 0,
    }
    states = call(gateway, "GET", f"{path}/deliveries", key=key).json()["data"]
    assert {d["id"]: d["state"] for d in states} == {dead[0]: "pending", second: "pending"}

    paused = data(call(gateway, "POST", f"{path}/pause", key=key))
    assert paused["paused"] is True
    assert is_iso(paused["paused_at"])
    # Paused: nothing of it is handed to a notifier.
    assert fail_for_good(gateway.database_url, webhook_id) == []
    resumed = data(call(gateway, "POST", f"{path}/resume", key=key))
    assert (resumed["paused"], resumed["paused_at"], resumed["failing_since"]) == (
        False,
        None,
        None,
    )
    assert sorted(fail_for_good(gateway.database_url, webhook_id)) == sorted([dead[0], second])


def test_another_projects_key_sees_none_of_its_webhooks(gateway: GatewayProcess) -> None:
    owner, other = make_tenant(gateway.database_url), make_tenant(gateway.database_url)
    webhook_id = create(gateway, owner)["id"]
    theirs = f"/phone_numbers/{owner.phone_number_id}/webhooks"
    mine = f"/phone_numbers/{other.phone_number_id}/webhooks"
    attempts: list[tuple[str, str, Any]] = [
        ("GET", theirs, None),
        ("POST", theirs, {"url": URL}),
        ("PATCH", f"/webhooks/{webhook_id}", {"active": False}),
        # Under the caller's own number, another number's webhook is missing as well.
        ("GET", f"{mine}/{webhook_id}", None),
    ]
    for suffix, method in (
        ("", "GET"),
        ("", "DELETE"),
        ("/test", "POST"),
        ("/deliveries", "GET"),
        ("/attempts", "GET"),
        ("/replay", "POST"),
        ("/pause", "POST"),
        ("/resume", "POST"),
    ):
        attempts += [
            (method, f"/webhooks/{webhook_id}{suffix}", None),
            (method, f"{theirs}/{webhook_id}{suffix}", None),
        ]
    for method, path, body in attempts:
        error = graph_error(call(gateway, method, path, key=other.api_key, body=body), 400)
        assert error["error_subcode"] == 33, (method, path)
        assert owner.project_id not in str(error)
    shown = data(call(gateway, "GET", f"/webhooks/{webhook_id}", key=owner.api_key))
    assert (shown["active"], shown["paused"]) == (True, False)
    assert data(call(gateway, "GET", mine, key=other.api_key)) == []


def test_every_route_wants_a_live_key(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    webhook_id = create(gateway, tenant)["id"]
    for method, path in (
        ("GET", f"/phone_numbers/{tenant.phone_number_id}/webhooks"),
        ("POST", f"/phone_numbers/{tenant.phone_number_id}/webhooks"),
        ("GET", f"/webhooks/{webhook_id}"),
        ("PATCH", f"/webhooks/{webhook_id}"),
        ("DELETE", f"/webhooks/{webhook_id}"),
        ("POST", f"/webhooks/{webhook_id}/test"),
        ("GET", f"/webhooks/{webhook_id}/deliveries"),
        ("POST", f"/webhooks/{webhook_id}/replay"),
    ):
        for key in (None, "wg_wrong"):
            graph_error(call(gateway, method, path, key=key, body={"url": URL}), 401, code=190)
    assert stored(gateway.database_url, webhook_id) is not None


def test_mistakes_are_graph_errors_that_say_what_to_fix(gateway: GatewayProcess) -> None:
    tenant = make_tenant(gateway.database_url)
    webhook_id = create(gateway, tenant)["id"]
    number_path = f"/phone_numbers/{tenant.phone_number_id}/webhooks"
    one = f"/webhooks/{webhook_id}"
    cases: list[tuple[str, str, Any, dict[str, str] | None, str]] = [
        ("POST", number_path, {"url": "ftp://hooks.example.com/"}, None, "http:// or https://"),
        ("POST", number_path, {"url": URL, "kind": "svix"}, None, "kind"),
        ("POST", number_path, {"url": URL, "events": []}, None, "events"),
        ("POST", number_path, {"url": URL, "events": ["whatsapp.message.bounced"]}, None, "events"),
        (
            "POST",
            number_path,
            {"url": URL, "headers": {"X-Webhook-Signature": "x"}},
            None,
            "set by wagate",
        ),
        ("POST", number_path, {"url": URL, "headers": {"Bad Name": "x"}}, None, "header name"),
        ("POST", number_path, {"url": URL, "secret_key": "short"}, None, "secret_key"),
        (
            "POST",
            number_path,
            {"url": URL, "kind": "standard", "secret_key": "x" * 20},
            None,
            "whsec_",
        ),
        ("POST", number_path, {"url": URL, "colour": "red"}, None, "colour"),
        ("POST", number_path, {}, None, "url"),
        ("POST", number_path, "not an object", None, "Invalid body"),
        ("PATCH", one, {}, None, "nothing to change"),
        ("PATCH", one, {"secret_key": "s" * 20, "rotate_secret": True}, None, "not both"),
        ("GET", f"{one}/deliveries", None, {"state": "lost"}, "state"),
        ("GET", f"{one}/deliveries", None, {"limit": "0"}, "limit"),
        ("GET", f"{one}/deliveries", None, {"before": "nonsense"}, "before"),
        ("POST", f"{one}/replay", {"delivery_id": "evt_none"}, None, "no dead delivery"),
    ]
    for method, path, body, params, words in cases:
        response = call(gateway, method, path, key=tenant.api_key, body=body, params=params)
        error = graph_error(response, 400)
        assert words in str(error), (method, path, body, error)
    [still] = data(call(gateway, "GET", number_path, key=tenant.api_key))
    assert still["id"] == webhook_id
    missing_number = call(gateway, "GET", "/phone_numbers/999/webhooks", key=tenant.api_key)
    assert graph_error(missing_number, 400)["error_subcode"] == 33


class Received:
    """What a customer's receiver on loopback was sent: (path, headers, body) per POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = threading.Condition()

    def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        """Until `count` POSTs have arrived (or fail after `timeout_s`)."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.posts) >= count, timeout_s), self.posts


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """A receiver answering 200 to every POST, and its base URL."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with received.arrived:
                received.posts.append((self.path, dict(self.headers), body))
                received.arrived.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_a_test_event_reaches_the_receiver_signed_in_each_format(
    database_url: str, tmp_path: Path, receiver: tuple[str, Received]
) -> None:
    """With the worker's notifier on, what the API sets up is what a receiver gets."""
    base, received = receiver
    tenant = make_tenant(database_url)
    log = tmp_path / "gateway.log"
    with running_gateway(database_url, log, WAGATE_WEBHOOKS_ALLOW_PRIVATE="1") as gateway:
        made = {
            kind: create(gateway, tenant, url=f"{base}/{kind}", kind=kind, headers={"X-Src": "t"})
            for kind in ("kapso", "meta", "standard")
        }
        for webhook in made.values():
            data(call(gateway, "POST", f"/webhooks/{webhook['id']}/test", key=tenant.api_key), 202)
        received.wait_for(3)
        by_path = {path.strip("/"): (headers, body) for path, headers, body in received.posts}
        assert set(by_path) == set(made)
        for kind, (headers, body) in by_path.items():
            secret = made[kind]["secret_key"]
            assert headers["X-Src"] == "t"
            assert headers["X-Idempotency-Key"].startswith("evt_")
            if kind == "kapso":
                expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                assert headers["X-Webhook-Signature"] == expected
                assert headers["X-Webhook-Event"] == "whatsapp.webhook.test"
            elif kind == "meta":
                expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                assert headers["X-Hub-Signature-256"] == f"sha256={expected}"
            else:
                lower = {name.lower(): value for name, value in headers.items()}
                payload = Webhook(secret).verify(body, lower)
                assert payload["type"] == "whatsapp.webhook.test"
            assert tenant.phone_number_id.encode() in body
        # The deliveries and attempts say so too, once the notifier has recorded them.
        path = f"/webhooks/{made['kapso']['id']}"
        deadline = time.monotonic() + 20
        while True:
            [delivery] = data(call(gateway, "GET", f"{path}/deliveries", key=tenant.api_key))
            if delivery["state"] == "delivered" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert delivery["state"] == "delivered", delivery
        assert delivery["id"] == by_path["kapso"][0]["X-Idempotency-Key"]
        [attempt] = data(call(gateway, "GET", f"{path}/attempts", key=tenant.api_key))
        assert (attempt["status_code"], attempt["error"]) == (200, None)
