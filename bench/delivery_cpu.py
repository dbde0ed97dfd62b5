"""What delivery alone costs `wagate serve`'s event loop: CPU a message, no accepts.

Example:

    bench/delivery_cpu                      # 80 msg/s, 3 rounds of 10 s
    bench/delivery_cpu --rate 1000 --rounds 2

`wagate serve` as users run it (SQLite, worker on, embedded sandbox at --rate,
statuses a second apart) with a backlog on one number (the store's batch insert),
and no client: the process only claims, sends to its sandbox, records outcomes and
ingests the sandbox's status webhooks. After a few seconds of that, the CPU time of
each of its threads is read from /proc before and after a --seconds window. Printed:
the event loop's thread (the one that also serves the API) in % of a core and in ms
a message, and the process's other threads (SQLite's).

Every share of a core the loop spends delivering is one the accept path does not
have: this is the figure to move when `bench/backlog`'s accept ratio with the worker
on trails the one with it off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("WAGATE_SQLITE_SYNCHRONOUS", "FULL")
from tests.support import make_tenant  # noqa: E402

from backlog import build_backlog, start_serve  # noqa: E402
from wagate.adapters.store.migrate import migrate  # noqa: E402


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime of each thread of a process, in clock ticks."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def one_round(args: argparse.Namespace, tmp: Path, n: int) -> tuple[float, float]:
    """(loop thread, other threads) in % of a core over the window."""
    url = f"sqlite+aiosqlite:///{tmp / f'delivery-{n}.db'}"
    migrate(url)
    tenant = make_tenant(url, mps=args.rate)
    depth = int(args.rate * (args.warmup + args.seconds + 10))
    asyncio.run(build_backlog(url, tenant.project_id, [tenant.phone_number_id], depth))
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": url,
        "WAGATE_LOG_LEVEL": "WARNING",
        "WAGATE_WORKER": "1",
        "WAGATE_SANDBOX_MPS": str(args.rate),
        "WAGATE_SANDBOX_STATUS_DELAY": "1",
    }
    process, _, worker = start_serve(env, tmp / f"serve-{n}.log")
    try:
        time.sleep(args.warmup)
        before = thread_ticks(worker)
        started = time.monotonic()
        time.sleep(args.seconds)
        after = thread_ticks(worker)
        elapsed = time.monotonic() - started
    finally:
        process.stop()
    hz = os.sysconf("SC_CLK_TCK")
    used = {tid: (after[tid] - before.get(tid, 0)) / hz / elapsed * 100 for tid in after}
    loop = used.pop(worker, 0.0)
    return loop, sum(used.values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else "",
        epilog="See the module docstring for what is measured.",
    )
    parser.add_argument("--rate", type=int, default=80, help="msg/s of the number and sandbox")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    loops, others = [], []
    with tempfile.TemporaryDirectory(prefix="wagate-bench-delivery-") as name:
        for n in range(args.rounds):
            loop, other = one_round(args, Path(name), n)
            loops.append(loop)
            others.append(other)
            print(
                f"  round {n + 1}: loop thread {loop:5.1f}% of a core"
                f" ({loop * 10 / args.rate:.2f} ms a message), other threads {other:5.1f}%"
            )
    loop = statistics.median(loops)
    print(
        f"delivery at {args.rate} msg/s, no accepts: loop thread {loop:.1f}% of a core"
        f" = {loop * 10 / args.rate:.2f} ms a message (median of {args.rounds});"
        f" other threads {statistics.median(others):.1f}%"
    )


if __name__ == "__main__":
    main()
