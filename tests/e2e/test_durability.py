"""Every 200 is durable: SIGKILL the gateway, restart it, and find every acknowledged message.

Runs a real `wagate serve` per backend and kills its whole process group with
SIGKILL, so no shutdown hook or flush can help: only what was committed
before the 200 went out survives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_send_endpoint import SEED_BODY
from tests.support import GatewayProcess, Tenant, make_tenant
from wagate.adapters.store.sql import SqlStore

pytestmark = pytest.mark.slow

IN_FLIGHT = 32


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway of this test's own; stopped (if still alive) at the end."""
    process = GatewayProcess(database_url, tmp_path / "first.log").start()
    try:
        yield process
    finally:
        process.stop()


def send_url(gateway: GatewayProcess, tenant: Tenant) -> str:
    return f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages"


def payload(i: int) -> bytes:
    """A distinct body per message, so a message can be matched to its request."""
    return json.dumps({**SEED_BODY, "biz_opaque_callback_data": f"burst-{i}"}).encode()


async def burst(
    gateway: GatewayProcess,
    tenant: Tenant,
    count: int,
    on_acknowledged: Callable[[int], None] | None = None,
) -> tuple[dict[str, int], int]:
    """Send `count` messages, IN_FLIGHT at a time.

    Returns the id of every 200 (with its request's number) and how many
    requests got no answer at all. `on_acknowledged` is called with the number
    of 200s so far after each one.
    """
    acknowledged: dict[str, int] = {}
    unanswered = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    headers = {"X-API-Key": tenant.api_key, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)

    async with httpx.AsyncClient(timeout=15, limits=limits) as client:

        async def worker() -> None:
            nonlocal unanswered
            while not queue.empty():
                i = queue.get_nowait()
                try:
                    response = await client.post(
                        send_url(gateway, tenant), content=payload(i), headers=headers
                    )
                except httpx.TransportError:
                    unanswered += 1
                    continue
                assert response.status_code == 200, response.text
                acknowledged[response.json()["messages"][0]["id"]] = i
                if on_acknowledged is not None:
                    on_acknowledged(len(acknowledged))

        await asyncio.gather(*[worker() for _ in range(IN_FLIGHT)])
    return acknowledged, unanswered


async def stored_callback_data(database_url: str, tenant: Tenant, ids: list[str]) -> dict[str, str]:
    """Read the acknowledged messages straight from the store: id -> callback data."""
    store = SqlStore.from_url(database_url)
    try:
        found: dict[str, str] = {}
        for message_id in ids:
            message = await store.get_message(tenant.phone_number_id, message_id)
            if message is not None:
                found[message_id] = str(message.biz_opaque_callback_data)
        return found
    finally:
        await store.close()


async def read_back(gateway: GatewayProcess, tenant: Tenant, ids: list[str]) -> dict[str, int]:
    """GET every id from a gateway: id -> HTTP status."""
    base = f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages"
    limit = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(timeout=15, headers={"X-API-Key": tenant.api_key}) as client:

        async def one(message_id: str) -> tuple[str, int]:
            async with limit:
                response = await client.get(f"{base}/{message_id}")
            if response.status_code == 200:
                assert response.json()["id"] == message_id
            return message_id, response.status_code

        return dict(await asyncio.gather(*[one(message_id) for message_id in ids]))


def assert_all_survived(
    database_url: str, tenant: Tenant, acknowledged: dict[str, int], tmp_path: Path
) -> None:
    """Restart a gateway on the same database; every acknowledged message is there."""
    ids = sorted(acknowledged)
    stored = asyncio.run(stored_callback_data(database_url, tenant, ids))
    lost = sorted(set(ids) - set(stored))
    assert not lost, f"{len(lost)} of {len(ids)} acknowledged messages were lost: {lost[:5]}"
    assert stored == {message_id: f"burst-{i}" for message_id, i in acknowledged.items()}

    restarted = GatewayProcess(database_url, tmp_path / "restarted.log").start()
    try:
        statuses = asyncio.run(read_back(restarted, tenant, ids))
    finally:
        restarted.stop()
    missing = sorted(message_id for message_id, status in statuses.items() if status != 200)
    assert not missing, f"the restarted gateway cannot find {len(missing)}: {missing[:5]}"


def test_every_acknowledged_message_survives_a_sigkill_after_the_burst(
    server: GatewayProcess, database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(database_url)

    acknowledged, unanswered = asyncio.run(burst(server, tenant, 300))
    server.kill()  # at once after the last 200: no graceful shutdown

    assert unanswered == 0
    assert len(acknowledged) == 300
    assert_all_survived(database_url, tenant, acknowledged, tmp_path)


def test_every_acknowledged_message_survives_a_sigkill_mid_burst(
    server: GatewayProcess, database_url: str, tmp_path: Path
) -> None:
    tenant = make_tenant(database_url)
    kill_after = 150

    def kill_at_threshold(count: int) -> None:
        if count == kill_after:
            server.kill()

    # A 200 that arrives after the kill was still sent by the server before it
    # died, so it too must be durable: every 200 counts, whenever it is read.
    acknowledged, unanswered = asyncio.run(burst(server, tenant, 1000, kill_at_threshold))

    assert server.group is not None
    assert server.group.process.poll() is not None, "the gateway was never killed"
    assert len(acknowledged) >= kill_after
    assert unanswered > 0, "the kill did not interrupt the burst"
    assert len(acknowledged) + unanswered == 1000
    assert_all_survived(database_url, tenant, acknowledged, tmp_path)
