"""Retention: the worker deletes messages final for longer than the retention period.

In small batches, each its own short transaction, spaced by a pause: on SQLite, whose
single write lock the accept path needs, a batch holds it for milliseconds and then
lets the accepts and outcomes go first. What still needs a message is the store's to
say (see `queries.retention.STILL_NEEDED`).
"""

from __future__ import annotations

import asyncio
import logging

from wagate.ports import Clock, Retention

log = logging.getLogger("wagate.retention")

DAY_MS = 86_400_000


class Pruner:
    """Prunes, every `every_s`, the messages final for more than `days` days (0: never)."""

    def __init__(
        self,
        retention: Retention,
        clock: Clock,
        *,
        days: float,
        batch: int = 500,
        pause_s: float = 0.25,
        every_s: float = 300.0,
    ) -> None:
        self.retention = retention
        self.clock = clock
        self.days = days
        self.batch = batch
        self.pause_s = pause_s
        self.every_s = every_s

    @property
    def enabled(self) -> bool:
        """Whether anything is ever pruned (WAGATE_RETENTION_DAYS=0 keeps everything)."""
        return self.days > 0

    async def prune_now(self, stop: asyncio.Event | None = None) -> int:
        """Prune everything due now, a batch at a time with a pause between, until done or
        `stop` is set; how many."""
        if not self.enabled:
            return 0
        cutoff_ms = int(self.clock.now() * 1000) - int(self.days * DAY_MS)
        total = 0
        while stop is None or not stop.is_set():
            pruned = await self.retention.prune(cutoff_ms, self.batch)
            total += pruned
            if pruned < self.batch:
                break
            await self.clock.sleep(self.pause_s)
        if total:
            log.info("retention: pruned %d messages final for over %g days", total, self.days)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now and every `every_s` until `stop` is set; a failed pass is retried later."""
        if not self.enabled:
            return
        while not stop.is_set():
            try:
                await self.prune_now(stop)
            except Exception as exc:
                log.warning("retention: pruning failed (%s); trying again later", exc)
            waiting = asyncio.ensure_future(self.clock.sleep(self.every_s))
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait((waiting, stopping), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                stopping.cancel()
