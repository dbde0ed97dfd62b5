"""Serving the sandbox standalone with granian (one worker: the state lives in memory)."""

from __future__ import annotations

import dataclasses
import os

from wagate.adapters.sandbox.config import SandboxConfig

FACTORY = "wagate.adapters.sandbox.app:sandbox_app_from_env"


def run_sandbox(
    host: str = "127.0.0.1",
    port: int = 9000,
    mps: float | None = None,
    webhook_url: str | None = None,
    app_secret: str | None = None,
    *,
    status_delay: float | None = None,
    approval_delay: float | None = None,
    pair_burst: int | None = None,
    pair_interval: float | None = None,
    numbers: dict[str, str] | None = None,
    admin_token: str | None = None,
    token: str | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the sandbox until interrupted; an argument left None keeps its WAGATE_SANDBOX_* value.

    The state lives in memory, so it runs in one granian worker.
    """
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    from wagate.adapters.loop import granian_loop

    current = SandboxConfig.from_env()
    config = dataclasses.replace(
        current,
        mps=current.mps if mps is None else mps,
        webhook_url=current.webhook_url if webhook_url is None else webhook_url,
        app_secret=current.app_secret if app_secret is None else app_secret,
        status_delay=current.status_delay if status_delay is None else status_delay,
        approval_delay=current.approval_delay if approval_delay is None else approval_delay,
        pair_burst=current.pair_burst if pair_burst is None else pair_burst,
        pair_interval=current.pair_interval if pair_interval is None else pair_interval,
        numbers=current.numbers if numbers is None else numbers,
        admin_token=current.admin_token if admin_token is None else admin_token,
        token=current.token if token is None else token,
    )
    # The granian worker builds the app from the environment (factory=True).
    os.environ.update(config.to_env())
    Granian(
        FACTORY,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=1,
        loop=Loops(granian_loop()),
        log_level=LogLevels(log_level),
        log_access=False,
    ).serve()
