"""The process's one SQLite writer: concurrent writes of every kind share a transaction.

Real SQLite files; the writer is reached as the adapters reach it, through
`begin_write`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, close_writer, create_engine, shared_writer

CREATE = "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)"
INSERT = text("INSERT INTO t (k, v) VALUES (:k, :v)")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with engine.begin() as connection:
        await connection.exec_driver_sql(CREATE)
    yield engine
    await close_writer(engine)
    await engine.dispose()


def rows(engine: AsyncEngine) -> list[tuple[str, str]]:
    """What another connection (another process would) sees committed."""
    path = engine.url.database
    assert path is not None
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute("SELECT k, v FROM t").fetchall())


async def write(engine: AsyncEngine, key: str, value: str = "v") -> None:
    async with begin_write(engine) as connection:
        await connection.execute(INSERT, {"k": key, "v": value})


async def test_concurrent_writes_share_transactions_and_all_commit(engine: AsyncEngine) -> None:
    await asyncio.gather(*(write(engine, f"k{i}") for i in range(200)))

    assert len(rows(engine)) == 200
    writer = shared_writer(engine)
    assert writer is not None
    assert writer.sessions == 200
    # 200 writers arriving together need far fewer commits (fsyncs) than 200.
    assert writer.transactions <= 20


async def test_a_write_is_durable_when_its_block_exits(engine: AsyncEngine) -> None:
    async def write_then_look(key: str) -> list[tuple[str, str]]:
        await write(engine, key)
        return rows(engine)

    seen = await asyncio.gather(*(write_then_look(f"k{i}") for i in range(20)))

    for i, committed in enumerate(seen):
        assert (f"k{i}", "v") in committed


async def test_a_failing_session_is_rolled_back_alone(engine: AsyncEngine) -> None:
    await write(engine, "taken")

    async def two_rows_then_a_duplicate() -> None:
        async with begin_write(engine) as connection:
            await connection.execute(INSERT, {"k": "lost", "v": "v"})
            await connection.execute(INSERT, {"k": "taken", "v": "again"})

    results = await asyncio.gather(
        write(engine, "before"),
        two_rows_then_a_duplicate(),
        write(engine, "after"),
        return_exceptions=True,
    )

    assert results[0] is None
    assert isinstance(results[1], IntegrityError)
    assert results[2] is None
    # The failing session's first row went with it; its neighbours' rows stayed.
    assert rows(engine) == [("after", "v"), ("before", "v"), ("taken", "v")]
    writer = shared_writer(engine)
    assert writer is not None
    assert writer.transactions == 2


async def test_a_session_that_raises_alone_leaves_nothing(engine: AsyncEngine) -> None:
    async def write_then_change_mind() -> None:
        async with begin_write(engine) as connection:
            await connection.execute(INSERT, {"k": "half", "v": "v"})
            raise RuntimeError("the caller changed its mind")

    with pytest.raises(RuntimeError):
        await write_then_change_mind()

    await write(engine, "next")
    assert rows(engine) == [("next", "v")]


async def test_a_caller_cancelled_while_waiting_is_skipped(engine: AsyncEngine) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> None:
        async with begin_write(engine) as connection:
            await connection.execute(INSERT, {"k": "slow", "v": "v"})
            entered.set()
            await release.wait()

    first = asyncio.create_task(slow())
    await entered.wait()
    waiting = asyncio.create_task(write(engine, "cancelled"))
    await asyncio.sleep(0.01)
    waiting.cancel()
    release.set()
    await first
    await write(engine, "later")

    assert waiting.cancelled()
    assert rows(engine) == [("later", "v"), ("slow", "v")]


async def test_a_failed_commit_fails_every_session_of_it(engine: AsyncEngine) -> None:
    await write(engine, "kept")
    # Another process holds the write lock past our busy timeout: BEGIN IMMEDIATE fails.
    path = engine.url.database
    assert path is not None
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        fast = create_engine(f"sqlite+aiosqlite:///{path}")
        event.listen(fast.sync_engine, "connect", _give_up_soon)
        try:
            results = await asyncio.gather(
                *(write(fast, f"k{i}") for i in range(5)), return_exceptions=True
            )
        finally:
            await close_writer(fast)
            await fast.dispose()
    finally:
        blocker.rollback()
        blocker.close()

    assert all(isinstance(result, Exception) for result in results)
    assert rows(engine) == [("kept", "v")]
    # The writer is not stuck: the next write goes through.
    await write(engine, "after")
    assert rows(engine) == [("after", "v"), ("kept", "v")]


def _give_up_soon(dbapi_connection: Any, _record: Any) -> None:
    """After the engine's own pragmas: give up on a busy database after 50 ms."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=50")
    cursor.close()


def test_an_engine_outlives_an_event_loop(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")

    async def first() -> None:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(CREATE)
        await write(engine, "one")

    async def second() -> None:
        await write(engine, "two")
        await close_writer(engine)
        await engine.dispose()

    asyncio.run(first())
    asyncio.run(second())
    assert rows(engine) == [("one", "v"), ("two", "v")]
