"""Wake benchmark: what an idle worker costs, and how soon it sends what was just accepted.

A worker wired as `wagate serve` wires it (`Services`), on a fresh database with
NUMBERS sandbox numbers, its upstream replaced by a stub that records when each
send arrives (no network: the figures are the queue's and the loop's).

- idle: no message queued; every SQL statement the worker's engine runs is counted
  (a SQLAlchemy `before_cursor_execute` listener) for IDLE_S seconds; printed per second;
- latency: one message accepted at a time (`Acceptor.accept`, the commit included),
  LATENCY_N times, a pause between them; from the accept's return to the stub's send,
  p50 and max.

Usage: bench/wake [--database sqlite|postgres] [--numbers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wagate.adapters.store.migrate import migrate  # noqa: E402
from wagate.core import admin  # noqa: E402
from wagate.domain.delivery import UpstreamResult  # noqa: E402
from wagate.domain.model import PhoneNumber  # noqa: E402
from wagate.services import Services  # noqa: E402
from wagate.settings import Settings  # noqa: E402

IDLE_S = 5.0
LATENCY_N = 30
PAUSE_S = 0.1
SECRET_KEY = "wagate-bench-wake-secret-key-0123456789"
BODY = (
    b'{"messaging_product":"whatsapp","to":"+14155550102","type":"template",'
    b'"template":{"name":"promo","language":{"code":"en_US"}}}'
)


class StubUpstream:
    """Meta, answering at once; remembers when each send arrived."""

    def __init__(self) -> None:
        self.sent_at: list[float] = []
        self.arrived = asyncio.Event()

    async def send(
        self, base_url: str, version: str, phone_number_id: str, token: str, payload: bytes
    ) -> UpstreamResult:
        """Accept the message."""
        self.sent_at.append(time.perf_counter())
        self.arrived.set()
        return UpstreamResult(wamid=f"wamid.{uuid.uuid4().hex}", message_status="accepted")

    async def throughput(
        self, base_url: str, version: str, phone_number_id: str, token: str
    ) -> int | None:
        """No tier known."""
        return None

    async def close(self) -> None:
        """Nothing to release."""


async def add_numbers(services: Services, count: int) -> list[PhoneNumber]:
    """`count` sandbox numbers in one project."""
    project, _ = await admin.create_project(services.store, services.clock, "wake")
    return [
        await admin.add_number(
            services.store,
            services.clock,
            project_id=project.id,
            phone_number_id=f"9{n:014d}",
            mps=80,
        )
        for n in range(count)
    ]


async def run(url: str, count: int) -> None:
    settings = Settings(database_url=url, sqlite_synchronous="NORMAL", secret_key=SECRET_KEY)
    services = Services.build(settings)
    numbers = await add_numbers(services, count)
    statements = 0

    def counted(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(services.store.engine.sync_engine, "before_cursor_execute", counted)
    upstream = StubUpstream()
    services.upstream = upstream
    await services.start(embedded_sandbox=False, worker=True)
    try:
        await asyncio.sleep(1.0)  # the first round and housekeeping
        statements = 0
        await asyncio.sleep(IDLE_S)
        print(f"idle, {count} numbers: {statements / IDLE_S:.1f} statements/s")
        latencies = []
        for i in range(LATENCY_N):
            upstream.arrived.clear()
            await services.acceptor.accept(numbers[i % len(numbers)], BODY)
            accepted = time.perf_counter()
            await asyncio.wait_for(upstream.arrived.wait(), 10)
            latencies.append((upstream.sent_at[-1] - accepted) * 1000)
            await asyncio.sleep(PAUSE_S)
        latencies.sort()
        print(
            f"accept -> send, {LATENCY_N} messages one at a time: "
            f"p50 {statistics.median(latencies):.1f} ms, max {latencies[-1]:.1f} ms"
        )
    finally:
        await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--numbers", type=int, default=1000)
    arguments = parser.parse_args()
    if arguments.database == "sqlite":
        folder = tempfile.mkdtemp(prefix="wagate-wake-")
        url = f"sqlite+aiosqlite:///{folder}/wagate.db"
        migrate(url)
        asyncio.run(run(url, arguments.numbers))
        return
    from tests.support import create_pg_database, drop_pg_database

    os.environ.setdefault("WAGATE_SECRET_KEY", SECRET_KEY)
    url = create_pg_database()
    try:
        asyncio.run(run(url, arguments.numbers))
    finally:
        drop_pg_database(url)


if __name__ == "__main__":
    main()
