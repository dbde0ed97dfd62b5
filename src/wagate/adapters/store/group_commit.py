"""Group commit: rows from concurrent requests share one transaction and one fsync.

Each caller waits for the commit that holds its row, so a caller that returns
knows its row is durable; while one batch commits, the next one gathers.

A failed batch stored nothing. If a row caused the failure (a duplicate key), the
rows are written one by one so each caller gets its own answer; if the database is
unavailable, every caller of the batch gets the error at once (one log line, not a
thousand doomed transactions).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from wagate.adapters.store.faults import is_row_fault

log = logging.getLogger(__name__)

Row = dict[str, Any]
# Writes a batch in one transaction; raises if the transaction failed.
WriteBatch = Callable[[Sequence[Row]], Awaitable[None]]
# Writes one row in its own transaction, after a batch failed: isolates the bad row.
WriteOne = Callable[[Row], Awaitable[None]]
# Whether a failure was caused by a row (so isolating rows helps) rather than the database.
IsRowFault = Callable[[BaseException], bool]


class GroupCommitter:
    """Batches rows into shared transactions; `writers` batches may commit at once."""

    def __init__(
        self,
        write_batch: WriteBatch,
        write_one: WriteOne,
        *,
        writers: int = 1,
        max_batch: int = 1000,
        linger_s: float = 0.0,
        is_row_fault: IsRowFault = is_row_fault,
    ) -> None:
        self._write_batch = write_batch
        self._write_one = write_one
        self._is_row_fault = is_row_fault
        self._writers = writers
        self._max_batch = max_batch
        # How long a writer waits for more rows before committing a batch that is
        # not full: 0 for the accept path (a caller waits on it), a little for
        # background writes, so that they cost fewer fsyncs and hold SQLite's
        # single write lock less often.
        self._linger_s = linger_s
        self._pending: list[tuple[Row, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Batches taken off `_pending` whose commit has not finished yet.
        self._in_flight = 0
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        """Start the writer tasks on the running loop."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._writers)]

    async def submit(self, row: Row) -> None:
        """Return once `row` is committed; raise what its transaction raised."""
        if self._closing:
            raise RuntimeError("the store is closing")
        self.start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._wakeup.set()
        await future

    async def close(self) -> None:
        """Commit what is pending, then stop the writers."""
        self._closing = True
        # A batch being committed is no longer pending: wait for it too, or
        # cancelling the writers would drop its rows and strand its callers.
        while self._pending or self._in_flight:
            self._wakeup.set()
            await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._linger_s > 0 and len(self._pending) < self._max_batch and not self._closing:
                await asyncio.sleep(self._linger_s)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            try:
                await self._commit(batch)
            finally:
                self._in_flight -= 1

    async def _commit(self, batch: list[tuple[Row, asyncio.Future[None]]]) -> None:
        try:
            await self._write_batch([row for row, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and self._is_row_fault(exc):
                # One bad row (say, a duplicate idempotency key) must not fail its
                # neighbours: retry each on its own so each caller gets its own answer.
                log.debug("batch of %d failed on a row; committing rows one by one", len(batch))
                await self._commit_each(batch)
                return
            log.warning("batch of %d rows not stored: %s", len(batch), _summary(exc))
            _fail(batch, exc)
            return
        self.batches += 1
        self.rows += len(batch)
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def _commit_each(self, batch: list[tuple[Row, asyncio.Future[None]]]) -> None:
        for index, (row, future) in enumerate(batch):
            try:
                await self._write_one(row)
            except Exception as exc:
                if not self._is_row_fault(exc):
                    # The database went away meanwhile: the rest would fail the same way.
                    log.warning(
                        "%d rows not stored one by one: %s", len(batch) - index, _summary(exc)
                    )
                    _fail(batch[index:], exc)
                    return
                if not future.done():
                    future.set_exception(exc)
                continue
            self.rows += 1
            if not future.done():
                future.set_result(None)


def _fail(batch: list[tuple[Row, asyncio.Future[None]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


def _summary(exc: Exception) -> str:
    """The error in one line: its class and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
