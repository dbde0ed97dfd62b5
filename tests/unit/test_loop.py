"""The event loop wagate's processes run on."""

from __future__ import annotations

import asyncio

import uvloop

from wagate.adapters import loop


def test_granian_and_the_worker_run_on_uvloop_where_it_is_installed() -> None:
    async def which() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert loop.granian_loop() == "uvloop"
    assert loop.run(which()) is uvloop.Loop
