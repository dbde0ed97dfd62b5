"""Customer webhooks end to end: a real gateway (embedded worker and sandbox) sends, the
sandbox reports statuses, and real receivers on loopback get signed events they verify
with each format's own tools: an HMAC for Kapso's, the `standardwebhooks` library for
Standard Webhooks, pywa's own signature check and parser for Meta's."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from aiohttp import web
from pywa.client import WhatsApp
from pywa.handlers import MessageStatusHandler
from pywa.types.message_status import MessageStatus

from tests.support import (
    GatewayProcess,
    Tenant,
    database_url_for,
    dispose_database,
    free_port,
    make_tenant,
)

WEBHOOKS = "/platform/v1/whatsapp/phone_numbers"
# The embedded sandbox sends sent, delivered and read to this recipient, 50 ms apart.
TO = "447700900123"
TRACKER = "campaign-42"


@dataclass
class Arrival:
    """One POST as the receiver got it."""

    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class Receiver:
    """A customer's webhook receiver on loopback; `answer` decides each response's status."""

    port: int = field(default_factory=free_port)
    arrivals: list[Arrival] = field(default_factory=list)
    answer: Callable[[Arrival], int] = lambda _: 200
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        arrival = Arrival(dict(request.headers), await request.read())
        with self._lock:
            self.arrivals.append(arrival)
        return web.Response(status=self.answer(arrival))

    def got(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver served by its own event loop in a thread, for the test's length."""
    hook = Receiver()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner: list[web.AppRunner] = []

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook.handle)
        runner.append(web.AppRunner(app, access_log=None))
        await runner[0].setup()
        await web.TCPSite(runner[0], "127.0.0.1", hook.port).start()
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(10)
    yield hook
    asyncio.run_coroutine_threadsafe(runner[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """`wagate serve` as users run it, allowed to call loopback receivers."""
    tmp = tmp_path_factory.mktemp(f"customer-webhooks-{request.param}")
    url = database_url_for(request.param, tmp)
    process = GatewayProcess(
        url,
        tmp / "gateway.log",
        WAGATE_WEBHOOKS_ALLOW_PRIVATE="1",
        WAGATE_WORKER_POLL_SECONDS="0.2",
    ).start()
    yield process
    process.stop()
    dispose_database(url)


@pytest.fixture
def sqlite_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """`wagate serve` on SQLite only, for what waits for the real retry schedule."""
    url = database_url_for("sqlite", tmp_path)
    process = GatewayProcess(url, tmp_path / "gateway.log", WAGATE_WEBHOOKS_ALLOW_PRIVATE="1")
    yield process.start()
    process.stop()
    dispose_database(url)


def add_webhook(gateway: GatewayProcess, tenant: Tenant, url: str, **fields: Any) -> dict[str, Any]:
    """Add an endpoint through the management API; its JSON (secret in full, once)."""
    answer = httpx.post(
        f"{gateway.base_url}{WEBHOOKS}/{tenant.phone_number_id}/webhooks",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
        json={"whatsapp_webhook": {"url": url, **fields}},
        timeout=10,
    )
    assert answer.status_code in (200, 201), answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def send(gateway: GatewayProcess, tenant: Tenant, to: str = TO) -> str:
    """One marketing message; our message id."""
    answer = httpx.post(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
        json={
            "messaging_product": "whatsapp",
            "to": to,
            "type": "template",
            "template": {"name": "promo_template", "language": {"code": "en_US"}},
            "biz_opaque_callback_data": TRACKER,
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["messages"][0]["id"])


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def kapso_statuses(arrivals: list[Arrival], message_id: str) -> list[str]:
    """The Kapso statuses of one message, in arrival order."""
    statuses = []
    for arrival in arrivals:
        message = json.loads(arrival.body).get("message") or {}
        if message.get("id") == message_id:
            statuses.append(message["kapso"]["status"])
    return statuses


def test_a_kapso_receiver_gets_each_status_signed_in_order_with_the_tracker(
    gateway: GatewayProcess, receiver: Receiver
) -> None:
    tenant = make_tenant(gateway.database_url)
    hook = add_webhook(gateway, tenant, receiver.url, headers={"X-Webhook-Source": "kapso"})
    secret = hook["secret_key"]
    message_id = send(gateway, tenant)
    wait_for(lambda: len(kapso_statuses(receiver.got(), message_id)) >= 3)
    arrivals = receiver.got()
    assert kapso_statuses(arrivals, message_id) == ["sent", "delivered", "read"]
    for arrival in arrivals:
        expected = hmac.new(secret.encode(), arrival.body, hashlib.sha256).hexdigest()
        assert arrival.headers["X-Webhook-Signature"] == expected
        assert arrival.headers["X-Webhook-Payload-Version"] == "v2"
        assert arrival.headers["X-Webhook-Source"] == "kapso"
        payload = json.loads(arrival.body)
        event = "whatsapp.message." + payload["message"]["kapso"]["status"]
        assert arrival.headers["X-Webhook-Event"] == event
        assert payload["phone_number_id"] == tenant.phone_number_id
        assert payload["message"]["biz_opaque_callback_data"] == TRACKER
    keys = [arrival.headers["X-Idempotency-Key"] for arrival in arrivals]
    assert len(set(keys)) == len(keys)


def test_a_standard_webhooks_receiver_verifies_every_event_with_the_library(
    gateway: GatewayProcess, receiver: Receiver
) -> None:
    tenant = make_tenant(gateway.database_url)
    hook = add_webhook(gateway, tenant, receiver.url, kind="standard")
    assert hook["secret_key"].startswith("whsec_")
    verifier = standardwebhooks.Webhook(hook["secret_key"])
    message_id = send(gateway, tenant)
    wait_for(lambda: len(receiver.got()) >= 3)
    types = []
    for arrival in receiver.got():
        payload = verifier.verify(arrival.body, arrival.headers)
        types.append(payload["type"])
        assert payload["data"]["message"]["id"] == message_id
        assert payload["data"]["message"]["biz_opaque_callback_data"] == TRACKER
    assert types == [
        "whatsapp.message.sent",
        "whatsapp.message.delivered",
        "whatsapp.message.read",
    ]
    arrival = receiver.got()[0]
    stranger = standardwebhooks.Webhook("whsec_" + "A" * 32)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        stranger.verify(arrival.body, arrival.headers)


def test_a_receiver_written_for_meta_with_pywa_takes_our_events_unchanged(
    gateway: GatewayProcess, receiver: Receiver
) -> None:
    tenant = make_tenant(gateway.database_url)
    hook = add_webhook(gateway, tenant, receiver.url, kind="meta")
    statuses: list[MessageStatus[Any]] = []
    client = WhatsApp(
        phone_id=tenant.phone_number_id,
        token="unused",
        app_secret=hook["secret_key"],
        verify_token="unused",
    )
    client.add_handlers(MessageStatusHandler(lambda _, status: statuses.append(status)))
    message_id = send(gateway, tenant)
    wait_for(lambda: len(receiver.got()) >= 3)
    for arrival in receiver.got():
        signature = arrival.headers["X-Hub-Signature-256"]
        refused = client.webhook_update_validator(arrival.body, signature)
        assert refused is None
        assert client.webhook_update_handler(arrival.body) == ("ok", 200)
    assert [s.status.value for s in statuses] == ["sent", "delivered", "read"]
    assert {s.id for s in statuses} == {message_id}
    assert {s.tracker for s in statuses} == {TRACKER}
    forged = client.webhook_update_validator(receiver.got()[0].body, "sha256=" + "0" * 64)
    assert forged is not None


def test_a_receiver_down_for_a_while_gets_each_event_again_under_its_key_in_order(
    sqlite_gateway: GatewayProcess, receiver: Receiver
) -> None:
    """500s for 2 s: each message's first event is refused and comes again on the retry
    schedule (10 s +-20%) under the same idempotency key; its later events wait behind
    it and follow in order. (It waits for the real schedule: once, on SQLite; the
    outbox's order and retries on PostgreSQL are tests/integration/test_notify_store.py's.)"""
    gateway = sqlite_gateway
    tenant = make_tenant(gateway.database_url)
    add_webhook(gateway, tenant, receiver.url)
    down_until = time.monotonic() + 2.0
    receiver.answer = lambda arrival: 500 if arrival.at < down_until else 200
    sent = [send(gateway, tenant, to=f"4477009{n:02d}123") for n in range(3)]
    wait_for(lambda: all(len(kapso_statuses(receiver.got(), m)) == 4 for m in sent), 30)
    arrivals = receiver.got()
    for message_id in sent:
        assert kapso_statuses(arrivals, message_id) == ["sent", "sent", "delivered", "read"]
        refused, again = (a for a in arrivals if _message_id(a) == message_id and _sent(a))
        assert refused.at < down_until <= again.at
        assert refused.headers["X-Idempotency-Key"] == again.headers["X-Idempotency-Key"]
        assert again.at - refused.at >= 8.0  # the schedule's first retry, not a hot loop


def _message_id(arrival: Arrival) -> str | None:
    message = json.loads(arrival.body).get("message") or {}
    return message.get("id")


def _sent(arrival: Arrival) -> bool:
    return bool(arrival.headers["X-Webhook-Event"] == "whatsapp.message.sent")


def test_a_hostname_that_resolves_to_loopback_is_refused_unless_allowed(
    tmp_path: Path, receiver: Receiver
) -> None:
    url = database_url_for("sqlite", tmp_path)
    gateway = GatewayProcess(url, tmp_path / "gateway.log").start()
    try:
        tenant = make_tenant(url)
        hook = add_webhook(gateway, tenant, receiver.url.replace("127.0.0.1", "localhost"))
        send(gateway, tenant)

        def attempts() -> list[dict[str, Any]]:
            answer = httpx.get(
                f"{gateway.base_url}/platform/v1/whatsapp/webhooks/{hook['id']}/attempts",
                headers={"Authorization": f"Bearer {tenant.api_key}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            rows: list[dict[str, Any]] = answer.json()["data"]
            return rows

        wait_for(lambda: bool(attempts()))
        (attempt,) = attempts()[-1:]
        assert attempt["status_code"] is None
        assert "refused" in attempt["error"]
        assert "127.0.0.1" in attempt["error"]
        assert receiver.got() == []
    finally:
        gateway.stop()
        dispose_database(url)
