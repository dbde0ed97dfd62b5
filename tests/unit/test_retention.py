"""Retention: the worker prunes final messages past WAGATE_RETENTION_DAYS, a batch at a time."""

from __future__ import annotations

import asyncio

from tests.unit.memory import ManualClock, Memory, settle
from wagate.adapters.memory.tables import MessageRow
from wagate.core.retention import DAY_MS, Pruner
from wagate.domain.model import NewMessage, Status

DAYS = 90


class CountingRetention:
    """The memory queue's prune, recording each batch it deleted and when."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.batches: list[tuple[float, int]] = []

    async def prune(self, final_before_ms: int, limit: int) -> int:
        pruned = await self.memory.queue.prune(final_before_ms, limit)
        self.batches.append((self.memory.clock.now(), pruned))
        return pruned


def settled(memory: Memory, status: Status, days_ago: float) -> int:
    """A message that reached `status` that many days ago (state as the queue leaves it)."""
    seq = memory.database.next_seq()
    at = int(memory.clock.now() * 1000 - days_ago * DAY_MS)
    message = NewMessage(
        f"m{seq}", "p", "n", "+1", "1", "phone", "{}", "t", "en", None, at, at, None, None
    )
    memory.database.messages[seq] = MessageRow(
        seq,
        message,
        status=status,
        state="done" if status == "failed" else "forwarded",
        updated_at=at,
    )
    return seq


async def test_final_messages_older_than_the_retention_go_in_batches_spaced_by_a_pause() -> None:
    memory = Memory()
    old = [settled(memory, "read", DAYS + 1) for _ in range(5)]
    kept = [settled(memory, "read", DAYS - 1), settled(memory, "delivered", DAYS + 10)]
    retention = CountingRetention(memory)
    start = memory.clock.now()
    pruner = Pruner(retention, memory.clock, days=DAYS, batch=2, pause_s=0.5)
    assert await pruner.prune_now() == 5
    assert retention.batches == [(start, 2), (start + 0.5, 2), (start + 1.0, 1)]
    assert sorted(memory.database.messages) == kept
    assert not set(old) & set(memory.database.messages)


async def test_zero_days_keeps_everything() -> None:
    memory = Memory()
    settled(memory, "failed", 10_000)
    retention = CountingRetention(memory)
    pruner = Pruner(retention, memory.clock, days=0)
    assert await pruner.prune_now() == 0
    await asyncio.wait_for(pruner.run(asyncio.Event()), 1)  # returns at once
    assert retention.batches == []
    assert len(memory.database.messages) == 1


async def test_the_worker_prunes_at_start_and_then_every_period() -> None:
    clock = ManualClock()
    memory = Memory(clock=clock)
    retention = CountingRetention(memory)
    pruner = Pruner(retention, clock, days=DAYS, every_s=300.0)
    stop = asyncio.Event()
    running = asyncio.create_task(pruner.run(stop))
    await settle()
    assert len(retention.batches) == 1
    settled(memory, "read", DAYS + 1)
    await clock.advance(299.0, step=10.0)
    assert len(memory.database.messages) == 1
    await clock.advance(2.0)
    assert memory.database.messages == {}
    stop.set()
    await asyncio.wait_for(running, 1)


async def test_a_stopping_worker_stops_pruning_between_batches() -> None:
    memory = Memory()
    for _ in range(5):
        settled(memory, "failed", DAYS + 1)
    retention = CountingRetention(memory)
    stop = asyncio.Event()

    class StopAfterFirst(CountingRetention):
        async def prune(self, final_before_ms: int, limit: int) -> int:
            stop.set()
            return await retention.prune(final_before_ms, limit)

    pruner = Pruner(StopAfterFirst(memory), memory.clock, days=DAYS, batch=2)
    assert await pruner.prune_now(stop) == 2
    assert len(memory.database.messages) == 3
