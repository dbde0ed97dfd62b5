"""Pacing benchmark: does one number reach Meta's limit, with no 130429 and statuses on time?

For each limit (80 and 1,000 msg/s) a fresh SQLite gateway accepts ~10 s worth
of messages over HTTP with its worker off, then restarts with its embedded
worker on and delivers them to a standalone sandbox paced at the same limit,
which posts sent/delivered/read webhooks back to the gateway. Measured:

- achieved msg/s at the sandbox: `_stats.accepted` polled every 100 ms with
  timestamps; accepts between the first and the last poll inside the sending
  period over the time between them (a lower bound from the polls just
  outside it is printed too), and the slowest and fastest whole second;
- 130429s (and any other error) the sandbox answered, and duplicate sends;
- statuses stored (`SELECT count(*) FROM message_statuses`, polled beside `_stats`);
- status lag: the sandbox runs with a timed webhook sender (the same app and
  sender, `flush` wrapped in timers), which records per webhook POST its round
  trip (the gateway answers after committing: the ingest latency) and the lag
  from the earliest due time of the statuses in it to that answer (so it
  includes the sender's 50 ms flush cadence); plus the tail: the last POST
  started -> the first DB poll that sees all 3 x N statuses.

Also a granian ASGI factory (`pacing:timed_sandbox`) for that sandbox process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from wagate.adapters.sandbox.app import SandboxApp
from wagate.adapters.sandbox.config import SandboxConfig
from wagate.adapters.sandbox.webhooks import WebhookSender, build_posts

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
APP_SECRET = "pacing-bench-secret"
# The sandbox's operator routes (`_stats`) need this bearer token.
ADMIN_TOKEN = "pacing-bench-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
POLL_S = 0.1
IN_FLIGHT = 64
# Sandbox status delay: accept -> sent -> delivered -> read, this many seconds apart.
STATUS_DELAY = 0.05

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# ---- the sandbox process: the real app, its webhook sender timed ---------------------


@dataclass
class PostTimes:
    """What the timed sender saw, in seconds (wall clock, shared with the bench)."""

    posts: int = 0
    updates: int = 0
    round_trips: list[float] = field(default_factory=list)
    # Per POST: from the earliest due time of the statuses in it to the gateway's answer.
    lags: list[float] = field(default_factory=list)
    last_post_started: float = 0.0
    last_post_done: float = 0.0


class TimedSender(WebhookSender):
    """The sandbox's webhook sender with each POST timed (flush as in WebhookSender.flush)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times = PostTimes()

    async def flush(self) -> None:
        """Post every update that is due now, timing each POST."""
        updates = self.state.schedule.take_due(self.state.clock.now())
        if not updates:
            return
        oldest_due = min(update.due for update in updates)
        for body, count in build_posts(updates, self.config.webhook_batch):
            started = time.time()
            ok = await self._post(body, count)
            done = time.time()
            if not ok:
                self._spawn_retry(body, count)
                continue
            times = self.times
            times.posts += 1
            times.updates += count
            times.round_trips.append(done - started)
            times.lags.append(done - oldest_due)
            times.last_post_started, times.last_post_done = started, done


def timed_sandbox() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Granian factory: the sandbox from `WAGATE_SANDBOX_*`, plus `GET /_bench/webhooks`."""
    config = SandboxConfig.from_env()
    sandbox = SandboxApp(config)
    sender = TimedSender(sandbox.state, config.webhook_url or "")
    sandbox.sender = sender

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/webhooks":
            body = msgspec.json.encode(sender.times)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await sandbox(scope, receive, send)

    return app


# ---- the bench --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One poll: sandbox counters and stored statuses at a wall-clock time."""

    at: float
    accepted: int
    statuses: int


@dataclass
class Result:
    """One case's figures."""

    limit: int
    count: int
    rate: float
    rate_lower_bound: float
    second_min: float
    second_max: float
    throttled: int
    other_errors: dict[str, int]
    duplicates: int
    statuses: int
    forwarded: int
    round_trip_mean_ms: float
    round_trip_max_ms: float
    lag_max_ms: float
    lag_p99_ms: float
    tail_lag_ms: float


def send_body(i: int) -> bytes:
    """Message `i`: its own recipient, ending in 2 so the sandbox delivers and reads it."""
    return (
        '{"messaging_product":"whatsapp","recipient_type":"individual",'
        f'"to":"+1 415 {i:06d}2","type":"template",'
        '"template":{"name":"promo_template","language":{"code":"en_US"}}}'
    ).encode()


def enqueue(base_url: str, phone_number_id: str, api_key: str, count: int) -> float:
    """POST `count` messages, IN_FLIGHT at a time; seconds taken."""
    import aiohttp

    url = f"{base_url}/meta/whatsapp/v24.0/{phone_number_id}/marketing_messages"
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    async def run() -> None:
        pending = iter(range(count))
        connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def sender() -> None:
                for i in pending:
                    async with session.post(url, data=send_body(i), headers=headers) as response:
                        if response.status != 200:
                            raise SystemExit(f"enqueue: {response.status} {await response.text()}")

            await asyncio.gather(*[sender() for _ in range(IN_FLIGHT)])

    started = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - started


class Poller(threading.Thread):
    """Polls `_stats` and the statuses table every POLL_S until told to stop."""

    def __init__(self, sandbox_url: str, db_path: Path) -> None:
        super().__init__(daemon=True)
        self.sandbox_url = sandbox_url
        self.db_path = db_path
        self.samples: list[Sample] = []
        self.last_stats: dict[str, Any] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        import httpx

        database = sqlite3.connect(self.db_path, timeout=5)
        try:
            with httpx.Client(timeout=5) as client:
                while not self.halt.is_set():
                    before = time.time()
                    stats = client.get(f"{self.sandbox_url}/_stats", headers=ADMIN).json()
                    at = (before + time.time()) / 2
                    stored = database.execute("SELECT count(*) FROM message_statuses").fetchone()
                    self.last_stats = stats
                    self.samples.append(Sample(at, stats["accepted"], int(stored[0])))
                    self.halt.wait(max(0.0, POLL_S - (time.time() - before)))
        finally:
            database.close()


def achieved_rate(samples: list[Sample], count: int) -> tuple[float, float, float, float]:
    """Achieved msg/s from the polls; (rate, lower bound, slowest and fastest whole second).

    The rate counts the accepts between the first and the last poll that fall
    inside the sending period, over the time between them. The lower bound
    spans from the last poll before any accept to the first poll after the
    last one, so it is at most one poll interval at each end too long.
    """
    sending = [s for s in samples if 0 < s.accepted < count]
    first = sending[0]
    last = sending[-1]
    rate = (last.accepted - first.accepted) / (last.at - first.at)
    begin = max((s.at for s in samples if s.accepted == 0), default=first.at)
    end = next(s.at for s in samples if s.accepted >= count)
    lower_bound = count / (end - begin)
    # Whole seconds inside the sending period: how even the pacing is.
    per_second: list[float] = []
    index = 0
    for j, sample in enumerate(sending):
        if sample.at - sending[index].at >= 1.0:
            earlier = sending[index]
            per_second.append((sample.accepted - earlier.accepted) / (sample.at - earlier.at))
            index = j
    return rate, lower_bound, min(per_second, default=rate), max(per_second, default=rate)


def run_case(limit: int, count: int, tmp: Path, label: str, env: dict[str, str]) -> Result:
    """One limit: fresh database, sandbox and gateway; deliver `count` and measure."""
    import httpx
    from tests.support import GatewayProcess, ProcessGroup, free_port, make_tenant

    from wagate.adapters.store.migrate import migrate

    db_path = tmp / f"{label}.db"
    database_url = f"sqlite+aiosqlite:///{db_path}"
    migrate(database_url)
    tenant = make_tenant(database_url, mps=limit, upstream="meta", access_token="bench-token")
    phone_number_id, api_key = tenant.phone_number_id, tenant.api_key
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    gateway = GatewayProcess(
        database_url,
        tmp / f"{label}-gateway.log",
        WAGATE_WORKER="0",
        WAGATE_META_BASE_URL=sandbox_url,
        WAGATE_META_APP_SECRET=APP_SECRET,
        WAGATE_LOG_LEVEL="WARNING",
        WAGATE_AUTH_CACHE_SECONDS="2",
        **env,
    )
    sandbox_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])
        ),
        "WAGATE_SANDBOX_MPS": str(limit),
        "WAGATE_SANDBOX_WEBHOOK_URL": f"{gateway.base_url}/webhooks/meta",
        "WAGATE_SANDBOX_APP_SECRET": APP_SECRET,
        "WAGATE_SANDBOX_STATUS_DELAY": str(STATUS_DELAY),
        "WAGATE_SANDBOX_ADMIN_TOKEN": ADMIN_TOKEN,
        "WAGATE_SANDBOX_TOKEN": "bench-token",
    }
    sandbox_cmd = [str(BIN / "granian"), "--interface", "asgi", "--factory", "--no-ws"]
    sandbox_cmd += ["--host", "127.0.0.1", "--port", str(sandbox_port), "--workers", "1"]
    sandbox_cmd += ["--log-level", "warning", "pacing:timed_sandbox"]
    sandbox_log = tmp / f"{label}-sandbox.log"
    sandbox = ProcessGroup(sandbox_cmd, sandbox_env, sandbox_log)
    poller = Poller(sandbox_url, db_path)
    try:
        sandbox.wait_until_up(f"{sandbox_url}/_stats", headers=ADMIN)
        gateway.start()
        seconds = enqueue(gateway.base_url, phone_number_id, api_key, count)
        load = os.getloadavg()[0]
        print(
            f"  {label}: enqueued {count} in {seconds:.1f} s; restarting with the worker on"
            f" (load average {load:.1f} on {os.cpu_count()} CPUs)"
        )
        gateway.stop()
        gateway.env["WAGATE_WORKER"] = "1"
        poller.start()
        gateway.start()
        deadline = time.monotonic() + 2 * count / limit + 30
        while time.monotonic() < deadline:
            time.sleep(0.2)
            samples = list(poller.samples)
            if samples and samples[-1].accepted >= count and samples[-1].statuses >= 3 * count:
                break
        else:
            print(f"  !! {label}: not done after the deadline: {poller.last_stats}")
        time.sleep(2 * POLL_S)
        poller.halt.set()
        poller.join()
        times = msgspec.json.decode(
            httpx.get(f"{sandbox_url}/_bench/webhooks", timeout=5).content, type=PostTimes
        )
    finally:
        poller.halt.set()
        gateway.stop()
        sandbox.stop()
    with sqlite3.connect(db_path) as database:
        forwarded = database.execute(
            "SELECT count(*) FROM messages WHERE state = 'forwarded' AND upstream_wamid IS NOT NULL"
        ).fetchone()[0]
    samples = poller.samples
    stats = poller.last_stats
    with (tmp / f"{label}-samples.csv").open("w") as out:
        out.write("at,accepted,statuses\n")
        out.writelines(f"{s.at:.3f},{s.accepted},{s.statuses}\n" for s in samples)
    rate, lower_bound, second_min, second_max = achieved_rate(samples, count)
    all_stored = next((s.at for s in samples if s.statuses >= 3 * count), float("nan"))
    lags = sorted(times.lags) or [float("nan")]
    round_trips = times.round_trips or [float("nan")]
    errors = dict(stats["errors"])
    throttled = errors.pop("130429", 0)
    return Result(
        limit=limit,
        count=count,
        rate=rate,
        rate_lower_bound=lower_bound,
        second_min=second_min,
        second_max=second_max,
        throttled=throttled,
        other_errors=errors,
        duplicates=stats["duplicate_sends"],
        statuses=samples[-1].statuses,
        forwarded=int(forwarded),
        round_trip_mean_ms=1000 * statistics.fmean(round_trips),
        round_trip_max_ms=1000 * max(round_trips),
        lag_max_ms=1000 * lags[-1],
        lag_p99_ms=1000 * lags[int(0.99 * (len(lags) - 1))],
        tail_lag_ms=1000 * (all_stored - times.last_post_started),
    )


def report(result: Result, label: str) -> None:
    """One line per run."""
    print(
        f"  {label}: {result.rate:7.1f} msg/s ({100 * result.rate / result.limit:5.1f}%),"
        f" >= {result.rate_lower_bound:.1f}; whole seconds {result.second_min:.0f}"
        f"-{result.second_max:.0f}; 130429: {result.throttled}; other errors:"
        f" {result.other_errors or 0}; duplicates: {result.duplicates};"
        f" forwarded {result.forwarded}/{result.count}; statuses {result.statuses}"
        f"/{3 * result.count}; POST round trip mean {result.round_trip_mean_ms:.1f}"
        f" max {result.round_trip_max_ms:.1f} ms; status lag p99 {result.lag_p99_ms:.0f}"
        f" max {result.lag_max_ms:.0f} ms; tail {result.tail_lag_ms:.0f} ms"
    )


def spread(values: list[float], fmt: str) -> str:
    """Median and (min-max) of the rounds."""
    middle = format(statistics.median(values), fmt)
    if len(values) == 1:
        return middle
    return f"{middle} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=3, help="runs per limit")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of sending per run")
    parser.add_argument(
        "--limits", default="80,1000", help="comma-separated msg/s limits to measure"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep databases, logs and polled samples in this directory"
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the gateway (repeatable), e.g. WAGATE_MAX_BODY_BYTES=4194304",
    )
    args = parser.parse_args()
    limits = [int(limit) for limit in args.limits.split(",")]
    gateway_env = dict(item.split("=", 1) for item in args.gateway_env)
    results: dict[int, list[Result]] = {limit: [] for limit in limits}
    with tempfile.TemporaryDirectory(prefix="wagate-pacing-") as name:
        tmp = Path(name)
        if args.keep is not None:
            tmp = args.keep
            tmp.mkdir(parents=True, exist_ok=True)
        for n in range(args.rounds):
            for limit in limits:
                label = f"{limit}/s round {n + 1}"
                count = int(limit * args.seconds)
                slug = label.replace("/", "-").replace(" ", "-")
                result = run_case(limit, count, tmp, slug, gateway_env)
                report(result, label)
                results[limit].append(result)
    print()
    print(
        f"{args.rounds} round(s) per limit, median (min-max); SQLite gateway with its embedded"
        f" worker; sandbox status delay {STATUS_DELAY} s; polls every {POLL_S * 1000:.0f} ms"
    )
    if gateway_env:
        print(f"gateway environment: {gateway_env}")
    header = (
        f"{'limit':>6} {'achieved msg/s':>22} {'% of limit':>20} {'130429':>7}"
        f" {'statuses stored':>16} {'max status lag ms':>20} {'tail ms':>14}"
    )
    print(header)
    for limit, runs in results.items():
        stored = min(r.statuses for r in runs)
        print(
            f"{limit:>6} {spread([r.rate for r in runs], '.1f'):>22}"
            f" {spread([100 * r.rate / limit for r in runs], '.1f'):>20}"
            f" {sum(r.throttled for r in runs):>7}"
            f" {f'{stored}/{3 * runs[0].count}':>16}"
            f" {spread([r.lag_max_ms for r in runs], '.0f'):>20}"
            f" {spread([r.tail_lag_ms for r in runs], '.0f'):>14}"
        )
    print("goal: >= 98% of the limit, zero 130429, every status stored within 1 s")
    for limit, runs in results.items():
        met = [
            r.rate >= 0.98 * limit
            and r.throttled == 0
            and r.statuses == 3 * r.count
            and r.lag_max_ms <= 1000
            for r in runs
        ]
        print(f"{limit:>6}: goal met in {sum(met)} of {len(met)} run(s)")


if __name__ == "__main__":
    main()
