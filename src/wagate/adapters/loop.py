"""The event loop every wagate process runs on: uvloop where it is installed.

The send endpoint with the delivery worker on is bound by the loop's own
overhead: thread hand-offs from the database drivers, timers, socket reads. With
uvloop, `bench/accept --worker` went from 0.38 to 0.46 of the ceiling on the same
machine, and the ceiling itself (also on uvloop, under granian) from 6,300 to
8,200 req/s. On Windows, where uvloop does not exist, asyncio's own loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def _uvloop() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    return uvloop


def granian_loop() -> Literal["uvloop", "asyncio"]:
    """The loop granian's workers run on (named, not left to granian's `auto`)."""
    return "uvloop" if _uvloop() is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the fastest loop available."""
    uvloop = _uvloop()
    if uvloop is None:  # pragma: no cover - Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
