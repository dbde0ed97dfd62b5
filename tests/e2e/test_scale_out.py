"""Scale-out: three `wagate worker` processes share one number's pace against a standalone sandbox.

A real `wagate sandbox` stands in for Meta (100 msg/s, status webhooks signed
with the app secret), a real `wagate serve` on PostgreSQL accepts 500
messages with its worker off, and then three worker processes deliver them.
Together they must keep to the number's rate (no 130429, about 10 s for
500 at 100 msg/s) and send every message exactly once; with one worker
SIGKILLed mid-run, every message must still end in a final state, and only
the sends the dead worker had not recorded may be repeated.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests import loopback
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    WAGATE,
    GatewayProcess,
    ProcessGroup,
    create_pg_database,
    drop_pg_database,
    free_port,
    make_tenant,
    require_postgres,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# 500 sends at 100/s: five seconds of pacing, enough for three workers to share it.
COUNT = 500
MPS = 100
WORKERS = 3
APP_SECRET = "scale-out-app-secret"
ACCESS_TOKEN = "t"
IN_FLIGHT = 64
# Seconds between a sandbox accept and its sent, delivered and read webhooks.
STATUS_DELAY = "0.1"
POLL_S = 0.05


def recipient(i: int) -> str:
    """A distinct phone number per message, ending in 2.

    The sandbox picks a recipient's fate by its last four digits (9026 fails,
    9500 is refused twice, ...); none of those end in 2, so every message here
    is accepted and delivered and read. Distinct recipients also keep the
    sandbox's pair-rate limit and its duplicate detection per message.
    """
    return f"+1 415 {i:06d}2"


def body(i: int) -> bytes:
    """The send request of message `i`."""
    return (
        '{"messaging_product":"whatsapp","recipient_type":"individual",'
        f'"to":"{recipient(i)}","type":"template",'
        '"template":{"name":"promo_template","language":{"code":"en_US"}}}'
    ).encode()


@dataclass
class Rig:
    """A sandbox, a gateway without a worker, a meta number with COUNT queued messages."""

    database_url: str
    tmp_path: Path
    sandbox_url: str
    gateway: GatewayProcess
    phone_number_id: str = ""
    api_key: str = ""
    processes: list[ProcessGroup] = field(default_factory=list)

    def worker_env(self, **extra: str) -> dict[str, str]:
        """The environment of a `wagate worker` talking to the standalone sandbox."""
        return {
            **os.environ,
            "WAGATE_DATABASE_URL": self.database_url,
            "WAGATE_META_BASE_URL": self.sandbox_url,
            "WAGATE_META_APP_SECRET": APP_SECRET,
            "WAGATE_LOG_LEVEL": "WARNING",
            **extra,
        }

    def start_workers(self, count: int, **env: str) -> list[ProcessGroup]:
        """Start `count` worker processes."""
        started = [
            ProcessGroup(
                [WAGATE, "worker"], self.worker_env(**env), self.tmp_path / f"worker-{n}.log"
            )
            for n in range(count)
        ]
        self.processes.extend(started)
        return started

    def stats(self) -> dict[str, Any]:
        """The sandbox's `_stats` document."""
        response = loopback.get(f"{self.sandbox_url}/_stats", headers=ADMIN, timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Rows of one query on the test database."""
        dsn = self.database_url.replace("postgresql+asyncpg://", "postgresql://")

        async def fetch() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(dsn)
            try:
                return list(await connection.fetch(query, *args))
            finally:
                await connection.close()

        return asyncio.run(fetch())

    def logs(self) -> str:
        """The tail of every process's log, for failure messages."""
        parts = [f"--- gateway\n{self.gateway.log_text()[-1500:]}"]
        parts += [f"--- {p.log_path.name}\n{p.log_text()[-1500:]}" for p in self.processes]
        return "\n".join(parts)


def enqueue(rig: Rig, count: int) -> list[str]:
    """Send `count` messages over HTTP, IN_FLIGHT at a time; the ids of the 200s."""
    url = f"{rig.gateway.base_url}/meta/whatsapp/v24.0/{rig.phone_number_id}/marketing_messages"
    headers = {"X-API-Key": rig.api_key, "Content-Type": "application/json"}

    async def run() -> list[str]:
        ids: list[str] = []
        pending = iter(range(count))
        connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def sender() -> None:
                for i in pending:
                    async with session.post(url, data=body(i), headers=headers) as response:
                        answer = await response.json()
                        assert response.status == 200, answer
                        ids.append(answer["messages"][0]["id"])

            await asyncio.gather(*[sender() for _ in range(IN_FLIGHT)])
        return ids

    return asyncio.run(run())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Sandbox and gateway up, COUNT messages queued; every process stopped at the end."""
    require_postgres()
    database_url = create_pg_database()
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    # The gateway's port is chosen here, before the sandbox needs its webhook URL.
    gateway = GatewayProcess(
        database_url,
        tmp_path / "gateway.log",
        WAGATE_WORKER="0",
        WAGATE_META_APP_SECRET=APP_SECRET,
        WAGATE_META_BASE_URL=sandbox_url,
        WAGATE_LOG_LEVEL="WARNING",
    )
    rig = Rig(database_url, tmp_path, sandbox_url, gateway)
    try:
        sandbox = ProcessGroup(
            [
                WAGATE,
                "sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(sandbox_port),
                "--mps",
                str(MPS),
                "--webhook-url",
                f"{gateway.base_url}/webhooks/meta",
                "--app-secret",
                APP_SECRET,
                "--admin-token",
                ADMIN_TOKEN,
                "--token",
                ACCESS_TOKEN,
            ],
            {**os.environ, "WAGATE_SANDBOX_STATUS_DELAY": STATUS_DELAY},
            tmp_path / "sandbox.log",
        )
        rig.processes.append(sandbox)
        gateway.start()
        sandbox.wait_until_up(f"{sandbox_url}/_stats", headers=ADMIN)
        tenant = make_tenant(database_url, mps=MPS, upstream="meta", access_token=ACCESS_TOKEN)
        rig.phone_number_id, rig.api_key = tenant.phone_number_id, tenant.api_key
        started = time.monotonic()
        ids = enqueue(rig, COUNT)
        print(f"enqueued {len(ids)} messages in {time.monotonic() - started:.2f} s")
        assert len(set(ids)) == COUNT
        yield rig
    finally:
        for process in reversed(rig.processes):
            process.stop()
        gateway.stop()
        drop_pg_database(database_url)


@dataclass(frozen=True)
class Sample:
    """One poll of the sandbox's counters."""

    at: float
    accepted: int
    duplicate_sends: int
    errors: dict[str, int]


def watch(
    rig: Rig,
    done: Callable[[Sample], bool],
    *,
    timeout: float = 30.0,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Poll `_stats` every POLL_S seconds until `done` (or fail after `timeout`)."""
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout
    while True:
        stats = rig.stats()
        sample = Sample(
            time.monotonic(), stats["accepted"], stats["duplicate_sends"], stats["errors"]
        )
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
        if done(sample):
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"delivery did not finish in {timeout:.0f} s: {stats}\n{rig.logs()}")
        time.sleep(POLL_S)


def delivery_seconds(samples: list[Sample], total: int) -> float:
    """From the first sandbox accept to the last, as seen by the polls (+- POLL_S)."""
    first = next(s.at for s in samples if s.accepted > 0)
    last = next(s.at for s in samples if s.accepted >= total)
    return last - first


def states(rig: Rig) -> dict[tuple[str, str], int]:
    """Messages per (delivery state, status)."""
    rows = rig.sql("SELECT state, status, count(*) AS n FROM messages GROUP BY state, status")
    return {(row["state"], row["status"]): int(row["n"]) for row in rows}


def wait_for(rig: Rig, settled: Callable[[dict[tuple[str, str], int]], bool]) -> dict[Any, int]:
    """Poll the messages' states until `settled` (or give up after 15 s); the last reading."""
    deadline = time.monotonic() + 15
    while True:
        found = states(rig)
        if settled(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_three_workers_share_the_numbers_pace_and_send_each_message_once(rig: Rig) -> None:
    pids = {worker.pid for worker in rig.start_workers(WORKERS)}
    claimers: set[int] = set()

    def note_claimers(sample: Sample) -> None:
        rows = rig.sql("SELECT DISTINCT lease_owner FROM messages WHERE state = 'sending'")
        claimers.update(int(row["lease_owner"].split(":")[-2]) for row in rows)

    samples = watch(rig, lambda s: s.accepted >= COUNT, on_sample=note_claimers)
    time.sleep(0.5)  # anything sent twice would show up now
    final = rig.stats()
    seconds = delivery_seconds(samples, COUNT)
    print(f"{COUNT} messages at {MPS} msg/s by {WORKERS} workers in {seconds:.2f} s: {final}")

    # Every worker took a share, and nothing else (the gateway's worker is off) did.
    assert claimers == pids, f"claimed by {claimers}, workers {pids}"
    assert final["accepted"] == COUNT, rig.logs()
    assert final["duplicate_sends"] == 0
    assert "130429" not in final["errors"], final["errors"]
    assert final["errors"] == {}
    # Slots are booked at MPS, so COUNT sends span about (COUNT - 1) / MPS seconds. A send
    # never leaves before its slot, but sends that woke late may catch up as long as no
    # second carries more than MPS (domain.pacing.SendWindow; the sandbox, refusing
    # nothing above, checks Meta's rule): at the least (COUNT - MPS) / MPS seconds.
    span = (COUNT - 1) / MPS
    fastest = (COUNT - MPS) / MPS
    assert fastest <= seconds <= span * 1.4, f"delivery took {seconds:.2f} s"

    read = wait_for(rig, lambda found: found.get(("forwarded", "read"), 0) == COUNT)
    assert read == {("forwarded", "read"): COUNT}, read
    forwarded = rig.sql(
        "SELECT count(DISTINCT upstream_wamid) AS n FROM messages"
        " WHERE state = 'forwarded' AND upstream_wamid LIKE 'wamid.%'"
    )
    assert forwarded[0]["n"] == COUNT
    statuses = rig.sql("SELECT count(*) AS n FROM message_statuses")
    assert statuses[0]["n"] == 3 * COUNT


def test_a_sigkilled_worker_loses_nothing_and_repeats_at_most_its_unrecorded_sends(
    rig: Rig,
) -> None:
    workers = {
        worker.pid: worker for worker in rig.start_workers(WORKERS, WAGATE_LEASE_SECONDS="3")
    }
    in_flight: list[int] = []

    def kill_mid_run(sample: Sample) -> None:
        if in_flight or sample.accepted < COUNT * 3 // 10:
            return
        # The worker with the most work in hand: claimed, and sent or not, unrecorded.
        holding = {
            int(row["lease_owner"].split(":")[-2]): int(row["n"])
            for row in rig.sql(
                "SELECT lease_owner, count(*) AS n FROM messages"
                " WHERE state = 'sending' GROUP BY lease_owner"
            )
        }
        victim = max(workers, key=lambda pid: holding.get(pid, 0))
        workers[victim].kill()
        # Counted again once it is dead: all it left behind, all that may be sent twice.
        rows = rig.sql(
            "SELECT count(*) AS n FROM messages WHERE state = 'sending' AND lease_owner LIKE $1",
            f"%:{victim}:%",
        )
        in_flight.append(int(rows[0]["n"]))

    samples = watch(
        rig,
        lambda s: s.accepted - s.duplicate_sends >= COUNT,
        on_sample=kill_mid_run,
    )
    time.sleep(0.5)
    final = rig.stats()
    duplicates = final["duplicate_sends"]
    seconds = delivery_seconds(samples, COUNT)
    assert in_flight, "no worker was killed mid-run"
    print(
        f"killed worker had {in_flight[0]} messages claimed and unrecorded;"
        f" duplicate_sends={duplicates}; delivery {seconds:.2f} s; {final}"
    )

    assert in_flight[0] > 0, "the killed worker had no work in hand"
    assert final["accepted"] - duplicates == COUNT
    assert duplicates <= in_flight[0]
    assert "130429" not in final["errors"], final["errors"]

    final_states = {"forwarded", "done"}
    found = wait_for(
        rig,
        lambda found: (
            all(state in final_states for state, _ in found)
            and found.get(("forwarded", "read"), 0) == COUNT
        ),
    )
    assert sum(found.values()) == COUNT, found
    assert all(state in final_states for state, _ in found), found
    assert found == {("forwarded", "read"): COUNT}, found
