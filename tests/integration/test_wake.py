"""Across processes on PostgreSQL, an accept wakes the worker (LISTEN/NOTIFY), not its poll.

A `wagate serve` without a worker accepts; a `wagate worker` process beside it, whose
fallback look is POLL_S apart, must claim each new message within PICKUP_S: far
sooner than any look could find it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
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
