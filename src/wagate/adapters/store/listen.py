"""Hearing other processes' accepts: PostgreSQL LISTEN on the work channel.

The accept path sends `NOTIFY wagate_work, '<phone_number_id>'` in its commit
(`queries.messages.NOTIFY_WORK`); a worker in another process hears it here, on a
connection of its own outside the pool, and wakes at once instead of at its next
fallback look. Should the connection drop, it reconnects, and tells the worker to
look at every number: notifications sent meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import dialect_of
from wagate.adapters.store.queries.messages import WEBHOOKS_PAYLOAD, WORK_CHANNEL
from wagate.ports import WorkSignal

log = logging.getLogger("wagate.listen")

# Options of SQLAlchemy's asyncpg dialect that asyncpg.connect does not take.
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


class WorkListener:
    """Rings `work` for each number another process notified; `missed` after a gap."""

    def __init__(
        self,
        engine: AsyncEngine,
        work: WorkSignal,
        missed: Callable[[], None],
        *,
        webhooks: Callable[[], None] | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.work = work
        self.missed = missed
        # Rung when another process wrote customer webhook deliveries.
        self.webhooks = webhooks
        self.retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        """Listen in the background (reconnecting) until `close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("not listening for new work (%s); the fallback look goes on", exc)
            self.listening.clear()
            await asyncio.sleep(self.retry_s)

    async def _listen_once(self) -> None:
        """Listen on one connection until it is lost."""
        _, options = self.engine.dialect.create_connect_args(self.engine.url)
        for name in _DIALECT_ONLY:
            options.pop(name, None)
        connection = await asyncpg.connect(**options)
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(WORK_CHANNEL, self._heard)
            self.listening.set()
            self.missed()  # whatever was notified before this connection listened
            if self.webhooks is not None:
                self.webhooks()
            await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close(timeout=2))

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == WEBHOOKS_PAYLOAD:
            if self.webhooks is not None:
                self.webhooks()
            return
        self.work.notify(payload)


def work_listener(
    engine: AsyncEngine,
    work: WorkSignal,
    missed: Callable[[], None],
    *,
    webhooks: Callable[[], None] | None = None,
) -> WorkListener | None:
    """A listener where the database notifies (PostgreSQL); None where it cannot (SQLite)."""
    if not dialect_of(engine).notifies:
        return None
    return WorkListener(engine, work, missed, webhooks=webhooks)
