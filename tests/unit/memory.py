"""A gateway's store side in memory with a fake clock: what the core unit tests run on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from wagate.adapters.memory import (
    MemoryDatabase,
    MemoryNotifications,
    MemoryQueue,
    MemoryStatusStore,
    MemoryStore,
)
from wagate.core import admin
from wagate.domain.model import PhoneNumber

START = 1_800_000_000.0


class FakeClock:
    """A clock that only moves when told to, or when something sleeps on it."""

    def __init__(self, now: float = START) -> None:
        self.at = now

    def now(self) -> float:
        """The fake time."""
        return self.at

    async def sleep(self, seconds: float) -> None:
        """Move time on instead of waiting."""
        self.at += max(0.0, seconds)


class ManualClock(FakeClock):
    """A fake clock whose sleepers wait until the test moves time past their deadline."""

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        """Wait until `advance` reaches now + `seconds`."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.at + seconds, woken)
        self._sleepers.append(entry)
        try:
            await woken
        finally:
            self._sleepers.remove(entry)

    async def advance(self, seconds: float, step: float = 0.25) -> None:
        """Move time on in steps, letting whoever wakes at each step run."""
        target = self.at + seconds
        while self.at < target:
            self.at = min(target, self.at + step)
            for deadline, woken in list(self._sleepers):
                if deadline <= self.at and not woken.done():
                    woken.set_result(None)
            await settle()


async def settle() -> None:
    """Let every task that can run, run (nothing here waits on real time)."""
    for _ in range(50):
        await asyncio.sleep(0)


@dataclass
class Memory:
    """The in-memory adapters on one database, and the clock."""

    clock: FakeClock = field(default_factory=FakeClock)
    database: MemoryDatabase = field(default_factory=MemoryDatabase)

    def __post_init__(self) -> None:
        self.store = MemoryStore(self.database)
        self.queue = MemoryQueue(self.database)
        self.statuses = MemoryStatusStore(self.database)
        self.notifications = MemoryNotifications(self.database)

    async def number(
        self, *, mps: int = 80, phone_number_id: str = "106540352242922"
    ) -> PhoneNumber:
        """A sandbox number in a new project."""
        project, _ = await admin.create_project(self.store, self.clock, "unit")
        return await admin.add_number(
            self.store,
            self.clock,
            project_id=project.id,
            phone_number_id=phone_number_id,
            waba_id="102290129340398",
            access_token="token-1",
            mps=mps,
        )
