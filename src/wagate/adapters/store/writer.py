"""One writer per process on SQLite: every kind of pending write shares one transaction.

SQLite has a single write lock, and with `synchronous=FULL` each commit costs an
fsync (2-5 ms here). The gateway writes for many reasons at once: batches of
accepted messages, the delivery worker's claims and outcomes, status webhooks,
reaping and expiry. When each took the lock for a transaction of its own, the
other kinds held it for about a third of the time under delivery load, and the
accept path (which a caller waits on) lost that share.

Here every write of the process is a *session* run by one writer task. The
writer opens a transaction (`BEGIN IMMEDIATE`: the lock is taken once, up front),
hands the connection to each session waiting at that moment in arrival order,
each inside a savepoint so that a session whose statements fail (a duplicate
key, say) is rolled back alone, and commits them all with one fsync. A session's
`async with` exits only once that commit is durable, so a caller never acts on a
write that could still be lost: an accept is not answered, a claimed message not
sent, a webhook not acknowledged before its rows are on disk.

A session must not open another write session inside itself (the writer waits
for the first to finish: it would wait forever); no code does, as none could
with the lock this replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

# At most this many sessions share a transaction; later ones wait for the next.
MAX_SESSIONS = 512


@dataclass(slots=True)
class _Session:
    """One caller's turn: when it may write, whether its writes held, when they are durable."""

    turn: asyncio.Future[AsyncConnection]
    # Set by the caller when its writes ended: True if they all succeeded.
    done: asyncio.Future[bool]
    committed: asyncio.Future[None]


def _session(loop: asyncio.AbstractEventLoop) -> _Session:
    return _Session(loop.create_future(), loop.create_future(), loop.create_future())


@dataclass(slots=True)
class SharedWriter:
    """Runs the write sessions of one SQLite engine, a transaction at a time."""

    engine: AsyncEngine
    max_sessions: int = MAX_SESSIONS
    _pending: deque[_Session] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _closing: bool = False
    # Figures for benchmarks and tests: transactions committed, sessions in them.
    transactions: int = 0
    sessions: int = 0

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside the shared transaction; exits once the commit is durable.

        Raises what the caller's statements raised (its writes are rolled back,
        others' are not) or, after the caller's writes, what the commit raised.
        """
        loop = asyncio.get_running_loop()
        session = _session(loop)
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # First use, or the engine outlived the event loop its writer ran on.
            self._pending.clear()
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        self._pending.append(session)
        self._wakeup.set()
        # Cancelled while waiting: the writer skips a turn nobody waits for.
        connection = await session.turn
        succeeded = False
        try:
            yield connection
            succeeded = True
        finally:
            if not session.done.done():
                session.done.set_result(succeeded)
        await session.committed

    async def close(self) -> None:
        """Stop the writer once the sessions waiting now are committed."""
        task, self._task = self._task, None
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return
        self._closing = True
        self._wakeup.set()
        await task

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    self._closing = False
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Session] = []
            while self._pending and len(batch) < self.max_sessions:
                batch.append(self._pending.popleft())
            try:
                await self._transaction(batch)
            except Exception as exc:
                _fail(batch, exc)

    async def _transaction(self, batch: list[_Session]) -> None:
        written: list[_Session] = []
        async with self.engine.connect() as connection:
            try:
                # The lock up front: no session finds it taken half-way (another
                # process still waits for it through busy_timeout).
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
                for session in batch:
                    if await self._run_session(connection, session, alone=len(batch) == 1):
                        written.append(session)
                await connection.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.rollback()
                raise
        self.transactions += 1
        self.sessions += len(written)
        for session in written:
            if not session.committed.done():
                session.committed.set_result(None)

    async def _run_session(
        self, connection: AsyncConnection, session: _Session, *, alone: bool
    ) -> bool:
        """Let one session write; whether its writes are kept in the transaction."""
        if session.turn.done():  # its caller was cancelled while waiting
            return False
        # Alone in its transaction, a session that fails rolls the transaction back;
        # beside others, only its savepoint.
        savepoint = None if alone else await connection.begin_nested()
        session.turn.set_result(connection)
        succeeded = await session.done
        if succeeded:
            if savepoint is not None:
                await savepoint.commit()
            return True
        if savepoint is not None:
            await savepoint.rollback()
        else:
            await connection.rollback()
        return False


def _fail(batch: list[_Session], exc: Exception) -> None:
    """The transaction failed: every session of it gets the error (nothing was stored)."""
    for session in batch:
        for future in (session.turn, session.committed):
            if not future.done():
                future.set_exception(exc)
                # Nobody may be left to retrieve it (a turn skipped above).
                future.exception()
                break
