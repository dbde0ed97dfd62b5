"""Storage faults through real processes on PostgreSQL: no repeated send, nothing half-stored.

A real `wagate serve` (worker and embedded sandbox on) sends to a 128-character
BSUID, whose sandbox wamid is far over the 160 characters the wamid columns once
held: the message must end read after exactly one send. Then the database refuses
connections in the middle of a burst of sends: every caller gets a 200 (its message
exists) or a 131000 "safe to retry" (its message does not), and the gateway
recovers once the database is back.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import loopback
from tests.support import (
    PG_HOST,
    Tenant,
    create_pg_database,
    drop_pg_database,
    make_tenant,
    require_postgres,
    running_gateway,
    sandbox_stats,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BURST = 400
IN_FLIGHT = 32


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database."""
    require_postgres()
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def _send_body(to: dict[str, str], tag: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "type": "template",
        "template": {"name": "promo_template", "language": {"code": "en_US"}},
        **to,
    }
    if tag is not None:
        body["biz_opaque_callback_data"] = tag
    return body


def _send_url(base_url: str, tenant: Tenant) -> str:
    return f"{base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages"


def test_a_long_wamid_is_recorded_and_the_message_sent_exactly_once(
    pg_url: str, tmp_path: Path
) -> None:
    bsuid = "US." + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(124)
    )
    bsuid += "abcd"  # not one of the sandbox's failing endings
    with running_gateway(pg_url, tmp_path / "gateway.log", WAGATE_LOG_LEVEL="INFO") as gateway:
        tenant = make_tenant(pg_url)
        response = loopback.post(
            _send_url(gateway.base_url, tenant),
            json=_send_body({"recipient": bsuid}),
            headers={"X-API-Key": tenant.api_key},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        message_id = response.json()["messages"][0]["id"]
        url = (
            f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages/{message_id}"
        )
        deadline = time.monotonic() + 30
        message: dict[str, Any] = {}
        while time.monotonic() < deadline:
            message = loopback.get(url, headers={"X-API-Key": tenant.api_key}, timeout=10).json()
            if message.get("status") in ("read", "failed"):
                break
            time.sleep(0.1)
        assert message.get("status") == "read", f"{message}\n{gateway.log_text()[-3000:]}"
        stats = sandbox_stats(f"{gateway.base_url}/sandbox")
        number = stats["numbers"][tenant.phone_number_id]
        assert (number["accepted"], number["duplicate_sends"]) == (1, 0), stats
        # A failed record is retried and logged, never answered by a second send.
        assert "not recorded" not in gateway.log_text()


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(host=PG_HOST, port=5432, user="postgres", database="test")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _take_database_away(name: str) -> None:
    await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    await _admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )


async def _give_database_back(name: str) -> None:
    await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def _stored_tags(pg_url: str) -> dict[str, str]:
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT id, biz_opaque_callback_data FROM messages")
    finally:
        await connection.close()
    return {row["biz_opaque_callback_data"]: row["id"] for row in rows}


async def _burst(url: str, api_key: str, name: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """Send BURST tagged messages; take the database away after a quarter, give it back later."""
    answers: dict[str, tuple[int, dict[str, Any]]] = {}
    tags = iter(f"burst-{i}" for i in range(BURST))
    failures = asyncio.Event()
    quarter = asyncio.Event()
    async with httpx.AsyncClient(timeout=30) as client:

        async def sender() -> None:
            for tag in tags:
                response = await client.post(
                    url,
                    json=_send_body({"to": "+447700900123"}, tag),
                    headers={"X-API-Key": api_key},
                )
                answers[tag] = (response.status_code, response.json())
                if len(answers) >= BURST // 4:
                    quarter.set()
                if (
                    response.status_code != 200
                    and sum(1 for status, _ in answers.values() if status != 200) >= 40
                ):
                    failures.set()

        async def outage() -> None:
            await quarter.wait()
            await _take_database_away(name)
            try:
                await asyncio.wait_for(failures.wait(), timeout=20)
            finally:
                await _give_database_back(name)

        await asyncio.gather(outage(), *[sender() for _ in range(IN_FLIGHT)])
    return answers


def test_a_database_outage_during_a_burst_leaves_nothing_half_stored(
    pg_url: str, tmp_path: Path
) -> None:
    name = pg_url.rsplit("/", 1)[1]
    tenant = make_tenant(pg_url)
    with running_gateway(
        pg_url,
        tmp_path / "gateway.log",
        WAGATE_WORKER="0",
        # Keys and numbers come from the cache, so the burst reaches the commit.
        WAGATE_AUTH_CACHE_SECONDS="600",
    ) as gateway:
        url = _send_url(gateway.base_url, tenant)
        answers = asyncio.run(_burst(url, tenant.api_key, name))
        statuses = {status for status, _ in answers.values()}
        assert statuses <= {200, 500}, statuses
        refused = {tag: body for tag, (status, body) in answers.items() if status == 500}
        accepted = {tag: body for tag, (status, body) in answers.items() if status == 200}
        assert len(refused) >= 40
        assert len(accepted) >= BURST // 4
        for body in refused.values():
            assert body["error"]["code"] == 131000
            assert "safe to retry" in body["error"]["error_data"]["details"]
        # The gateway recovers: a send after the outage is stored.
        deadline = time.monotonic() + 30
        while True:
            response = loopback.post(
                url,
                json=_send_body({"to": "+447700900123"}, "after"),
                headers={"X-API-Key": tenant.api_key},
                timeout=10,
            )
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 200, response.text
        log = gateway.log_text()
    stored = asyncio.run(_stored_tags(pg_url))
    for tag, body in accepted.items():
        assert stored.get(tag) == body["messages"][0]["id"], tag
    assert not set(refused) & set(stored), "a caller told 131000 has a stored message"
    assert "after" in stored
    # One line per failed batch, not a traceback per caller.
    assert log.count("Traceback") < len(refused) // 4, log[-3000:]
