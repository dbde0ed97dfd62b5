"""The SQLite driver: one hand-off to the connection's thread a statement, same results."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, create_engine, run_batch

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(20), nullable=False, unique=True),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh SQLite file with one table."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def handoffs(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Each function aiosqlite runs in a connection's thread, counted by name."""
    counted: Counter[str] = Counter()
    original: Callable[..., Any] = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Callable[..., Any], *a: Any) -> Any:
        counted[getattr(fn, "__name__", repr(fn))] += 1
        return await original(self, fn, *a)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return counted


async def test_a_read_is_one_handoff_and_its_rows_arrive(
    engine: AsyncEngine, handoffs: Counter[str]
) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(things), [{"name": "a"}, {"name": "b"}])
    async with engine.connect() as connection:  # a connection the pool has already
        await connection.execute(text("SELECT 1"))
    handoffs.clear()
    async with engine.connect() as connection:
        rows = (await connection.execute(select(things.c.name).order_by(things.c.id))).all()
    assert [row.name for row in rows] == ["a", "b"]
    # aiosqlite's own cursors took four (cursor, execute, fetchall, close), and the
    # connection's return to the pool a fifth (a rollback of nothing).
    assert sum(handoffs.values()) == 1, handoffs


async def test_a_write_transaction_is_begin_statements_and_commit(
    engine: AsyncEngine, handoffs: Counter[str]
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    handoffs.clear()
    async with begin_write(engine) as connection:
        result = await connection.execute(insert(things).values(name="c"))
        assert result.inserted_primary_key == (1,)
        await connection.execute(insert(things), [{"name": "d"}, {"name": "e"}])
    # Two statements (the first opens the transaction with BEGIN IMMEDIATE), COMMIT.
    assert sum(handoffs.values()) == 3, handoffs
    async with engine.connect() as connection:
        assert (await connection.execute(select(things.c.name))).scalars().all() == [
            "c",
            "d",
            "e",
        ]


async def test_an_error_rolls_the_transaction_back_and_the_connection_serves_on(
    engine: AsyncEngine,
) -> None:

    async def twice() -> None:
        async with begin_write(engine) as connection:
            await connection.execute(insert(things).values(name="x"))
            await connection.execute(insert(things).values(name="x"))

    with pytest.raises(IntegrityError):
        await twice()
    async with begin_write(engine) as connection:
        await connection.execute(insert(things).values(name="y"))
        updated = await connection.execute(
            things.update().where(things.c.name == "y").values(name="z")
        )
        assert updated.rowcount == 1
    async with engine.connect() as connection:
        assert (await connection.execute(select(things.c.name))).scalars().all() == ["z"]


async def test_a_write_transaction_holds_the_write_lock_from_its_first_read(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # Another process's writer must wait for this transaction even while it only reads:
    # what it read is what it writes over.
    other = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    try:
        async with begin_write(engine) as connection:
            await connection.execute(select(things.c.name))
            async with other.connect() as elsewhere:
                await elsewhere.exec_driver_sql("PRAGMA busy_timeout=0")
                with pytest.raises(OperationalError, match="locked"):
                    await elsewhere.execute(insert(things).values(name="w"))
    finally:
        await other.dispose()


async def test_a_batch_runs_every_statement_in_the_connections_thread_in_one_handoff(
    engine: AsyncEngine, handoffs: Counter[str]
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    handoffs.clear()
    loop_thread = threading.get_ident()
    ran_in: list[int] = []

    def work(sync: Connection) -> list[str]:
        ran_in.append(threading.get_ident())
        sync.execute(insert(things).values(name="f"))
        sync.execute(insert(things), [{"name": "g"}, {"name": "h"}])
        changed = sync.execute(things.update().where(things.c.name == "h").values(name="i"))
        assert changed.rowcount == 1
        return list(sync.execute(select(things.c.name).order_by(things.c.id)).scalars())

    async with begin_write(engine) as connection:
        names = await run_batch(connection, work)
    assert names == ["f", "g", "i"]
    assert ran_in != [loop_thread]
    # The batch (BEGIN IMMEDIATE and four statements), then COMMIT.
    assert sum(handoffs.values()) == 2, handoffs
    async with engine.connect() as connection:
        assert (await connection.execute(select(things.c.name))).scalars().all() == names


async def test_a_batch_that_fails_rolls_its_transaction_back(engine: AsyncEngine) -> None:
    def twice(sync: Connection) -> None:
        sync.execute(insert(things).values(name="x"))
        sync.execute(insert(things).values(name="x"))

    with pytest.raises(IntegrityError):
        async with begin_write(engine) as connection:
            await run_batch(connection, twice)
    async with begin_write(engine) as connection:
        await run_batch(connection, lambda sync: sync.execute(insert(things).values(name="y")))
    async with engine.connect() as connection:
        assert (await connection.execute(select(things.c.name))).scalars().all() == ["y"]
