"""Meta's status webhooks as Meta sends them: many POSTs side by side, one status each.

Example:

    bench/ingest                        # 6,000 messages, 18,000 POSTs, 1 and 32 at a time
    bench/ingest --messages 2000 --concurrency 1,8,32

`wagate serve` as users run it (SQLite, worker and embedded sandbox on) with one Meta
number whose --messages messages were forwarded already (the store's batch insert,
each with its wamid). The client posts, for each message, its `sent`, `delivered` and
`read` (each its own signed POST to /webhooks/meta, in that order per message, the
messages interleaved), --concurrency at a time. Printed for each concurrency: POSTs/s,
latency p50/p99, the gateway's CPU per POST (its worker process, from /proc), and that
every message ended `read`.

Meta posts a status or two a body, and in parallel: at 80 msg/s about 240 POSTs a
second. Each POST is answered once its statuses are committed.
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

import aiohttp
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from sqlalchemy import func, select  # noqa: E402
from tests.support import make_tenant, sql  # noqa: E402

from backlog import _rows, _template_row, start_serve  # noqa: E402
from wagate.adapters.store.migrate import migrate  # noqa: E402
from wagate.adapters.store.sql import SqlStore  # noqa: E402
from wagate.adapters.store.tables import messages, phone_numbers  # noqa: E402
from wagate.domain.webhooks import signature_of  # noqa: E402

APP_SECRET = "bench-ingest-app-secret"
KINDS = ("sent", "delivered", "read")


def body(waba_id: str, phone_number_id: str, wamid: str, kind: str, at: int) -> bytes:
    """One status in Meta's webhook envelope."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
        "statuses": [
            {"id": wamid, "status": kind, "timestamp": str(at), "recipient_id": "447700900000"}
        ],
    }
    entry = {"id": waba_id, "changes": [{"field": "messages", "value": value}]}
    return msgspec.json.encode({"object": "whatsapp_business_account", "entry": [entry]})


async def build(url: str, project_id: str, phone_number_id: str, count: int) -> list[str]:
    """`count` forwarded messages of the number, each with a wamid; the wamids."""
    template = _template_row(project_id, phone_number_id)
    store = SqlStore.from_url(url)
    wamids = []
    try:
        for start in range(0, count, 5000):
            rows = _rows(template, [phone_number_id], start, min(count, start + 5000))
            for row in rows:
                row["state"] = "forwarded"
                row["upstream_wamid"] = "wamid.bench" + row["id"]
                wamids.append(row["upstream_wamid"])
            await store._write_batch(rows)
    finally:
        await store.close()
    return wamids


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def post_all(target: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """POST every body, `concurrency` at a time; each one's latency in ms."""
    latencies: list[float] = []
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            for data in queue:
                headers = {
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": signature_of(data, APP_SECRET),
                }
                started = time.perf_counter()
                async with session.post(target, data=data, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"POST answered {response.status}")
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def run(args: argparse.Namespace, tmp: Path, concurrency: int) -> None:
    db = tmp / f"ingest-{concurrency}.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate(url)
    tenant = make_tenant(url, upstream="meta", access_token="bench-token")
    number = phone_numbers.c.phone_number_id == tenant.phone_number_id
    waba_id = str(sql(url, select(phone_numbers.c.waba_id).where(number))[0][0])
    wamids = asyncio.run(build(url, tenant.project_id, tenant.phone_number_id, args.messages))
    now = int(time.time())
    bodies = [
        body(waba_id, tenant.phone_number_id, wamid, kind, now + step)
        for step, kind in enumerate(KINDS)
        for wamid in wamids
    ]
    env = {
        **os.environ,
        "WAGATE_DATABASE_URL": url,
        "WAGATE_LOG_LEVEL": "WARNING",
        "WAGATE_META_APP_SECRET": APP_SECRET,
    }
    process, port, worker = start_serve(env, tmp / f"serve-{concurrency}.log")
    try:
        target = f"http://127.0.0.1:{port}/webhooks/meta"
        ticks = cpu_ticks(worker)
        started = time.perf_counter()
        latencies = asyncio.run(post_all(target, bodies, concurrency))
        elapsed = time.perf_counter() - started
        cpu_s = (cpu_ticks(worker) - ticks) / os.sysconf("SC_CLK_TCK")
    finally:
        process.stop()
    read = sql(url, select(func.count()).where(messages.c.status == "read"))[0][0]
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"  concurrency {concurrency:3d}: {len(bodies) / elapsed:7.0f} POSTs/s"
        f"  p50 {cuts[49]:6.1f} ms  p99 {cuts[98]:6.1f} ms"
        f"  gateway CPU {cpu_s * 1e6 / len(bodies):6.0f} us a POST"
        f"  messages read {read}/{args.messages}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else "",
        epilog="See the module docstring for what is measured.",
    )
    parser.add_argument("--messages", type=int, default=6000, help="messages, 3 POSTs each")
    parser.add_argument(
        "--concurrency", default="1,32", help="POSTs in flight, one run each (e.g. 1,8,32)"
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    print(f"{args.messages:,} messages, {3 * args.messages:,} single-status POSTs a run")
    with tempfile.TemporaryDirectory(prefix="wagate-bench-ingest-") as name:
        for concurrency in levels:
            run(args, Path(name), concurrency)


if __name__ == "__main__":
    main()
