"""Measure durable accepts/s: the real endpoint against a framework-free ceiling, same run.

Both servers are granian with one worker, commit to a fresh SQLite file with
the same group committer and the same WAL/synchronous settings, and are driven
by the same `wrk` load (default 2 threads, 32 connections). Rounds alternate
between the two so that machine noise hits both alike. Prints rates, p50/p99
latency and the ratio; also checks that every 200 is a committed row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from tests.support import ProcessGroup, free_port, make_tenant  # noqa: E402

from wagate.adapters.loop import granian_loop  # noqa: E402

# Every request goes to another recipient (as in a broadcast), so no server can
# lean on a cache of parsed phone numbers.
BODY_HEAD = (
    '{"messaging_product":"whatsapp","recipient_type":"individual","to":"+44 7700 9",'
    '"type":"template","template":{"name":"promo_template","language":{"code":"en_US"}}}'
)


@dataclass
class Run:
    """One wrk run's figures."""

    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    script: Path,
    *,
    to: str | None = None,
) -> Run:
    """One wrk run of sends: each to another recipient, or all to `to` (a flood)."""
    head, tail = BODY_HEAD.split('"to":"+44 7700 9"')
    lines = ['wrk.method = "POST"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines += ["request = function()"]
    if to is None:
        lines += [
            f"  local body = '{head}\"to\":\"+44 7700 9' .. math.random(10000, 99999) .. '\"{tail}'"
        ]
    else:
        lines += [f'  local body = \'{head}"to":"{to}"{tail}\'']
    lines += ["  return wrk.format(nil, nil, nil, body)", "end"]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        print(f"    wrk socket errors: {socket_errors.group(1)}")
    return Run(rate, p50, p99, requests, errors)


def warm_up(url: str, headers: dict[str, str], args: argparse.Namespace, script: Path) -> None:
    """`--warmup` seconds of the same load, not measured: a server just started pays for
    cold caches (its interpreter's, SQLite's pages, its own) in its first seconds, and
    that cost is no more a server's steady rate for the gateway than for the ceiling."""
    if args.warmup > 0:
        wrk(url, headers, argparse.Namespace(**{**vars(args), "duration": args.warmup}), script)


def run_ceiling(args: argparse.Namespace, tmp: Path, db: Path) -> Run:
    """One wrk run against the framework-free ceiling app, committing to `db`."""
    port = free_port()
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "PYTHONPATH": str(ROOT / "bench"),
    }
    cmd = [str(BIN / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1", "--no-ws", "--loop", granian_loop()]
    cmd += ["ceiling_app:create_app"]
    process = ProcessGroup(cmd, env, tmp / "ceiling.log")
    try:
        # The ceiling answers only sends (a GET gets a 500): any answer means it is up.
        process.wait_until_up(f"http://127.0.0.1:{port}/", any_answer=True)
        headers = {"Content-Type": "application/json"}
        warm_up(f"http://127.0.0.1:{port}/send", headers, args, tmp / "ceiling.lua")
        return wrk(f"http://127.0.0.1:{port}/send", headers, args, tmp / "ceiling.lua")
    finally:
        process.stop()


def bench_ceiling(args: argparse.Namespace, tmp: Path, n: int) -> tuple[Run, int]:
    db = tmp / f"ceiling-{n}.db"
    run = run_ceiling(args, tmp, db)
    rows = sqlite3.connect(db).execute("select count(*) from accepted").fetchone()[0]
    return run, int(rows)


def bench_wagate(args: argparse.Namespace, tmp: Path, n: int) -> tuple[Run, int]:
    sys.path.insert(0, str(ROOT))

    from wagate.adapters.store.migrate import migrate

    db = tmp / f"wagate-{n}.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate(url)
    tenant = make_tenant(url)
    port = free_port()
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": url,
        "WAGATE_LOG_LEVEL": "WARNING",
        # The ceiling only accepts; by default so does the gateway (a scale-out API
        # process). --worker measures it with its embedded worker delivering too.
        "WAGATE_WORKER": "1" if args.worker else "0",
    }
    cmd = [str(BIN / "wagate"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = ProcessGroup(cmd, env, tmp / "wagate.log")
    try:
        process.wait_until_up(f"http://127.0.0.1:{port}/healthz")
        target = (
            f"http://127.0.0.1:{port}/meta/whatsapp/v24.0/{tenant.phone_number_id}"
            "/marketing_messages"
        )
        headers = {"Content-Type": "application/json", "X-API-Key": tenant.api_key}
        warm_up(target, headers, args, tmp / "wagate.lua")
        run = wrk(target, headers, args, tmp / "wagate.lua")
    finally:
        process.stop()
    rows = sqlite3.connect(db).execute("select count(*) from messages").fetchone()[0]
    return run, int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per server")
    parser.add_argument(
        "--warmup", type=int, default=3, help="seconds of unmeasured load after each start"
    )
    parser.add_argument(
        "--synchronous", default="FULL", help="SQLite synchronous level for both servers"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="run the gateway's embedded delivery worker during the load (default: off)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    os.environ["WAGATE_SQLITE_SYNCHRONOUS"] = args.synchronous
    results: dict[str, list[Run]] = {"ceiling": [], "wagate": []}
    with tempfile.TemporaryDirectory(prefix="wagate-bench-") as name:
        tmp = Path(name)
        for n in range(args.rounds):
            for label, bench in (("ceiling", bench_ceiling), ("wagate", bench_wagate)):
                run, rows = bench(args, tmp, n)
                ok = run.requests - run.errors
                print(
                    f"  round {n + 1} {label:8} {run.rate:8.0f} req/s  p50 {run.p50_ms:6.2f} ms"
                    f"  p99 {run.p99_ms:7.2f} ms  non-2xx {run.errors}  rows {rows}"
                    f" (>= {ok} answered 200)"
                )
                if rows < ok:
                    print(f"  !! {label}: {ok - rows} acknowledged messages missing")
                results[label].append(run)
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds, "
        f"SQLite WAL synchronous={args.synchronous}, granian 1 worker, "
        f"delivery worker {'on' if args.worker else 'off'}"
    )
    print(f"{'':10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for label, runs in results.items():
        print(
            f"{label:10}{statistics.median(r.rate for r in runs):10.0f}"
            f"{statistics.median(r.p50_ms for r in runs):10.2f}"
            f"{statistics.median(r.p99_ms for r in runs):10.2f}"
        )
    ratio = statistics.median(r.rate for r in results["wagate"]) / statistics.median(
        r.rate for r in results["ceiling"]
    )
    print(f"ratio wagate/ceiling: {ratio:.2f} (goal >= 0.50)")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
