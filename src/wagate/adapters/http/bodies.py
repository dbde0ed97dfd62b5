"""Reading request bodies: never more than a limit, never longer than a deadline.

A client that announces a body and then sends it a byte at a time holds one of
the server's request slots for as long as the read waits; enough of them and
nobody else is served. Every body the gateway reads, on any route, is read
under a deadline (`WAGATE_BODY_TIMEOUT_SECONDS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from wagate.domain.errors import GraphError

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


class BodyTimeout(GraphError):
    """The request body did not arrive within the deadline (HTTP 408, code 100)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            100,
            f"The request body did not arrive within {seconds:g} s; send it at once",
            http_status=408,
        )


async def read_body(receive: Receive, limit: int, seconds: float) -> bytes:
    """The whole request body, refusing more than `limit` bytes or a wait past `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await _read(receive, limit)
    except TimeoutError:
        raise BodyTimeout(seconds) from None


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
