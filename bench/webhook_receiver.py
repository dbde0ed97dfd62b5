"""A customer's webhook receiver for bench/webhooks: counts what arrives, per second.

Run as its own process (`python bench/webhook_receiver.py PORT`) so that its cost is
not the gateway's. POST /hook answers 200, or 503 while it is "down" (POST /_down with
`{"seconds": N}`); GET /_stats returns the counts: events received (2xx answered),
refused while down, distinct idempotency keys, per wall-clock second, and how many
arrived out of order for their message (a `read` before the `delivered` of the same
message id, by Kapso's `message.kapso.status`).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from aiohttp import web

_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}


class Receiver:
    """What arrived, in memory."""

    def __init__(self) -> None:
        self.received = 0
        self.refused = 0
        self.keys: set[str] = set()
        self.per_second: Counter[int] = Counter()
        self.last_rank: dict[str, int] = {}
        self.out_of_order = 0
        self.down_until = 0.0
        self.first_at: float | None = None
        self.last_at: float | None = None

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        if now < self.down_until:
            self.refused += 1
            return web.Response(status=503)
        self.received += 1
        self.first_at = self.first_at or now
        self.last_at = now
        self.per_second[int(now)] += 1
        self.keys.add(request.headers.get("X-Idempotency-Key", ""))
        message = json.loads(body).get("message") or {}
        status = (message.get("kapso") or {}).get("status")
        if message.get("id") and status in _RANK:
            rank = _RANK[status]
            if rank < self.last_rank.get(message["id"], 0):
                self.out_of_order += 1
            self.last_rank[message["id"]] = max(rank, self.last_rank.get(message["id"], 0))
        return web.Response(status=200)

    async def down(self, request: web.Request) -> web.Response:
        seconds = float((await request.json())["seconds"])
        self.down_until = time.time() + seconds
        return web.json_response({"down_until": self.down_until})

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "received": self.received,
                "refused": self.refused,
                "distinct": len(self.keys),
                "out_of_order": self.out_of_order,
                "first_at": self.first_at,
                "last_at": self.last_at,
                "per_second": {str(k): v for k, v in sorted(self.per_second.items())},
            }
        )


def main() -> None:
    """Serve the receiver on 127.0.0.1:PORT until killed."""
    receiver = Receiver()
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/_down", receiver.down)
    app.router.add_get("/_stats", receiver.stats)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
