"""Across processes on PostgreSQL, an accept wakes the worker (LISTEN/NOTIFY), not its poll.

A `wagate serve` without a worker accepts; a `wagate worker` process beside it, whose
fallback look is POLL_S apart, must claim each new message within PICKUP_S: far
sooner than any look could find it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration.test_send_endpoint import body, send
from tests.support import (
    WAGATE,
    GatewayProcess,
    ProcessGroup,
    Tenant,
    database_url_for,
    dispose_database,
    make_tenant,
    wait_until,
)
from wagate.adapters.store.engine import create_engine
from wagate.adapters.store.listen import WorkListener
from wagate.adapters.store.queries.messages import WORK_CHANNEL

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

POLL_S = 30.0
# Claims come within milliseconds; the margin is for a loaded machine, still far below POLL_S.
PICKUP_S = 1.0
MESSAGES = 3
STATE = "SELECT state FROM messages WHERE id = $1"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[GatewayProcess, ProcessGroup, Tenant]]:
    """A gateway without a worker, and a worker process on the same PostgreSQL database."""
    url = database_url_for("postgres", tmp_path)
    gateway = GatewayProcess(url, tmp_path / "gateway.log", WAGATE_WORKER="0").start()
    worker = ProcessGroup(
        [WAGATE, "worker"],
        {
            **os.environ,
            "WAGATE_DATABASE_URL": url,
            "WAGATE_PUBLIC_URL": gateway.base_url,
            "WAGATE_WORKER_POLL_SECONDS": str(POLL_S),
            "WAGATE_LOG_LEVEL": "INFO",
        },
        tmp_path / "worker.log",
    )
    try:
        wait_until(lambda: "started" in worker.log_text(), what="the worker's first round")
        yield gateway, worker, make_tenant(url)
    finally:
        worker.stop()
        gateway.stop()
        dispose_database(url)


async def picked_up_after(dsn: str, message_id: str) -> float:
    """Seconds until the message leaves the queue (claimed), polled every 5 ms; at most
    a few times PICKUP_S (inf: still queued then)."""
    connection = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 5 * PICKUP_S:
            state = await connection.fetchval(STATE, message_id)
            if state != "queued":
                return time.monotonic() - started
            await asyncio.sleep(0.005)
        return float("inf")
    finally:
        await connection.close()


def test_a_worker_in_another_process_claims_a_new_message_at_once_not_at_its_poll(
    pair: tuple[GatewayProcess, ProcessGroup, Tenant],
) -> None:
    gateway, worker, tenant = pair
    dsn = gateway.database_url.replace("postgresql+asyncpg://", "postgresql://")
    waited = []
    for _ in range(MESSAGES):
        response = send(gateway, tenant, body())
        assert response.status_code == 200, response.text
        message_id = response.json()["messages"][0]["id"]
        waited.append(asyncio.run(picked_up_after(dsn, message_id)))
    # One look (every POLL_S) might catch one of them by chance; never all.
    assert max(waited) < PICKUP_S, f"claimed after {waited} s\n{worker.log_text()[-2000:]}"


class Heard:
    """A work signal that remembers what it was told."""

    def __init__(self) -> None:
        self.numbers: list[str] = []
        self.missed = 0
        self.changed = asyncio.Event()

    def notify(self, phone_number_id: str) -> None:
        self.numbers.append(phone_number_id)
        self.changed.set()

    def look_at_everything(self) -> None:
        self.missed += 1
        self.changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate` holds, at most 5 s."""
        async with asyncio.timeout(5):
            while not predicate():
                await self.changed.wait()
                self.changed.clear()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database."""
    url = database_url_for("postgres", tmp_path)
    yield url
    dispose_database(url)


async def test_a_listener_whose_connection_drops_listens_again_and_asks_for_a_look(
    database: str,
) -> None:
    url = database
    engine = create_engine(url)
    heard = Heard()
    listener = WorkListener(engine, heard, heard.look_at_everything, retry_s=0.05)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    sender = await asyncpg.connect(dsn)
    try:
        listener.start()
        await asyncio.wait_for(listener.listening.wait(), 5)
        assert heard.missed == 1  # whatever came before it listened
        await sender.execute(f"NOTIFY {WORK_CHANNEL}, '111'")
        await heard.until(lambda: heard.numbers == ["111"])
        await sender.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE query LIKE 'LISTEN%{WORK_CHANNEL}%'"
        )
        await heard.until(lambda: heard.missed == 2)
        await sender.execute(f"NOTIFY {WORK_CHANNEL}, '222'")
        await heard.until(lambda: heard.numbers == ["111", "222"])
    finally:
        await sender.close()
        await listener.close()
        await engine.dispose()
