"""A gateway's store side in memory with a fake clock: what the core unit tests run on."""

from __future__ import annotations

from dataclasses import dataclass, field

from wagate.adapters.memory import MemoryDatabase, MemoryQueue, MemoryStatusStore, MemoryStore
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


@dataclass
class Memory:
    """The three in-memory adapters on one database, and the clock."""

    clock: FakeClock = field(default_factory=FakeClock)
    database: MemoryDatabase = field(default_factory=MemoryDatabase)

    def __post_init__(self) -> None:
        self.store = MemoryStore(self.database)
        self.queue = MemoryQueue(self.database)
        self.statuses = MemoryStatusStore(self.database)

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
