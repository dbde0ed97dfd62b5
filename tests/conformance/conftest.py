"""One behaviour suite, three stores: in memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.support import database_url_for, dispose_database
from wagate.adapters.memory import MemoryDatabase, MemoryQueue, MemoryStatusStore, MemoryStore
from wagate.adapters.store.queue import SqlQueue
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.statuses import SqlStatusStore
from wagate.ports import (
    Admin,
    Directory,
    MessageReader,
    Outbox,
    Queue,
    Retention,
    SchemaProbe,
    StatusStore,
    Timelines,
)


class StoreSide(Directory, Outbox, MessageReader, Admin, SchemaProbe, Protocol):
    """Every port `SqlStore` and `MemoryStore` implement."""

    async def close(self) -> None:
        """Release what the store holds."""
        ...


class QueueSide(Queue, Retention, Protocol):
    """Every port `SqlQueue` and `MemoryQueue` implement."""


class StatusSide(StatusStore, Timelines, Protocol):
    """The status ports, and the reads the suite observes clicks and opt-outs by."""

    async def events(self, wamid: str) -> list[tuple[str, str]]:
        """A message's other events: (kind, payload JSON)."""
        ...

    async def preference(self, waba_id: str, recipient: str) -> str | None:
        """The latest stop/resume of a recipient, if any."""
        ...


@dataclass(frozen=True)
class Backend:
    """The three adapters of one store, sharing its data."""

    name: str
    store: StoreSide
    queue: QueueSide
    statuses: StatusSide


KINDS: Sequence[str] = ("memory", "sqlite", "postgres")


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """'memory', or a fresh migrated database's URL."""
    if request.param == "memory":
        yield "memory"
        return
    url = database_url_for(request.param, tmp_path)
    yield url
    dispose_database(url)


@pytest.fixture
async def backend(backend_url: str) -> AsyncIterator[Backend]:
    """The store's adapters, closed after the test."""
    if backend_url == "memory":
        database = MemoryDatabase()
        yield Backend(
            "memory",
            MemoryStore(database),
            MemoryQueue(database),
            MemoryStatusStore(database),
        )
        return
    store = SqlStore.from_url(backend_url)
    queue = SqlQueue(store.engine, store.secrets)
    try:
        yield Backend(backend_url.split(":")[0], store, queue, SqlStatusStore(store.engine))
    finally:
        await queue.close()
        await store.close()
