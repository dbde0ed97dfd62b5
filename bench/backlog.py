"""Accepts, delivery, queue operations and memory with a backlog queued (issue 8, first version).

For each depth (messages queued before the gateway starts) this builds a fresh
SQLite database, queues the backlog (see --backlog-number) through the store's
own batch insert (`SqlStore._write_batch`, the group committer's path, with rows
shaped as `add_message` shapes them, ~5,000 rows per transaction), then:

- runs `wagate serve` as users run it (embedded worker on, embedded sandbox at
  80 msg/s) and the framework-free ceiling (`bench/ceiling_app.py`), both granian
  with one worker, alternating, driven by the same `wrk` load: distinct recipients
  and one recipient flooded (the gateway; the ceiling parses no recipient, so it
  runs one load per round). Prints req/s, p50/p99 and the ratio to the ceiling;
- while the gateway runs (both wrk loads): each number's delivery rate against
  its limit (the embedded sandbox's per-number `_stats`, polled every 0.25 s),
  the highest rate over any ~1 s between two polls (not whole-second buckets),
  the 130429 and 131056 the sandbox answered, and the RSS of every process of
  the gateway's process group (the granian worker is the child);
- after the gateway stops, in process against the same database file with
  `SqlQueue`/`SqlStore`: p50/p99 of claim (a number with due work), reap_leases,
  expire, reconcile, and `list_messages` (first page, and with `status=`).

Which number holds the backlog (--backlog-number): `same` (default) queues it on
the number wrk sends to, so one number delivers at 80 msg/s at every depth and a
change across depths is the depth's, not a doubled delivery load; wrk's messages
then wait behind the backlog (the flood meets pair pacing only at depth 0).
`other` queues it on a second number (a second tenant): the flood meets pair
pacing at every depth, but once there is a backlog two numbers deliver (160
sends/s of outcomes and statuses instead of 80).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tests.support import (  # noqa: E402
    ADMIN,
    ADMIN_TOKEN,
    ProcessGroup,
    free_port,
    make_tenant,
)

from accept import BODY_HEAD, Run, run_ceiling, wrk  # noqa: E402
from wagate.adapters.store.migrate import migrate  # noqa: E402
from wagate.adapters.store.queue import SqlQueue  # noqa: E402
from wagate.adapters.store.sql import SqlStore  # noqa: E402
from wagate.core.accept import new_message_id  # noqa: E402
from wagate.domain.delivery import DEFAULT_TTL_S  # noqa: E402
from wagate.domain.model import MessageQuery  # noqa: E402
from wagate.domain.recipients import resolve_recipient  # noqa: E402
from wagate.domain.validation import decode_request  # noqa: E402

LIMIT_MPS = 80  # the numbers' mps and the embedded sandbox's default
BATCH_ROWS = 5000
FLOOD_TO = "447700900123"
OPS_RUNS = 50


@dataclass
class Delivery:
    """The backlog number's sends at the sandbox while the gateway ran."""

    seconds: float = 0.0
    accepted: int = 0
    second_max: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


@dataclass
class DepthResult:
    depth: int
    build_rows_s: float = 0.0
    ceiling: list[Run] = field(default_factory=list)
    distinct: list[Run] = field(default_factory=list)
    flood: list[Run] = field(default_factory=list)
    delivery: list[Delivery] = field(default_factory=list)
    # The accept number's own sends (what wrk queued: distinct, then one recipient).
    accept_delivery: list[Delivery] = field(default_factory=list)
    rss_kb: list[dict[str, int]] = field(default_factory=list)
    ops: dict[str, tuple[float, float]] = field(default_factory=dict)


# ---- building the backlog -------------------------------------------------------------


def _row(project_id: str, phone_number_id: str, to: str, now_ms: int) -> dict[str, Any]:
    """A row as `SqlStore.add_message` builds it from the accept path's `NewMessage`."""
    head, tail = BODY_HEAD.split('"to":"+44 7700 9"')
    body = f'{head}"to":"{to}"{tail}'.encode()
    request = decode_request(body)
    recipient = resolve_recipient(request.to, request.recipient)
    return {
        "id": new_message_id(),
        "project_id": project_id,
        "phone_number_id": phone_number_id,
        "recipient_input": recipient.input,
        "recipient": recipient.address,
        "recipient_kind": recipient.kind,
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


async def build_backlog(url: str, project_id: str, phone_number_id: str, depth: int) -> float:
    """Queue `depth` messages in transactions of BATCH_ROWS; rows/s of the build."""
    store = SqlStore.from_url(url, sqlite_synchronous=os.environ["WAGATE_SQLITE_SYNCHRONOUS"])
    # One template row; each message differs by id and recipient (distinct recipients).
    template = _row(project_id, phone_number_id, "447700000000", int(time.time() * 1000))
    started = time.perf_counter()
    try:
        done = 0
        while done < depth:
            now_ms = int(time.time() * 1000)
            rows = []
            for i in range(done, min(depth, done + BATCH_ROWS)):
                digits = f"4477{i:08d}"
                rows.append(
                    {
                        **template,
                        "id": new_message_id(),
                        "recipient_input": digits,
                        "recipient": digits,
                        "request": template["request"].replace("447700000000", digits),
                        "created_at": now_ms,
                        "updated_at": now_ms,
                        "due_at": now_ms,
                        "expires_at": now_ms + DEFAULT_TTL_S * 1000,
                    }
                )
            await store._write_batch(rows)
            done += len(rows)
    finally:
        await store.close()
    elapsed = time.perf_counter() - started
    return depth / elapsed if elapsed else 0.0


# ---- load -------------------------------------------------------------------------------


def bench_ceiling(args: argparse.Namespace, tmp: Path, tag: str) -> Run:
    return run_ceiling(args, tmp, tmp / f"ceiling-{tag}.db")


# ---- the gateway's delivery and memory -------------------------------------------------


class StatsPoller(threading.Thread):
    """Samples the backlog number's sandbox counters every 0.25 s."""

    def __init__(self, sandbox_url: str, phone_number_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.sandbox_url = sandbox_url
        self.phone_number_ids = phone_number_ids
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.last: dict[str, Any] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
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

    def delivery(self, phone_number_id: str) -> Delivery:
        """One number's sends while polled; the sandbox's errors (all numbers)."""
        samples = [(t, counts[phone_number_id]) for t, counts in self.samples]
        if len(samples) < 2:
            return Delivery()
        (t0, a0), (t1, a1) = samples[0], samples[-1]
        second_max = 0
        for i, (t, a) in enumerate(samples):
            # The most sends in any window of (about) one whole second.
            for u, b in samples[i + 1 :]:
                if u - t >= 1.0:
                    second_max = max(second_max, round((b - a) / (u - t)))
                    break
        errors: dict[str, int] = dict(self.last.get("errors", {}))
        return Delivery(t1 - t0, a1 - a0, second_max, errors)


def group_rss_kb(pgid: int) -> dict[str, int]:
    """VmRSS of each process of a process group, by `pid:name`."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        # Fields after the parenthesised name: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) != pgid:
            continue
        rss = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), "0"
        )
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        role = "serve" if int(entry.name) == pgid else "worker"
        found[f"{role}:{entry.name}:{name}"] = int(rss)
    return found


def bench_gateway(
    args: argparse.Namespace,
    tmp: Path,
    url: str,
    accept_tenant: Any,
    backlog_number: str,
    result: DepthResult,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": url,
        "WAGATE_LOG_LEVEL": "WARNING",
        "WAGATE_WORKER": "1",
        "WAGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "WAGATE_PUBLIC_URL": base,
    }
    cmd = [str(BIN / "wagate"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = ProcessGroup(cmd, env, tmp / "wagate.log")
    try:
        process.wait_until_up(f"{base}/healthz")
        numbers = sorted({backlog_number, accept_tenant.phone_number_id})
        poller = StatsPoller(f"{base}/sandbox", numbers)
        poller.start()
        target = f"{base}/meta/whatsapp/v24.0/{accept_tenant.phone_number_id}/marketing_messages"
        headers = {"Content-Type": "application/json", "X-API-Key": accept_tenant.api_key}
        result.distinct.append(wrk(target, headers, args, tmp / "d.lua"))
        result.flood.append(wrk(target, headers, args, tmp / "f.lua", to=FLOOD_TO))
        result.rss_kb.append(group_rss_kb(process.pid))
        poller.stopping.set()
        poller.join()
        result.delivery.append(poller.delivery(backlog_number))
        result.accept_delivery.append(poller.delivery(accept_tenant.phone_number_id))
    finally:
        process.stop()


# ---- queue operations, in process --------------------------------------------------------


async def measure_ops(
    url: str, backlog_number: str, accept_number: str, claim_number: str
) -> dict[str, tuple[float, float]]:
    """p50/p99 ms of each queue operation; claims take `claim_number`'s due messages."""
    store = SqlStore.from_url(url, sqlite_synchronous=os.environ["WAGATE_SQLITE_SYNCHRONOUS"])
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
            claims = queue.claim(
                claim_number, "bench", now + i, lease_s=30, horizon_s=1, limit=LIMIT_MPS
            )
            claimed += len(await timed("claim", claims))
        for i in range(OPS_RUNS):
            # Past every lease of the claims above: the first run puts them all back.
            await timed("reap_leases", queue.reap_leases(now + OPS_RUNS + 60 + i))
        for _ in range(OPS_RUNS):
            await timed("expire", queue.expire(time.time()))
        for _ in range(OPS_RUNS):
            await timed("reconcile", queue.reconcile(time.time()))
        pages = {backlog_number: "backlog", accept_number: "accept"}  # one entry if the same
        for number, tag in pages.items():
            for _ in range(OPS_RUNS):
                await timed(f"list {tag}", store.list_messages(MessageQuery(number)))
            for _ in range(OPS_RUNS):
                query = MessageQuery(number, status="failed")
                await timed(f"list {tag} status=failed", store.list_messages(query))
        print(f"    ops: {OPS_RUNS} claims took {claimed} messages of {claim_number}")
    finally:
        await queue.close()
        await store.close()
    return {
        name: (statistics.median(values), statistics.quantiles(values, n=100)[98])
        for name, values in timings.items()
    }


# ---- main ----------------------------------------------------------------------------------


def run_depth(args: argparse.Namespace, tmp: Path, depth: int) -> DepthResult:
    result = DepthResult(depth)
    db = tmp / f"backlog-{depth}.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate(url)
    accept_tenant = make_tenant(url, mps=LIMIT_MPS)
    same = args.backlog_number == "same"
    backlog = accept_tenant if same else make_tenant(url, mps=LIMIT_MPS)
    result.build_rows_s = asyncio.run(
        build_backlog(url, backlog.project_id, backlog.phone_number_id, depth)
    )
    print(f"depth {depth:,}: built at {result.build_rows_s:,.0f} rows/s")
    for n in range(args.rounds):
        ceiling = bench_ceiling(args, tmp, f"{depth}-{n}")
        result.ceiling.append(ceiling)
        bench_gateway(args, tmp, url, accept_tenant, backlog.phone_number_id, result)
        d, f, dl = result.distinct[-1], result.flood[-1], result.delivery[-1]
        ad = result.accept_delivery[-1]
        print(
            f"  round {n + 1}: ceiling {ceiling.rate:6.0f} req/s | distinct {d.rate:6.0f}"
            f" ({d.rate / ceiling.rate:.2f}) p50 {d.p50_ms:.1f} p99 {d.p99_ms:.1f} ms"
            f" non-2xx {d.errors} | flood {f.rate:6.0f} ({f.rate / ceiling.rate:.2f})"
            f" p50 {f.p50_ms:.1f} p99 {f.p99_ms:.1f} ms non-2xx {f.errors}"
        )
        print(
            f"    delivery: backlog number {dl.rate:.1f} msg/s = {dl.rate / LIMIT_MPS:.1%} of"
            f" {LIMIT_MPS}, max {dl.second_max}/s; accept number {ad.rate:.1f} msg/s, max"
            f" {ad.second_max}/s; over {dl.seconds:.0f} s; sandbox errors {dl.errors or 'none'}"
        )
        print(f"    RSS kB {result.rss_kb[-1]}")
    result.ops = asyncio.run(
        measure_ops(
            url,
            backlog.phone_number_id,
            accept_tenant.phone_number_id,
            # Claims need due work: with no backlog, what wrk queued on the accept number.
            backlog.phone_number_id if depth else accept_tenant.phone_number_id,
        )
    )
    for name, (p50, p99) in result.ops.items():
        print(f"    {name:28} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms")
    sqlite3.connect(db).close()
    return result


def summary(args: argparse.Namespace, results: list[DepthResult]) -> None:
    med = statistics.median
    same = args.backlog_number == "same"
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds;"
        f" SQLite WAL synchronous={os.environ['WAGATE_SQLITE_SYNCHRONOUS']}; wagate serve"
        f" (worker on, embedded sandbox {LIMIT_MPS} msg/s); backlog on the"
        f" {args.backlog_number} number; medians of the rounds"
    )
    print(
        f"{'depth':>9} {'build r/s':>9} {'ceiling':>7} {'distinct':>8} {'ratio':>5}"
        f" {'p99 ms':>7} {'flood':>6} {'ratio':>5} {'p99 ms':>7} {'deliv %':>7}"
        f" {'max/s':>5} {'acc m/s':>7} {'130429':>6} {'131056':>6} {'RSS MB':>6}"
    )
    for r in results:
        ceiling = med(x.rate for x in r.ceiling)
        distinct = med(x.rate for x in r.distinct)
        flood = med(x.rate for x in r.flood)
        delivery = med(x.rate for x in r.delivery) / LIMIT_MPS
        accept_mps = med(x.rate for x in r.accept_delivery)
        # With no backlog the backlog number has nothing to send: no figure.
        delivery_cell = f"{delivery:7.1%}" if r.depth or same else f"{'-':>7}"
        max_cell = max(x.second_max for x in r.delivery) if r.depth or same else "-"
        errors: dict[str, int] = {}
        for x in r.delivery:  # each round's gateway (and sandbox) starts from zero
            for code, n in x.errors.items():
                errors[code] = errors.get(code, 0) + n
        workers = [kb for rss in r.rss_kb for k, kb in rss.items() if k.startswith("worker")]
        rss_mb = max(workers or [0]) / 1024
        print(
            f"{r.depth:9,} {r.build_rows_s:9,.0f} {ceiling:7.0f} {distinct:8.0f}"
            f" {distinct / ceiling:5.2f} {med(x.p99_ms for x in r.distinct):7.1f} {flood:6.0f}"
            f" {flood / ceiling:5.2f} {med(x.p99_ms for x in r.flood):7.1f} {delivery_cell}"
            f" {max_cell:>5} {accept_mps:7.1f} {errors.get('130429', 0):6}"
            f" {errors.get('131056', 0):6} {rss_mb:6.0f}"
        )
    names = list(results[0].ops)
    print()
    print(
        "queue operations, in process after the gateway stopped, p99 ms (p50) over",
        OPS_RUNS,
        "runs",
    )
    print(f"{'operation':28}" + "".join(f"{r.depth:>18,}" for r in results))
    for name in names:
        cells = "".join(
            f"{r.ops[name][1]:10.2f} ({r.ops[name][0]:5.2f})" for r in results if name in r.ops
        )
        print(f"{name:28}{cells}")
    print("goals: ratios >= 0.50; delivery >= 98% and max/s <= limit; zero 130429;")
    print("       operation p99 and RSS flat across depths")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--depth", type=int, default=100_000, help="messages queued beforehand")
    parser.add_argument("--depths", help="comma-separated depths, e.g. 0,100000,1000000")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per depth")
    parser.add_argument(
        "--backlog-number",
        choices=("same", "other"),
        default="same",
        help="queue the backlog on the number wrk sends to (same: one number delivering at"
        " 80 msg/s at every depth) or on a second number (other: two numbers delivering"
        " once there is a backlog)",
    )
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous level")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    os.environ["WAGATE_SQLITE_SYNCHRONOUS"] = args.synchronous
    depths = [int(d) for d in args.depths.split(",")] if args.depths else [args.depth]
    with tempfile.TemporaryDirectory(prefix="wagate-backlog-") as name:
        results = [run_depth(args, Path(name), depth) for depth in depths]
    summary(args, results)


if __name__ == "__main__":
    main()
