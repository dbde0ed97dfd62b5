"""Reading request bodies: never more than a limit, never longer than a deadline.

A client that announces a body and then sends it a byte at a time holds one of
the server's request slots for as long as the read waits; enough of them and
nobody else is served. Every body the gateway reads, on any route, is read
under a deadline (`WAGATE_BODY_TIMEOUT_SECONDS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wagate.domain.errors import INVALID_PARAMETER, GraphError

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class BodyTimeout(GraphError):
    """The request body did not arrive within the deadline (HTTP 408, code 100)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            INVALID_PARAMETER,
            f"The request body did not arrive within {seconds:g} s; send it at once",
            http_status=408,
        )


class _Sweeper:
    """One timer for every body read of an event loop, instead of one per request.

    `asyncio.timeout` schedules and cancels a timer per read: 5 us on a send that
    otherwise costs ~12 us. Registering a read here costs a dict insert; a sweep a
    few times a second cancels the reads past their deadline (so a deadline is kept
    to within SWEEP_SECONDS).
    """

    SWEEP_SECONDS = 0.25

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[Any], seconds: float) -> None:
        self.reading[task] = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_later(self.SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        for task, deadline in list(self.reading.items()):
            if deadline <= now:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()
        if self.reading:
            self._timer = self.loop.call_later(self.SWEEP_SECONDS, self._sweep)


_sweeper: _Sweeper | None = None


def _sweeper_of(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    global _sweeper
    if _sweeper is None or _sweeper.loop is not loop:
        _sweeper = _Sweeper(loop)
    return _sweeper


async def read_body(receive: Receive, limit: int, seconds: float) -> bytes:
    """The whole request body, refusing more than `limit` bytes or a wait past `seconds`."""
    task = asyncio.current_task()
    assert task is not None
    sweeper = _sweeper_of(task.get_loop())
    sweeper.watch(task, seconds)
    try:
        return await _read(receive, limit)
    except asyncio.CancelledError:
        if task not in sweeper.expired:
            raise
        sweeper.expired.discard(task)
        task.uncancel()
        raise BodyTimeout(seconds) from None
    finally:
        sweeper.reading.pop(task, None)


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def receive_before(receive: Receive, seconds: float) -> Receive:
    """`receive` for an app that reads the body itself: its body must arrive within `seconds`.

    Once the last body chunk is in, later calls (an app waiting for the client to
    disconnect) pass straight through.
    """
    deadline = asyncio.get_running_loop().time() + seconds
    complete = False

    async def receive_in_time() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise BodyTimeout(seconds) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return receive_in_time
