"""Health over HTTP: the readiness answer, and the small server of a standalone worker.

`wagate serve` answers /healthz and /readyz from its Litestar app; `wagate worker
--health-port` has no API, so it serves the same two answers from a tiny aiohttp
server. No authentication (probes carry none) and nothing secret in either answer.
"""

from __future__ import annotations

import errno
from typing import Literal

import msgspec
from aiohttp import web

from wagate.core.health import Health, Readiness


class ReadinessView(msgspec.Struct):
    """The readiness answer: each check's verdict ("ok" or what is wrong), and which failed."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
    failed: list[str]


def readiness_view(readiness: Readiness) -> tuple[int, ReadinessView]:
    """The HTTP status (200 or 503) and body of a readiness."""
    ready = readiness.ready
    view = ReadinessView(
        status="ready" if ready else "unavailable",
        checks=readiness.checks,
        failed=readiness.failed,
    )
    return (200 if ready else 503), view


_encoder = msgspec.json.Encoder()


async def start_health_server(health: Health, host: str, port: int) -> web.AppRunner:
    """Serve /healthz and /readyz on host:port until the runner is cleaned up.

    A port already in use stops the process with one line naming it.
    """

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        status, view = readiness_view(await health.readiness())
        body = _encoder.encode(view)
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=False).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise SystemExit(f"health port {port} on {host} is already in use") from None
        raise SystemExit(f"cannot serve health on {host}:{port}: {exc.strerror}") from None
    return runner
