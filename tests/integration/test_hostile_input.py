"""The gateway holds against hostile input: slow and huge bodies, forged signatures, log
injection, absurd nesting. Each test talks HTTP on loopback to a real `wagate serve`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests import loopback
from tests.support import (
    GatewayProcess,
    Tenant,
    database_url_for,
    dispose_database,
    make_tenant,
    running_gateway,
    wait_until,
)

FAKE_SIGNATURE = "sha256=" + "ab" * 32
SEED_BODY: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "recipient": "US.13491208655302741918",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}
STATUS_WEBHOOK = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "1",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "statuses": [{"id": "wamid.FORGED", "status": "read", "timestamp": "1"}]
                    },
                }
            ],
        }
    ],
}


def send_path(tenant: Tenant) -> str:
    return f"/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages"


def post_send(gateway: GatewayProcess, tenant: Tenant, payload: Any) -> httpx.Response:
    return loopback.post(
        gateway.base_url + send_path(tenant),
        content=payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
        headers={"X-API-Key": tenant.api_key, "Content-Type": "application/json"},
        timeout=10,
    )


def graph_error(response: httpx.Response, code: int, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["error_data"]["details"]
    return dict(error)


def request_head(path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Progress:
    """How many trickling connections are open (or failed to open), and how many were answered."""

    opened: int = 0
    answered: int = 0


async def trickle(
    port: int, head: bytes, stop: asyncio.Event, every: float, progress: Progress | None = None
) -> bytes:
    """Send `head`, then a body byte every `every` seconds until `stop`; what came back."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        if progress is not None:
            progress.opened += 1
        return b""
    answer = b""
    try:
        writer.write(head)
        await writer.drain()
        if progress is not None:
            progress.opened += 1
        while not stop.is_set():
            try:
                chunk = await asyncio.wait_for(reader.read(4096), every)
                if chunk and not answer and progress is not None:
                    progress.answered += 1
                answer += chunk
            except TimeoutError:
                writer.write(b"{")
                await writer.drain()
                continue
            if reader.at_eof():
                break
    except OSError:
        pass
    finally:
        writer.close()
    return answer


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = database_url_for("sqlite", tmp_path_factory.mktemp("hostile"))
    yield url
    dispose_database(url)


# ---- slow and large bodies -------------------------------------------------------------


@pytest.mark.slow
def test_slow_unauthenticated_uploads_do_not_starve_health_or_sends(
    sqlite_url: str, tmp_path: Path
) -> None:
    """1,100 slow sends without a key and 300 slow webhooks with a made-up signature.

    Before: every body was read before the key was checked and without a deadline,
    so these held all of granian's 1,024 request slots and /healthz timed out.
    """
    tenant = make_tenant(sqlite_url)
    sends, webhooks = 1_100, 300

    async def attack(gateway: GatewayProcess) -> list[float]:
        stop = asyncio.Event()
        send_head = request_head(send_path(tenant), {"Content-Type": "application/json"}, 60_000)
        hook_head = request_head(
            "/webhooks/meta",
            {"Content-Type": "application/json", "X-Hub-Signature-256": FAKE_SIGNATURE},
            100_000,
        )
        progress = Progress()
        slow = [
            asyncio.create_task(trickle(gateway.port, send_head, stop, 3.0, progress))
            for _ in range(sends)
        ]
        # A byte a second: the webhooks hold their slots, and end within a second of `stop`.
        slow += [
            asyncio.create_task(trickle(gateway.port, hook_head, stop, 1.0, progress))
            for _ in range(webhooks)
        ]
        # Every connection open and trickling, and every keyless send refused on its head
        # (before the fix, none was answered before its body, so this never came true).
        deadline = time.monotonic() + 20
        while progress.opened < sends + webhooks or progress.answered < sends:
            assert time.monotonic() < deadline, progress
            await asyncio.sleep(0.05)
        waits: list[float] = []
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(3):
                started = time.monotonic()
                health = await client.get(f"{gateway.base_url}/healthz")
                sent = await client.post(
                    gateway.base_url + send_path(tenant),
                    json=SEED_BODY,
                    headers={"X-API-Key": tenant.api_key},
                )
                waits.append(time.monotonic() - started)
                assert (health.status_code, sent.status_code) == (200, 200), sent.text
                await asyncio.sleep(0.3)
        stop.set()
        answers = await asyncio.gather(*slow)
        refused = sum(b" 401 " in answer.split(b"\r\n", 1)[0] for answer in answers)
        assert refused >= sends  # every keyless send was refused without its body
        return waits

    with running_gateway(sqlite_url, tmp_path / "gateway.log") as gateway:
        started = time.monotonic()
        waits = asyncio.run(attack(gateway))
        assert time.monotonic() - started < 30
    assert max(waits) < 2.0, waits


def test_a_body_past_its_deadline_is_408(sqlite_url: str, tmp_path: Path) -> None:
    tenant = make_tenant(sqlite_url)

    async def slow_bodies(gateway: GatewayProcess) -> tuple[bytes, bytes]:
        stop = asyncio.Event()
        send = trickle(
            gateway.port,
            request_head(
                send_path(tenant),
                {"Content-Type": "application/json", "X-API-Key": tenant.api_key},
                1_000,
            ),
            stop,
            0.3,
        )
        webhook = trickle(
            gateway.port,
            request_head("/webhooks/meta", {"X-Hub-Signature-256": FAKE_SIGNATURE}, 1_000),
            stop,
            0.3,
        )
        # Each ends once the gateway answers and closes (or fails the test after 10 s).
        send_answer, webhook_answer = await asyncio.wait_for(asyncio.gather(send, webhook), 10)
        stop.set()
        return send_answer, webhook_answer

    with running_gateway(
        sqlite_url, tmp_path / "gateway.log", WAGATE_BODY_TIMEOUT_SECONDS="1"
    ) as gateway:
        for answer in asyncio.run(slow_bodies(gateway)):
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:200]
            error = json.loads(body)["error"]
            assert error["code"] == 100
            assert "did not arrive within 1 s" in error["error_data"]["details"]


# ---- webhooks: the signature before the body ---------------------------------------


def stored_statuses(database_url: str) -> int:
    async def count() -> int:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                found = await connection.execute(
                    sa.text("SELECT count(*) FROM message_statuses WHERE upstream_wamid = :w"),
                    {"w": "wamid.FORGED"},
                )
                return int(found.scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())


@pytest.mark.parametrize(
    "signature",
    [
        None,
        b"",
        b"sha1=" + b"ab" * 20,
        b"sha256=" + b"ab" * 31,
        b"sha256=" + b"zz" * 32,
        ("sha256=" + "é" * 64).encode(),
        FAKE_SIGNATURE.encode(),  # well-formed, but not the body's HMAC
    ],
    ids=["missing", "empty", "sha1", "short", "not-hex", "non-ascii", "wrong"],
)
def test_a_webhook_without_a_valid_signature_is_401_and_stores_nothing(
    gateway: GatewayProcess, signature: bytes | None
) -> None:
    headers = [(b"Content-Type", b"application/json")]
    if signature is not None:
        headers.append((b"X-Hub-Signature-256", signature))
    content = json.dumps(STATUS_WEBHOOK).encode()
    response = loopback.post(
        f"{gateway.base_url}/webhooks/meta",
        content=content,
        headers=headers,
        timeout=10,
    )
    graph_error(response, 190, 401)
    assert stored_statuses(gateway.database_url) == 0


def test_a_webhook_body_over_4_mib_is_413(gateway: GatewayProcess) -> None:
    response = loopback.post(
        f"{gateway.base_url}/webhooks/meta",
        content=b" " * (5 * 1024 * 1024),
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": FAKE_SIGNATURE},
        timeout=30,
    )
    graph_error(response, 100, 413)
    assert loopback.get(f"{gateway.base_url}/healthz").status_code == 200


# ---- never a 500 -----------------------------------------------------------------------


def flow_body(levels: int) -> bytes:
    """A send body with a flow button whose data nests `levels` objects deep."""
    data = '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)
    return (
        '{"messaging_product":"whatsapp","recipient":"US.13491208655302741918",'
        '"type":"template","template":{"name":"promo_template","language":{"code":"en_US"},'
        '"components":[{"type":"button","sub_type":"flow","index":0,"parameters":'
        '[{"type":"action","action":{"flow_token":"t","flow_action_data":' + data + "}}]}]}}"
    ).encode()


@pytest.mark.parametrize("levels", [26, 950, 960, 9_000])
def test_json_nested_too_deep_is_131009(
    gateway: GatewayProcess, tenant: Tenant, levels: int
) -> None:
    error = graph_error(post_send(gateway, tenant, flow_body(levels)), 131009, 400)
    assert "JSON nested deeper than 32 levels" in error["error_data"]["details"]


def test_the_deepest_accepted_message_reads_back(unchecked_gateway: GatewayProcess) -> None:
    # A flow button no seeded template has: the body's rules alone (template checks off).
    gateway, tenant = unchecked_gateway, make_tenant(unchecked_gateway.database_url)
    sent = post_send(gateway, tenant, flow_body(25))  # 32 levels in all
    assert sent.status_code == 200, sent.text
    message_id = sent.json()["messages"][0]["id"]
    base = f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages"
    headers = {"X-API-Key": tenant.api_key}
    one = loopback.get(f"{base}/{message_id}", headers=headers, timeout=10)
    assert one.status_code == 200, one.text
    listing = loopback.get(base, headers=headers, timeout=10)
    assert listing.status_code == 200, listing.text
    assert [m["id"] for m in listing.json()["data"]] == [message_id]


def test_a_newline_in_a_path_does_not_forge_a_log_line(gateway: GatewayProcess) -> None:
    forged = "ERROR wagate.http forged-entry-for-the-test"
    response = loopback.get(f"{gateway.base_url}/nowhere%0a{forged.replace(' ', '%20')}")
    assert response.status_code == 404
    wait_until(lambda: "forged-entry-for-the-test" in gateway.log_text(), 5, what="the log line")
    lines = [line for line in gateway.log_text().splitlines() if "forged-entry" in line]
    assert lines
    assert all(not line.startswith("ERROR") for line in lines)
    assert any("nowhere\\nERROR" in line for line in lines)
    assert "Traceback" not in gateway.log_text()
