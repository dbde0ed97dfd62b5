"""Customer webhooks under load: events/s to a receiver while sends produce statuses, and the
drain after a receiver outage (issue 9).

Examples:

    bench/webhooks                                   # PostgreSQL, 1,000 msg/s, 60 s outage
    bench/webhooks --outage 600                      # the issue's 10 minutes
    bench/webhooks --database sqlite --rate 80       # `wagate serve` as users run it

PostgreSQL (default): a fresh database; one number at --rate msg/s with enough
messages queued beforehand (COPY) to send for the whole run; `wagate serve
--no-worker` (the API and Meta's webhooks), --workers `wagate worker` processes (each
delivers messages and customer webhooks), a standalone `wagate sandbox` as Meta at
--rate, reporting sent/delivered/read a second apart, and the receiver
(bench/webhook_receiver.py, its own process). SQLite: one `wagate serve` with its
embedded worker and sandbox, as users run it. The endpoint is added through the
management API: kind `kapso`, the four message events. Every send therefore makes
three events.

Phase 1, steady (--duration s): events the receiver answered per whole second,
against the statuses the gateway stored per second in the same seconds; the
gateway's notification latency (delivered_at - created_at of each delivery, the
store's own stamps: from the status's commit to the receiver's 200); arrivals out of
order for their message; duplicates (events received - distinct idempotency keys).

Phase 2, outage: the receiver answers 503 for --outage s while sends go on, then is
up again. Printed: the undelivered backlog at its peak, the time from the receiver's
recovery until the backlog is back under one second's worth of events, and the
receiver's rate during that drain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tests.support import (  # noqa: E402
    ADMIN,
    ADMIN_TOKEN,
    ProcessGroup,
    create_pg_database,
    drop_pg_database,
    free_port,
    make_tenant,
)

from backlog import ACCESS_TOKEN, APP_SECRET, build_backlog  # noqa: E402
from wagate.adapters.store.engine import create_engine  # noqa: E402
from wagate.adapters.store.migrate import migrate  # noqa: E402

STATUS_DELAY_S = 1
WARMUP_S = 5
MESSAGE_EVENTS = [
    "whatsapp.message.sent",
    "whatsapp.message.delivered",
    "whatsapp.message.read",
    "whatsapp.message.failed",
]


@dataclass
class Result:
    """One round's figures."""

    events_per_s: list[int] = field(default_factory=list)
    statuses_per_s: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    out_of_order: int = 0
    duplicates: int = 0
    peak_backlog: int = 0
    drain_s: float | None = None
    drain_rate: float = 0.0
    refused: int = 0


def query(url: str, statement: str, **params: Any) -> list[Any]:
    """Rows of one read on the gateway's database."""

    async def run() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return list(await connection.execute(text(statement), params))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def receiver_stats(receiver: str) -> dict[str, Any]:
    """The receiver's counters."""
    return httpx.get(f"{receiver}/_stats", timeout=10).json()  # type: ignore[no-any-return]


def undelivered(url: str) -> int:
    """Deliveries still waiting or out (pending or delivering)."""
    rows = query(
        url, "SELECT count(*) FROM webhook_deliveries WHERE state IN ('pending', 'delivering')"
    )
    return int(rows[0][0])


def start_processes(
    args: argparse.Namespace, tmp: Path, url: str, receiver_port: int
) -> tuple[str, dict[str, str], list[ProcessGroup]]:
    """The receiver, the gateway's API (and on PostgreSQL the standalone sandbox): the API's
    base URL and the environment its workers share."""
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": url,
        "WAGATE_LOG_LEVEL": "WARNING",
        "WAGATE_WEBHOOKS_ALLOW_PRIVATE": "1",
        "WAGATE_SANDBOX_STATUS_DELAY": str(STATUS_DELAY_S),
        "WAGATE_SANDBOX_MPS": str(args.rate),
        "WAGATE_PUBLIC_URL": api,
        "WAGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    receiver_cmd = [str(BIN / "python"), str(ROOT / "bench" / "webhook_receiver.py")]
    processes = [ProcessGroup([*receiver_cmd, str(receiver_port)], env, tmp / "receiver.log")]
    if args.database == "sqlite":
        serve = [str(BIN / "wagate"), "serve", "--host", "127.0.0.1", "--port", str(api_port)]
        processes.append(ProcessGroup(serve, env, tmp / "serve.log"))
        processes[-1].wait_until_up(f"{api}/healthz")
        return api, env, processes
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env |= {"WAGATE_META_BASE_URL": sandbox_url, "WAGATE_META_APP_SECRET": APP_SECRET}
    sandbox = [str(BIN / "wagate"), "sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)]
    sandbox += ["--mps", str(args.rate), "--webhook-url", f"{api}/webhooks/meta"]
    sandbox += ["--app-secret", APP_SECRET, "--token", ACCESS_TOKEN]
    processes.append(ProcessGroup(sandbox, env, tmp / "sandbox.log"))
    serve = [str(BIN / "wagate"), "serve", "--no-worker", "--host", "127.0.0.1"]
    processes.append(ProcessGroup([*serve, "--port", str(api_port)], env, tmp / "api.log"))
    processes[-2].wait_until_up(f"{sandbox_url}/_stats", headers=ADMIN)
    processes[-1].wait_until_up(f"{api}/healthz")
    return api, env, processes


def start_workers(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> list[ProcessGroup]:
    """The PostgreSQL run's worker processes (none on SQLite: `serve` embeds its worker)."""
    if args.database == "sqlite":
        return []
    return [
        ProcessGroup([str(BIN / "wagate"), "worker"], env, tmp / f"worker-{n}.log")
        for n in range(args.workers)
    ]


def add_endpoint(api: str, api_key: str, phone_number_id: str, receiver: str) -> str:
    """The receiver as a kapso endpoint of the number, through the management API."""
    answer = httpx.post(
        f"{api}/platform/v1/whatsapp/phone_numbers/{phone_number_id}/webhooks",
        headers={"X-API-Key": api_key},
        json={"whatsapp_webhook": {"url": f"{receiver}/hook", "events": MESSAGE_EVENTS}},
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["data"]["id"])


def whole_seconds(per_second: dict[str, int], start: float, stop: float) -> list[int]:
    """Counts of the whole seconds inside [start, stop)."""
    return [per_second.get(str(s), 0) for s in range(int(start) + 1, int(stop))]


def stored_statuses_per_second(url: str, start: float, stop: float) -> list[int]:
    """Statuses the gateway stored in each whole second of the window (its received_at)."""
    rows = query(
        url,
        "SELECT received_at / 1000 AS s, count(*) FROM message_statuses"
        " WHERE received_at >= :a AND received_at < :b GROUP BY 1",
        a=int(start * 1000),
        b=int(stop * 1000),
    )
    counts = {int(s): int(n) for s, n in rows}
    return [counts.get(s, 0) for s in range(int(start) + 1, int(stop))]


def round_once(args: argparse.Namespace, tmp: Path, n: int) -> Result:
    """One round on a fresh database."""
    result = Result()
    pg = args.database == "postgresql"
    url = create_pg_database() if pg else f"sqlite+aiosqlite:///{tmp}/webhooks-{n}.db"
    if not pg:
        migrate(url)
    processes: list[ProcessGroup] = []
    try:
        if pg:
            tenant = make_tenant(url, mps=args.rate, upstream="meta", access_token=ACCESS_TOKEN)
        else:
            tenant = make_tenant(url, mps=args.rate)
        depth = args.rate * (WARMUP_S + args.duration + 3 * args.outage + 60)
        built = asyncio.run(build_backlog(url, tenant.project_id, [tenant.phone_number_id], depth))
        print(f"  round {n + 1}: {depth:,} messages queued at {built:,.0f} rows/s")
        receiver_port = free_port()
        receiver = f"http://127.0.0.1:{receiver_port}"
        api, env, processes = start_processes(args, tmp, url, receiver_port)
        add_endpoint(api, tenant.api_key, tenant.phone_number_id, receiver)
        processes += start_workers(args, tmp, env)
        time.sleep(WARMUP_S)
        start = time.time()
        time.sleep(args.duration)
        stop = time.time()
        stats = receiver_stats(receiver)
        result.events_per_s = whole_seconds(stats["per_second"], start, stop)
        result.statuses_per_s = stored_statuses_per_second(url, start, stop)
        result.latency_ms = [
            float(ms)
            for (ms,) in query(
                url,
                "SELECT delivered_at - created_at FROM webhook_deliveries"
                " WHERE state = 'delivered' AND created_at >= :a AND created_at < :b",
                a=int(start * 1000),
                b=int(stop * 1000),
            )
        ]
        if args.outage:
            httpx.post(f"{receiver}/_down", json={"seconds": args.outage}, timeout=10)
            time.sleep(args.outage)
            up_at = time.time()
            result.peak_backlog = undelivered(url)
            received_at_up = receiver_stats(receiver)["received"]
            steady = args.rate * 3
            deadline = up_at + max(600.0, 10 * args.outage)
            while time.time() < deadline:
                backlog = undelivered(url)
                result.peak_backlog = max(result.peak_backlog, backlog)
                if backlog <= steady:
                    result.drain_s = time.time() - up_at
                    break
                time.sleep(0.5)
            drained = receiver_stats(receiver)
            elapsed = (result.drain_s or (time.time() - up_at)) or 1.0
            result.drain_rate = (drained["received"] - received_at_up) / elapsed
            stats = drained
        result.out_of_order = int(stats["out_of_order"])
        result.duplicates = int(stats["received"]) - int(stats["distinct"])
        result.refused = int(stats["refused"])
    finally:
        for process in reversed(processes):
            process.stop()
        if pg:
            drop_pg_database(url)
    return result


def pcts(values: list[float]) -> str:
    """p50 / p99 / max of `values` (ms)."""
    if len(values) < 2:
        return "no samples"
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
    return f"p50 {statistics.median(values):.0f} p99 {p99:.0f} max {max(values):.0f} ms"


def main() -> None:
    """Run the rounds and print their figures."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="What each figure measures, and how: the docstring of bench/webhooks.py.",
    )
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--rate", type=int, default=1000, help="msg/s of the number (1000)")
    parser.add_argument("--duration", type=int, default=20, help="steady window, s (20)")
    parser.add_argument("--outage", type=int, default=60, help="receiver down, s (60; 0: none)")
    parser.add_argument("--workers", type=int, default=3, help="PostgreSQL: worker processes")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("WAGATE_SQLITE_SYNCHRONOUS", "FULL")
    if args.rate < 1 or args.duration < 3 or args.outage < 0 or args.rounds < 1:
        parser.error("--rate >= 1, --duration >= 3, --outage >= 0, --rounds >= 1, please")
    results = []
    with tempfile.TemporaryDirectory(prefix="wagate-webhooks-") as name:
        for n in range(args.rounds):
            r = round_once(args, Path(name), n)
            results.append(r)
            ev = statistics.fmean(r.events_per_s) if r.events_per_s else 0.0
            st = statistics.fmean(r.statuses_per_s) if r.statuses_per_s else 0.0
            print(
                f"    steady: {ev:,.0f} events/s received (min {min(r.events_per_s, default=0)},"
                f" max {max(r.events_per_s, default=0)}) for {st:,.0f} statuses/s stored;"
                f" notification latency {pcts(r.latency_ms)}; out of order {r.out_of_order},"
                f" duplicates {r.duplicates}"
            )
            if args.outage:
                drain = "not drained" if r.drain_s is None else f"{r.drain_s:.1f} s"
                print(
                    f"    outage {args.outage} s: {r.refused:,} attempts refused, backlog peak"
                    f" {r.peak_backlog:,}, drained in {drain} at {r.drain_rate:,.0f} events/s"
                )
    print()
    setup = (
        f"PostgreSQL, serve --no-worker + {args.workers} workers + sandbox"
        if args.database == "postgresql"
        else "SQLite, wagate serve (embedded worker and sandbox)"
    )
    print(f"{setup}; {args.rate} msg/s; {args.duration} s steady; {args.outage} s outage")
    for n, r in enumerate(results):
        ev = statistics.fmean(r.events_per_s) if r.events_per_s else 0.0
        st = statistics.fmean(r.statuses_per_s) if r.statuses_per_s else 0.0
        drain = "-" if r.drain_s is None else f"{r.drain_s:.1f} s"
        print(
            f"round {n + 1}: events/s {ev:,.0f} (statuses/s {st:,.0f}), latency"
            f" {pcts(r.latency_ms)}, drain {drain} at {r.drain_rate:,.0f}/s, peak"
            f" {r.peak_backlog:,}, out of order {r.out_of_order}, duplicates {r.duplicates}"
        )


if __name__ == "__main__":
    main()
