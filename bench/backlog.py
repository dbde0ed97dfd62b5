"""Accepts, delivery, status latency, queue operations and memory with a backlog queued (issue 8).

Example (the lead's full run; see BENCHMARKS.md):

    bench/backlog --depths 0,100000,1000000 --limits 80,1000 --rounds 2 --duration 10
    bench/backlog --database postgresql --depths 1000000 --rounds 2 --duration 10

SQLite (default). For each depth (messages queued before the gateway starts) a
fresh database gets the backlog (see --backlog-number) through the store's own
batch insert (`SqlStore._write_batch`, the group committer's path, rows shaped as
`add_message` shapes them, 5,000 a transaction). Then, each round:

- the framework-free ceiling (`bench/ceiling_app.py`) under `wrk` (each server, the
  ceiling and the gateway, first gets --warmup s of the same load, not measured: a
  process just started pays for cold caches), before the
  first limit and again after each: a gateway's runs are compared with the mean of
  the ceiling runs on either side of them (this machine's speed drifts by tens of
  percent within minutes; one ceiling run per round put minutes between a
  gateway's runs and its baseline);
- for each limit of --limits (the numbers' mps and the embedded sandbox's
  WAGATE_SANDBOX_MPS): `wagate serve` as users run it (embedded worker and
  sandbox on) under the same `wrk` loads, distinct recipients then one recipient
  flooded. Printed: req/s, p50/p99, ratio to the ceiling; the backlog number's
  delivery against its limit; sends in each whole second; 130429, 131056 and
  duplicate sends (the sandbox's `_stats` of that number); status latency; RSS.

Whole seconds are counted where Meta counts them, at the sandbox, by its clock:
the sandbox stamps a message's first status (`sent`, or `failed` for the
recipients it fails) with int(accept time + status delay) and the bench runs it
with a status delay of exactly 1 s, so `timestamp - 1` is the wall-clock second
the sandbox accepted the send in. After the run those statuses, as the gateway
stored them, are counted per number and second (only seconds wholly inside the
measured window). Polling `_stats` at second boundaries would be off by the
poll's own latency (tens of ms under load, tens of sends at 1,000 msg/s).
Sends the sandbox refused (130429, 131056, the transient 131000) took no status
and are not in these counts; they are printed apart.

Status latency ("stored within 1 s"): a probe sends a message straight to the
sandbox every 0.25 s (its own idle number, distinct recipients, so it takes no
throughput from the measured numbers), noting the time t0 before the request.
The sandbox reports its sent/delivered/read at accept + 1, 2, 3 status delays;
the bench polls the gateway's database every 20 ms for those rows. Latency =
first seen committed - (t0 + n x delay): the sandbox's flush batching (<= 50 ms),
the webhook POST, ingest and commit, plus up to 20 ms of polling and the probe
request's own time (t0 is before the sandbox's accept): an upper bound. The
gateway's own `received_at` stamp (taken when the POST arrives, before the
commit) is printed beside it.

Queue operations are timed in process after the gateway stopped, on the same
database file with `SqlQueue`/`SqlStore`: claim (a number with due work), hold
(`hold_recipient`, what a 131056 applies), throttle (what a 130429 applies),
reap_leases, expire, reconcile, and `list_messages` (what the Reader calls for
`GET .../messages`: first page, and `status=failed`).

PostgreSQL (--database postgresql): a fresh database per scenario and depth (made
and dropped like the tests' databases), the backlog written with COPY, one
`wagate serve --no-worker` API process, 3 `wagate worker` processes (--workers)
and a standalone `wagate sandbox`: scenario A, one number at 1,000 msg/s (the
whole backlog on it); scenario B, 10 numbers at 80 msg/s each (the backlog split
evenly). No accept load: the window (2 x --duration s) measures delivery. Printed
per number: delivery against its limit, whole-second max, 130429/131056,
duplicate sends; status latency; each worker's RSS; queue operations.

Which number holds the SQLite backlog (--backlog-number): `same` (default) queues
it on the number wrk sends to, so one number delivers at the limit at every depth;
`other` on a second number (two numbers delivering once there is a backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import operator
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
from sqlalchemy import bindparam, text, update

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tests.support import (  # noqa: E402
    ADMIN,
    ADMIN_TOKEN,
    ProcessGroup,
    Tenant,
    create_pg_database,
    drop_pg_database,
    free_port,
    make_tenant,
    sql,
)

from accept import BODY_HEAD, Run, run_ceiling, warm_up, wrk  # noqa: E402
from wagate.adapters.store.engine import create_engine  # noqa: E402
from wagate.adapters.store.migrate import migrate  # noqa: E402
from wagate.adapters.store.queue import SqlQueue  # noqa: E402
from wagate.adapters.store.sql import SqlStore  # noqa: E402
from wagate.adapters.store.tables import phone_numbers  # noqa: E402
from wagate.core.accept import new_message_id  # noqa: E402
from wagate.domain.delivery import DEFAULT_TTL_S  # noqa: E402
from wagate.domain.model import MessageQuery  # noqa: E402
from wagate.domain.recipients import resolve_recipient  # noqa: E402
from wagate.domain.validation import decode_request  # noqa: E402

BATCH_ROWS = 5000
FLOOD_TO = "447700900123"
OPS_RUNS = 50
# Exactly 1 s, so a first status's timestamp - 1 is the second the sandbox accepted it in.
STATUS_DELAY_S = 1
PROBE_EVERY_S = 0.25
PROBE_POLL_S = 0.02
# Status n of a default recipient (sent, delivered, read) is due n delays after the accept.
PROBE_STEPS = {"sent": 1, "delivered": 2, "read": 3}
# The standalone sandbox's one access token and app secret (PostgreSQL mode).
ACCESS_TOKEN = "bench-token"
APP_SECRET = "bench-app-secret"
PROBE_NUMBER = "990000000000001"
# PostgreSQL scenarios: (name, numbers, mps of each).
SCENARIOS = {"A": (1, 1000), "B": (10, 80)}


def recipient(i: int) -> str:
    """Backlog recipient i: distinct, 12 digits, ending in 3.

    The sandbox picks a fate by the last four digits (9026 fails, 9500 is refused
    twice, ...); none of those ends in 3, so every backlog send is accepted.
    """
    return f"4477{i:07d}3"


@dataclass
class Delivery:
    """One number's sends at the sandbox over the measured window."""

    limit: int
    # Sends in each whole second wholly inside the window (from the stored statuses).
    per_second: list[int] = field(default_factory=list)
    polled_rate: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0

    @property
    def rate(self) -> float:
        return statistics.fmean(self.per_second) if self.per_second else 0.0

    @property
    def second_max(self) -> int:
        return max(self.per_second, default=0)

    @property
    def over(self) -> int:
        """Seconds above the limit."""
        return sum(1 for n in self.per_second if n > self.limit)

    def line(self) -> str:
        return (
            f"{self.rate:7.1f} msg/s = {self.rate / self.limit:6.1%} of {self.limit}"
            f" over {len(self.per_second)} whole s, max {self.second_max}/s,"
            f" {self.over} s above the limit (polled {self.polled_rate:.1f} msg/s);"
            f" 130429 {self.errors.get('130429', 0)}, 131056 {self.errors.get('131056', 0)},"
            f" other errors {_other(self.errors) or 'none'}, duplicate sends {self.duplicates}"
            # Which seconds, and their neighbours: jitter across a boundary, or a burst?
            + (
                f"\n        sends per whole second: {self.per_second}"
                if self.over or self.rate < 0.98 * self.limit
                else ""
            )
        )


def _other(errors: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in errors.items() if k not in ("130429", "131056")}


@dataclass
class Latency:
    """Status latencies in ms: first seen committed, and the gateway's received_at stamp."""

    stored: list[float] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    probes: int = 0
    missing: int = 0

    def extend(self, other: Latency) -> None:
        self.stored += other.stored
        self.received += other.received
        self.probes += other.probes
        self.missing += other.missing

    def line(self) -> str:
        return (
            f"stored {_pcts(self.stored)}; received_at {_pcts(self.received)};"
            f" {self.probes} probes, {self.missing} statuses not seen"
        )


def _pcts(values: list[float]) -> str:
    if len(values) < 2:
        return "no samples"
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
    return (
        f"p50 {statistics.median(values):.0f} p99 {p99:.0f} max {max(values):.0f} ms"
        f" (n={len(values)})"
    )


@dataclass
class LimitRuns:
    """The gateway's runs at one limit (one entry per round)."""

    distinct: list[Run] = field(default_factory=list)
    flood: list[Run] = field(default_factory=list)
    delivery: list[Delivery] = field(default_factory=list)
    accept_delivery: list[Delivery] = field(default_factory=list)
    latency: Latency = field(default_factory=Latency)
    worker_rss_kb: list[int] = field(default_factory=list)
    # Each round's ceiling for these runs: the mean of the ceiling runs just before and
    # just after the gateway's (this machine drifts by tens of percent within minutes).
    baseline: list[float] = field(default_factory=list)


@dataclass
class DepthResult:
    depth: int
    build_rows_s: float = 0.0
    ceiling: list[Run] = field(default_factory=list)
    limits: dict[int, LimitRuns] = field(default_factory=dict)
    ops: dict[str, tuple[float, float]] = field(default_factory=dict)


# ---- building the backlog -------------------------------------------------------------


def _template_row(project_id: str, phone_number_id: str) -> dict[str, Any]:
    """A row as `SqlStore.add_message` builds it from the accept path's `NewMessage`."""
    head, tail = BODY_HEAD.split('"to":"+44 7700 9"')
    request = decode_request(f'{head}"to":"{recipient(0)}"{tail}'.encode())
    address = resolve_recipient(request.to, request.recipient)
    now_ms = int(time.time() * 1000)
    return {
        "id": "",
        "project_id": project_id,
        "phone_number_id": phone_number_id,
        "recipient_input": address.input,
        "recipient": address.address,
        "recipient_kind": address.kind,
        "request": msgspec.json.encode(request).decode(),
        "template_name": request.template.name,
        "template_language": request.template.language.code,
        "biz_opaque_callback_data": None,
        "created_at": now_ms,
        "expires_at": now_ms + DEFAULT_TTL_S * 1000,
        "idempotency_key": None,
        "request_hash": None,
        "status": "pending",
        "state": "queued",
        "updated_at": now_ms,
        "due_at": now_ms,
    }


def _rows(template: dict[str, Any], numbers: list[str], start: int, stop: int) -> list[Any]:
    """Backlog rows start..stop, spread over `numbers` in turn (each a distinct recipient)."""
    now_ms = int(time.time() * 1000)
    first = recipient(0)
    rows = []
    for i in range(start, stop):
        digits = recipient(i)
        rows.append(
            {
                **template,
                "id": new_message_id(),
                "phone_number_id": numbers[i % len(numbers)],
                "recipient_input": digits,
                "recipient": digits,
                "request": template["request"].replace(first, digits),
                "created_at": now_ms,
                "updated_at": now_ms,
                "due_at": now_ms,
                "expires_at": now_ms + DEFAULT_TTL_S * 1000,
            }
        )
    return rows


async def build_backlog(url: str, project_id: str, numbers: list[str], depth: int) -> float:
    """Queue `depth` messages over `numbers`; rows/s of the build.

    SQLite: the store's batch insert, BATCH_ROWS a transaction. PostgreSQL: COPY, then
    ANALYZE, as autovacuum does within a minute of a bulk load: without statistics the
    planner takes a million-row table for an empty one (not counted in the rate).
    """
    template = _template_row(project_id, numbers[0])
    columns = list(template)
    started = time.perf_counter()
    if url.startswith("postgresql"):
        values = operator.itemgetter(*columns)
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            for start in range(0, depth, BATCH_ROWS * 4):
                rows = _rows(template, numbers, start, min(depth, start + BATCH_ROWS * 4))
                records = [values(row) for row in rows]
                await connection.copy_records_to_table("messages", records=records, columns=columns)
            elapsed = time.perf_counter() - started
            await connection.execute("ANALYZE messages")
        finally:
            await connection.close()
        return depth / elapsed if elapsed else 0.0
    store = SqlStore.from_url(url, sqlite_synchronous=os.environ["WAGATE_SQLITE_SYNCHRONOUS"])
    try:
        for start in range(0, depth, BATCH_ROWS):
            await store._write_batch(
                _rows(template, numbers, start, min(depth, start + BATCH_ROWS))
            )
    finally:
        await store.close()
    elapsed = time.perf_counter() - started
    return depth / elapsed if elapsed else 0.0


def set_mps(url: str, numbers: list[str], mps: int) -> None:
    """Give the numbers a new limit (between runs; the gateway reads it at claim)."""
    sql(
        url,
        update(phone_numbers).where(phone_numbers.c.phone_number_id.in_(numbers)).values(mps=mps),
    )


# ---- what the sandbox did ----------------------------------------------------------------


class StatsPoller(threading.Thread):
    """Samples the sandbox's per-number accepted counters every 0.25 s."""

    def __init__(self, sandbox_url: str, phone_number_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.sandbox_url = sandbox_url
        self.phone_number_ids = phone_number_ids
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.last: dict[str, Any] = {}
        self.stopping = threading.Event()
        self.started_at = self.stopped_at = 0.0

    def run(self) -> None:
        self.started_at = time.time()
        with httpx.Client(timeout=5) as client:
            while not self.stopping.is_set():
                try:
                    stats = client.get(f"{self.sandbox_url}/_stats", headers=ADMIN).json()
                except httpx.HTTPError:
                    stats = None
                if stats is not None:
                    numbers = stats.get("numbers", {})
                    accepted = {
                        pnid: int(numbers.get(pnid, {}).get("accepted", 0))
                        for pnid in self.phone_number_ids
                    }
                    self.samples.append((time.monotonic(), accepted))
                    self.last = stats
                self.stopping.wait(0.25)
        self.stopped_at = time.time()

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def delivery(self, phone_number_id: str, limit: int, per_second: list[int]) -> Delivery:
        """One number's sends: whole seconds from the statuses, the rest from `_stats`."""
        samples = [(t, counts[phone_number_id]) for t, counts in self.samples]
        polled = 0.0
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            (t0, a0), (t1, a1) = samples[0], samples[-1]
            polled = (a1 - a0) / (t1 - t0)
        number = self.last.get("numbers", {}).get(phone_number_id, {})
        errors: dict[str, int] = dict(number.get("errors", {}))
        return Delivery(limit, per_second, polled, errors, int(number.get("duplicate_sends", 0)))


def whole_seconds(
    url: str, numbers: list[str], started: float, stopped: float
) -> dict[str, list[int]]:
    """Sends per number in each whole second of [started, stopped], from the first statuses."""
    first, last = math.ceil(started), math.floor(stopped)  # seconds [first, last)
    delay_ms = STATUS_DELAY_S * 1000
    rows = sql(
        url,
        text(
            "SELECT m.phone_number_id, s.timestamp, count(*) FROM message_statuses s"
            " JOIN messages m ON m.upstream_wamid = s.upstream_wamid"
            " WHERE s.status IN ('sent', 'failed') AND s.timestamp >= :lo AND s.timestamp < :hi"
            " GROUP BY m.phone_number_id, s.timestamp"
        ).bindparams(lo=first * 1000 + delay_ms, hi=last * 1000 + delay_ms),
    )
    triples: list[tuple[Any, ...]] = [tuple(row) for row in rows]
    counts = {(str(p), int(ts) // 1000 - STATUS_DELAY_S): int(n) for p, ts, n in triples}
    return {pnid: [counts.get((pnid, s), 0) for s in range(first, last)] for pnid in numbers}


def settled_seconds(
    url: str, numbers: list[str], started: float, stopped: float, timeout: float = 60.0
) -> dict[str, list[int]]:
    """`whole_seconds` once the window's statuses are all stored (ingest may lag the sends).

    Delivery goes on after the window, but only the window's statuses count: done
    when their total has not changed for 1.5 s (or after `timeout`, said aloud).
    """
    deadline = time.monotonic() + timeout
    counts: dict[str, list[int]] = {}
    totals = [-1]
    while time.monotonic() < deadline:
        counts = whole_seconds(url, numbers, started, stopped)
        totals.append(sum(sum(c) for c in counts.values()))
        if len(totals) >= 4 and len(set(totals[-4:])) == 1:
            return counts
        time.sleep(0.5)
    print(f"      !! the window's statuses still arriving after {timeout:.0f} s: counts are short")
    return counts


class StatusProbe(threading.Thread):
    """Sends probes straight to the sandbox and times their statuses into the database."""

    def __init__(self, send_url: str, token: str, database_url: str) -> None:
        super().__init__(daemon=True)
        self.send_url = send_url
        self.token = token
        self.database_url = database_url
        self.stopping = threading.Event()
        self.sent: dict[str, float] = {}  # wamid -> time before the request
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (seen at, received_at)
        self.failures = 0

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        engine = create_engine(self.database_url)
        query = text(
            "SELECT upstream_wamid, status, received_at FROM message_statuses"
            " WHERE upstream_wamid IN :wamids"
        ).bindparams(bindparam("wamids", expanding=True))
        head, tail = BODY_HEAD.split('"to":"+44 7700 9"')
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        n, next_probe = 0, time.monotonic()
        drain_until = math.inf
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                while time.monotonic() < drain_until:
                    if self.stopping.is_set() and drain_until == math.inf:
                        drain_until = time.monotonic() + 3 * STATUS_DELAY_S + 30
                    if not self.stopping.is_set() and time.monotonic() >= next_probe:
                        next_probe += PROBE_EVERY_S
                        body = f'{head}"to":"4478{n:07d}3"{tail}'
                        n += 1
                        t0 = time.time()
                        try:
                            response = await client.post(
                                self.send_url, content=body, headers=headers
                            )
                            self.sent[response.json()["messages"][0]["id"]] = t0
                        except (httpx.HTTPError, KeyError, ValueError):
                            self.failures += 1
                    waiting = [
                        w for w in self.sent if any((w, s) not in self.seen for s in PROBE_STEPS)
                    ]
                    if not waiting:
                        if self.stopping.is_set():
                            break
                    else:
                        async with engine.connect() as connection:
                            rows = (await connection.execute(query, {"wamids": waiting})).all()
                        now = time.time()
                        for wamid, status, received_at in rows:
                            self.seen.setdefault((wamid, status), (now, int(received_at)))
                    await asyncio.sleep(PROBE_POLL_S)
        finally:
            await engine.dispose()

    def stop(self) -> Latency:
        """Stop probing, wait for the last probes' statuses; their latencies."""
        self.stopping.set()
        self.join()
        result = Latency(probes=len(self.sent))
        for wamid, t0 in self.sent.items():
            for status, n in PROBE_STEPS.items():
                seen = self.seen.get((wamid, status))
                if seen is None:
                    result.missing += 1
                    continue
                emitted = t0 + n * STATUS_DELAY_S
                result.stored.append((seen[0] - emitted) * 1000)
                result.received.append(seen[1] - emitted * 1000)
        result.missing += self.failures * len(PROBE_STEPS)
        return result


def rss_kb(pid: int) -> int:
    """VmRSS of a process (0 if gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0
    )


def start_serve(env: dict[str, str], log: Path) -> tuple[ProcessGroup, int, int]:
    """`wagate serve` on a free loopback port, up: (process, port, pid of the granian
    worker, whose main thread runs the event loop)."""
    port = free_port()
    process = ProcessGroup(
        [str(BIN / "wagate"), "serve", "--host", "127.0.0.1", "--port", str(port)], env, log
    )
    process.wait_until_up(f"http://127.0.0.1:{port}/healthz")
    worker = max(p for p in group_pids(process.pid) if p != process.pid)
    return process, port, worker


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised name: state ppid pgrp ...
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            pids.append(int(entry.name))
    return pids


# ---- SQLite: the gateway as users run it ----------------------------------------------


def bench_gateway(
    args: argparse.Namespace,
    tmp: Path,
    url: str,
    accept: Tenant,
    backlog: Tenant,
    probe: Tenant,
    limit: int,
    runs: LimitRuns,
) -> Latency:
    """One gateway run at `limit`, its figures added to `runs`; this run's status latency."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": url,
        "WAGATE_LOG_LEVEL": "WARNING",
        "WAGATE_WORKER": "1",
        "WAGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "WAGATE_PUBLIC_URL": base,
        "WAGATE_SANDBOX_MPS": str(limit),
        "WAGATE_SANDBOX_STATUS_DELAY": str(STATUS_DELAY_S),
    }
    cmd = [str(BIN / "wagate"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = ProcessGroup(cmd, env, tmp / "wagate.log")
    try:
        process.wait_until_up(f"{base}/healthz")
        numbers = sorted({backlog.phone_number_id, accept.phone_number_id})
        poller = StatsPoller(f"{base}/sandbox", numbers)
        target = f"{base}/meta/whatsapp/v24.0/{accept.phone_number_id}/marketing_messages"
        headers = {"Content-Type": "application/json", "X-API-Key": accept.api_key}
        # Before the window: the ceiling's runs are warmed up the same way.
        warm_up(target, headers, args, tmp / "d.lua")
        probe_url = f"{base}/sandbox/v24.0/{probe.phone_number_id}/marketing_messages"
        prober = StatusProbe(probe_url, probe.access_token, url)
        poller.start()
        prober.start()
        runs.distinct.append(wrk(target, headers, args, tmp / "d.lua"))
        runs.flood.append(wrk(target, headers, args, tmp / "f.lua", to=FLOOD_TO))
        poller.stop()
        # The granian worker (the child) holds the embedded delivery worker.
        runs.worker_rss_kb.append(
            max(rss_kb(p) for p in group_pids(process.pid) if p != process.pid)
        )
        # The probe waits out the last statuses: by then the window's first statuses are in.
        latency = prober.stop()
        runs.latency.extend(latency)
        seconds = settled_seconds(url, numbers, poller.started_at, poller.stopped_at)
        for pnid, into in (
            (backlog.phone_number_id, runs.delivery),
            (accept.phone_number_id, runs.accept_delivery),
        ):
            into.append(poller.delivery(pnid, limit, seconds[pnid]))
    finally:
        process.stop()
    return latency


# ---- queue operations, in process --------------------------------------------------------


async def measure_ops(
    url: str, backlog_number: str, accept_number: str, claim_number: str, depth: int
) -> dict[str, tuple[float, float]]:
    """p50/p99 ms of each queue operation; claims take `claim_number`'s due messages."""
    store = SqlStore.from_url(
        url, sqlite_synchronous=os.environ.get("WAGATE_SQLITE_SYNCHRONOUS", "FULL")
    )
    queue = SqlQueue(store.engine, store.secrets)
    timings: dict[str, list[float]] = {}

    async def timed(name: str, work: Any) -> Any:
        started = time.perf_counter()
        value = await work
        timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return value

    try:
        now = time.time()
        claimed = 0
        for i in range(OPS_RUNS):
            # A simulated clock 1 s apart per claim, so each finds send slots to book.
            claims = queue.claim(claim_number, "bench", now + i, lease_s=30, horizon_s=1, limit=80)
            claimed += len(await timed("claim", claims))
        for _ in range(OPS_RUNS):
            # A 131056: hold a recipient with a queued message (one pair-pacing write).
            who = recipient(random.randrange(max(depth, 1)))
            until_ms = int((now + 6) * 1000)
            await timed("hold (131056)", queue.hold_recipient(backlog_number, who, until_ms))
        for i in range(OPS_RUNS):
            # A 130429: slow the number (one write to its pacing state).
            await timed("throttle (130429)", queue.throttle(claim_number, now + i))
        for i in range(OPS_RUNS):
            # Past every lease of the claims above: the first run puts them all back.
            await timed("reap_leases", queue.reap_leases(now + OPS_RUNS + 60 + i))
        for _ in range(OPS_RUNS):
            await timed("expire", queue.expire(time.time()))
        for _ in range(OPS_RUNS):
            await timed("reconcile", queue.reconcile(time.time()))
        pages = {accept_number: "accept", backlog_number: "backlog"}  # one entry if the same
        for number, tag in pages.items():
            for _ in range(OPS_RUNS):
                await timed(f"list {tag}", store.list_messages(MessageQuery(number)))
            for _ in range(OPS_RUNS):
                query = MessageQuery(number, status="failed")
                await timed(f"list {tag} status=failed", store.list_messages(query))
        print(f"    ops: {OPS_RUNS} claims took {claimed} messages of number {claim_number}")
    finally:
        await queue.close()
        await store.close()
    return {
        name: (statistics.median(values), statistics.quantiles(values, n=100)[98])
        for name, values in timings.items()
    }


def print_ops(ops: dict[str, tuple[float, float]]) -> None:
    for name, (p50, p99) in ops.items():
        print(f"    {name:28} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms")


# ---- SQLite main ---------------------------------------------------------------------------


def run_depth(args: argparse.Namespace, tmp: Path, depth: int) -> DepthResult:
    result = DepthResult(depth)
    db = tmp / f"backlog-{depth}.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate(url)
    accept = make_tenant(url, mps=args.limits[0])
    backlog = accept if args.backlog_number == "same" else make_tenant(url, mps=args.limits[0])
    probe = make_tenant(url, mps=80)
    measured = sorted({accept.phone_number_id, backlog.phone_number_id})
    result.build_rows_s = asyncio.run(
        build_backlog(url, backlog.project_id, [backlog.phone_number_id], depth)
    )
    print(f"depth {depth:,}: built at {result.build_rows_s:,.0f} rows/s (store batch insert)")
    for n in range(args.rounds):
        before = run_ceiling(args, tmp, tmp / f"ceiling-{depth}-{n}-0.db")
        result.ceiling.append(before)
        print(f"  round {n + 1}: ceiling {before.rate:6.0f} req/s p99 {before.p99_ms:.1f} ms")
        for i, limit in enumerate(args.limits):
            set_mps(url, measured, limit)
            runs = result.limits.setdefault(limit, LimitRuns())
            this = bench_gateway(args, tmp, url, accept, backlog, probe, limit, runs)
            # The ceiling again right after: the gateway's runs are compared with the mean
            # of the ceiling runs on either side of them, not with one minutes earlier.
            after = run_ceiling(args, tmp, tmp / f"ceiling-{depth}-{n}-{i + 1}.db")
            result.ceiling.append(after)
            baseline = (before.rate + after.rate) / 2
            runs.baseline.append(baseline)
            before = after
            d, f = runs.distinct[-1], runs.flood[-1]
            print(
                f"    {limit:>4} msg/s: distinct {d.rate:6.0f} ({d.rate / baseline:.2f})"
                f" p50 {d.p50_ms:.1f} p99 {d.p99_ms:.1f} ms non-2xx {d.errors} | flood"
                f" {f.rate:6.0f} ({f.rate / baseline:.2f}) p50 {f.p50_ms:.1f} p99"
                f" {f.p99_ms:.1f} ms non-2xx {f.errors}"
            )
            print(
                f"      ceiling after: {after.rate:6.0f} req/s p99 {after.p99_ms:.1f} ms;"
                f" ratios above against the mean of before and after, {baseline:6.0f}"
            )
            print(f"      backlog number: {runs.delivery[-1].line()}")
            if args.backlog_number == "other":
                print(f"      accept number:  {runs.accept_delivery[-1].line()}")
            print(f"      status latency: {this.line()}")
            print(f"      worker RSS {runs.worker_rss_kb[-1] / 1024:.0f} MB")
    result.ops = asyncio.run(
        measure_ops(
            url,
            backlog.phone_number_id,
            accept.phone_number_id,
            # Claims need due work: with no backlog, what wrk queued on the accept number.
            backlog.phone_number_id if depth else accept.phone_number_id,
            depth,
        )
    )
    print_ops(result.ops)
    return result


def summary(args: argparse.Namespace, results: list[DepthResult]) -> None:
    med = statistics.median
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds;"
        f" SQLite WAL synchronous={os.environ['WAGATE_SQLITE_SYNCHRONOUS']}; wagate serve"
        f" (worker on, embedded sandbox at the limit, status delay {STATUS_DELAY_S} s); backlog"
        f" on the {args.backlog_number} number; rates: medians of the rounds; ceiling: each"
        " round's mean of the ceiling runs just before and after the gateway's; ratios:"
        " medians of the rounds' ratios; max/s, >lim,"
        " errors, dup: over all rounds; latency: all probes"
    )
    print(
        f"{'depth':>9} {'limit':>5} {'ceiling':>7} {'distinct':>8} {'ratio':>5} {'p99 ms':>7}"
        f" {'flood':>6} {'ratio':>5} {'p99 ms':>7} {'deliv %':>7} {'max/s':>5} {'>lim':>4}"
        f" {'130429':>6} {'131056':>6} {'dup':>4} {'st p50':>6} {'st p99':>6} {'st max':>6}"
        f" {'RSS MB':>6}"
    )
    for r in results:
        for limit, runs in r.limits.items():
            ceiling = med(runs.baseline)
            distinct = med(x.rate for x in runs.distinct)
            flood = med(x.rate for x in runs.flood)
            rounds = list(zip(runs.distinct, runs.flood, runs.baseline, strict=True))
            distinct_ratio = med(d.rate / b for d, _, b in rounds)
            flood_ratio = med(f.rate / b for _, f, b in rounds)
            delivery = med(x.rate for x in runs.delivery) / limit
            errors: dict[str, int] = {}
            for x in runs.delivery:  # each round's sandbox starts from zero
                for code, n in x.errors.items():
                    errors[code] = errors.get(code, 0) + n
            stored = runs.latency.stored or [0.0, 0.0]
            st_p99 = statistics.quantiles(stored, n=100, method="inclusive")[98]
            print(
                f"{r.depth:9,} {limit:5} {ceiling:7.0f} {distinct:8.0f} {distinct_ratio:5.2f}"
                f" {med(x.p99_ms for x in runs.distinct):7.1f} {flood:6.0f}"
                f" {flood_ratio:5.2f} {med(x.p99_ms for x in runs.flood):7.1f}"
                f" {delivery:7.1%} {max(x.second_max for x in runs.delivery):5}"
                f" {sum(x.over for x in runs.delivery):4} {errors.get('130429', 0):6}"
                f" {errors.get('131056', 0):6} {sum(x.duplicates for x in runs.delivery):4}"
                f" {med(stored):6.0f} {st_p99:6.0f} {max(stored):6.0f}"
                f" {max(runs.worker_rss_kb) / 1024:6.0f}"
            )
    ops_table(results)
    print(
        "dup: sends the sandbox saw twice (same number, recipient and template); wrk's flood"
        " and its random recipients repeat by design, so with --backlog-number same only a"
        " depth whose backlog outlasts the run reads as the gateway's own duplicates"
    )
    print("goals: ratios >= 0.50; delivery >= 98%, max/s <= limit (>lim 0); zero 130429;")
    print("       statuses stored within 1 s; operation p99 and RSS flat across depths")


def ops_table(results: list[DepthResult]) -> None:
    print()
    print(
        f"queue operations, in process after the gateway stopped, p99 ms (p50) over {OPS_RUNS} runs"
    )
    print(f"{'operation':28}" + "".join(f"{r.depth:>18,}" for r in results))
    for name in results[0].ops:
        cells = "".join(
            f"{r.ops[name][1]:10.2f} ({r.ops[name][0]:5.2f})" for r in results if name in r.ops
        )
        print(f"{name:28}{cells}")


# ---- PostgreSQL: API process, standalone workers, standalone sandbox -------------------


@dataclass
class PgRun:
    """One scenario round: each number's delivery, status latency, workers' RSS."""

    delivery: dict[str, Delivery] = field(default_factory=dict)
    latency: Latency = field(default_factory=Latency)
    worker_rss_kb: list[int] = field(default_factory=list)
    # Each round's ceiling for these runs: the mean of the ceiling runs just before and
    # just after the gateway's (this machine drifts by tens of percent within minutes).
    baseline: list[float] = field(default_factory=list)


def pg_round(
    args: argparse.Namespace, tmp: Path, url: str, tenants: list[Tenant], mps: int
) -> PgRun:
    sandbox_port, api_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    api = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": url,
        "WAGATE_LOG_LEVEL": "WARNING",
        "WAGATE_META_BASE_URL": sandbox_url,
        "WAGATE_META_APP_SECRET": APP_SECRET,
        "WAGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "WAGATE_SANDBOX_STATUS_DELAY": str(STATUS_DELAY_S),
    }
    processes: list[ProcessGroup] = []
    run = PgRun()
    try:
        sandbox_cmd = [str(BIN / "wagate"), "sandbox", "--host", "127.0.0.1"]
        sandbox_cmd += ["--port", str(sandbox_port), "--mps", str(mps), "--webhook-url"]
        sandbox_cmd += [f"{api}/webhooks/meta", "--app-secret", APP_SECRET, "--token", ACCESS_TOKEN]
        sandbox = ProcessGroup(sandbox_cmd, env, tmp / "sandbox.log")
        processes.append(sandbox)
        api_cmd = [str(BIN / "wagate"), "serve", "--no-worker", "--host", "127.0.0.1"]
        api_process = ProcessGroup([*api_cmd, "--port", str(api_port)], env, tmp / "api.log")
        processes.append(api_process)
        sandbox.wait_until_up(f"{sandbox_url}/_stats", headers=ADMIN)
        api_process.wait_until_up(f"{api}/healthz")
        workers = [
            ProcessGroup([str(BIN / "wagate"), "worker"], env, tmp / f"worker-{n}.log")
            for n in range(args.workers)
        ]
        processes += workers
        numbers = [t.phone_number_id for t in tenants]
        # The window opens once every number sends (the workers are up and paced).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = httpx.get(f"{sandbox_url}/_stats", headers=ADMIN, timeout=5).json()
            if all(stats["numbers"].get(p, {}).get("accepted", 0) for p in numbers):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(
                f"the workers did not start sending: {workers[0].log_text()[-2000:]}"
            )
        time.sleep(1)
        poller = StatsPoller(sandbox_url, numbers)
        prober = StatusProbe(
            f"{sandbox_url}/v24.0/{PROBE_NUMBER}/marketing_messages", ACCESS_TOKEN, url
        )
        poller.start()
        prober.start()
        time.sleep(2 * args.duration)
        poller.stop()
        run.worker_rss_kb = [rss_kb(w.pid) for w in workers]
        run.latency = prober.stop()
        seconds = settled_seconds(url, numbers, poller.started_at, poller.stopped_at)
        run.delivery = {p: poller.delivery(p, mps, seconds[p]) for p in numbers}
    finally:
        for process in reversed(processes):
            process.stop()
    return run


def run_pg(args: argparse.Namespace, tmp: Path) -> None:
    table: list[tuple[str, int, list[PgRun]]] = []
    ops: list[DepthResult] = []
    for name in args.scenarios:
        count, mps = SCENARIOS[name]
        for depth in args.depths:
            url = create_pg_database()
            try:
                tenants = [make_tenant(url, mps=mps, upstream="meta", access_token=ACCESS_TOKEN)]
                tenants += [
                    make_tenant(url, mps=mps, upstream="meta", access_token=ACCESS_TOKEN)
                    for _ in range(count - 1)
                ]
                numbers = [t.phone_number_id for t in tenants]
                rate = asyncio.run(build_backlog(url, tenants[0].project_id, numbers, depth))
                print(
                    f"scenario {name} ({count} x {mps} msg/s), depth {depth:,}: built at"
                    f" {rate:,.0f} rows/s (COPY), {args.workers} workers"
                )
                rounds = []
                for n in range(args.rounds):
                    run = pg_round(args, tmp, url, tenants, mps)
                    rounds.append(run)
                    print(f"  round {n + 1}: status latency {run.latency.line()}")
                    print(f"    workers' RSS MB {[round(kb / 1024) for kb in run.worker_rss_kb]}")
                    for pnid, delivery in run.delivery.items():
                        print(f"    {pnid}: {delivery.line()}")
                table.append((name, depth, rounds))
                result = DepthResult(depth)
                result.ops = asyncio.run(
                    measure_ops(url, numbers[0], numbers[0], numbers[0], depth)
                )
                print_ops(result.ops)
                ops.append(result)
            finally:
                drop_pg_database(url)
    print()
    print(
        f"PostgreSQL: wagate serve --no-worker, {args.workers} x wagate worker, wagate sandbox;"
        f" {2 * args.duration} s windows, {args.rounds} rounds; no accept load"
    )
    print(
        f"{'scen':>4} {'depth':>9} {'numbers':>7} {'deliv % min':>11} {'median':>7}"
        f" {'max/s':>5} {'>lim':>4} {'130429':>6} {'131056':>6} {'dup':>4} {'st p50':>6}"
        f" {'st p99':>6} {'st max':>6} {'RSS MB':>6}"
    )
    for name, depth, rounds in table:
        count, mps = SCENARIOS[name]
        shares = [d.rate / mps for r in rounds for d in r.delivery.values()]
        every = [d for r in rounds for d in r.delivery.values()]
        latency = Latency()
        for r in rounds:
            latency.extend(r.latency)
        stored = latency.stored or [0.0, 0.0]
        print(
            f"{name:>4} {depth:9,} {count:7} {min(shares):11.1%} {statistics.median(shares):7.1%}"
            f" {max(d.second_max for d in every):5} {sum(d.over for d in every):4}"
            f" {sum(d.errors.get('130429', 0) for d in every):6}"
            f" {sum(d.errors.get('131056', 0) for d in every):6}"
            f" {sum(d.duplicates for d in every):4} {statistics.median(stored):6.0f}"
            f" {statistics.quantiles(stored, n=100, method='inclusive')[98]:6.0f}"
            f" {max(stored):6.0f}"
            f" {max(kb for r in rounds for kb in r.worker_rss_kb) / 1024:6.0f}"
        )
    ops_table(ops)


# ---- main ----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


def _scenarios(text: str) -> list[str]:
    names = [v.strip().upper() for v in text.split(",") if v.strip()]
    if not names or any(n not in SCENARIOS for n in names):
        raise argparse.ArgumentTypeError(f"scenarios are A and/or B, got {text!r}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  bench/backlog --depths 0,20000 --limits 80,1000 --duration 3 --rounds 1   # smoke, ~75 s
  bench/backlog --depths 0,100000,1000000 --duration 10                     # SQLite, full
  bench/backlog --database postgresql --depths 1000000 --duration 10        # PG A and B

What each figure measures, and how: the docstring of bench/backlog.py.""",
    )
    parser.add_argument(
        "--depths",
        type=_ints,
        default=[100_000],
        help="messages queued beforehand, e.g. 0,100000,1000000",
    )
    parser.add_argument(
        "--limits",
        type=_ints,
        default=[80, 1000],
        help="SQLite: msg/s of the numbers and of the embedded sandbox, one gateway run"
        " each (default 80,1000)",
    )
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per wrk run (PostgreSQL: window is 2x)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per depth (default 2)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="SQLite: seconds of unmeasured load after each server starts (ceiling and gateway)",
    )
    parser.add_argument(
        "--backlog-number",
        choices=("same", "other"),
        default="same",
        help="SQLite: queue the backlog on the number wrk sends to (same) or on a second number",
    )
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous level")
    parser.add_argument(
        "--database", choices=("sqlite", "postgresql"), default="sqlite", help="default sqlite"
    )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=list(SCENARIOS),
        help="PostgreSQL: A (1 number at 1,000 msg/s), B (10 numbers at 80 msg/s); default A,B",
    )
    parser.add_argument(
        "--workers", type=int, default=3, help="PostgreSQL: wagate worker processes"
    )
    args = parser.parse_args()
    if args.duration < 2 or args.rounds < 1 or args.workers < 1 or 0 in args.limits:
        parser.error("--duration >= 2, --rounds >= 1, --workers >= 1 and limits > 0, please")
    os.environ["WAGATE_SQLITE_SYNCHRONOUS"] = args.synchronous
    with tempfile.TemporaryDirectory(prefix="wagate-backlog-") as name:
        if args.database == "postgresql":
            run_pg(args, Path(name))
            return
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed: apt-get install wrk")
        results = [run_depth(args, Path(name), depth) for depth in args.depths]
    summary(args, results)


if __name__ == "__main__":
    main()
