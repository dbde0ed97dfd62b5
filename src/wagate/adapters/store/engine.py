"""Creating engines, and the one profile of what differs between SQLite and PostgreSQL.

Every difference between the two databases that the adapters care about is a
field or method of `Dialect`, chosen once per engine by `dialect_of`; no other
module reads the dialect's name.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Insert, Select, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from wagate.adapters.store import sqlite_driver
from wagate.settings import SQLITE_SYNCHRONOUS

T = TypeVar("T")

# The async driver of each database wagate runs on; SQLAlchemy loads it by this name.
DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}


# What WAGATE_DATABASE_URL may look like, for the message that refuses another form.
URL_FORMS = "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST:PORT/DB"


class DatabaseUrlError(ValueError):
    """WAGATE_DATABASE_URL names no database wagate can use."""


def database_url(url: str) -> URL:
    """`url` with its async driver: `postgresql://` (or `postgres://`) means
    `postgresql+asyncpg://`."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"WAGATE_DATABASE_URL is not a URL: use {URL_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":  # Heroku's and libpq's spelling
        parsed = parsed.set(drivername="postgresql")
        backend = "postgresql"
    if backend not in DRIVERS:
        raise DatabaseUrlError(f"unsupported database {backend!r}: use {URL_FORMS}")
    if parsed.get_driver_name() != DRIVERS[backend]:
        parsed = parsed.set(drivername=f"{backend}+{DRIVERS[backend]}")
    return parsed


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for PostgreSQL or an in-memory database."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def is_sqlite(url: str | URL) -> bool:
    """Whether a database URL names SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, sqlite_synchronous: str = "FULL") -> AsyncEngine:
    """An async engine; for SQLite, WAL mode with the chosen `synchronous` level.

    WAL lets readers run beside the single writer; `busy_timeout` makes a second
    process wait for the write lock instead of failing at once.
    """
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(
            parsed,
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,
        )
    synchronous = sqlite_synchronous.upper()
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite synchronous must be one of {SQLITE_SYNCHRONOUS}")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed, connect_args={"timeout": 30}, module=sqlite_driver.DBAPI)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


# The incoming row of an upsert (`excluded`), by column name.
Excluded = ReadOnlyColumnCollection[str, Any]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What wagate's SQL does differently on one database."""

    name: str
    # One writer at a time (SQLite): this process's writers queue on a FIFO lock
    # (see `begin_write`) and group commit runs one batch at a time.
    serialises_writes: bool
    # `SELECT ... FOR UPDATE SKIP LOCKED` keeps concurrent claimers off each other's
    # rows. SQLite has no row locks; its claim is serialised by the write lock.
    skips_locked_rows: bool
    # ALTER TABLE changes little (SQLite): migrations copy the table (Alembic's batch mode).
    alters_by_copy: bool
    # LISTEN/NOTIFY (PostgreSQL): an accept tells the workers of other processes at its
    # commit. Without it (SQLite) they find the work by their fallback look.
    notifies: bool
    # The dialect's own INSERT construct, the one that knows `ON CONFLICT`.
    dialect_insert: Callable[[Table], postgresql.Insert | sqlite.Insert]

    def writers(self, at_most: int) -> int:
        """How many group-commit batches may commit at once: 1 where writes serialise."""
        return 1 if self.serialises_writes else at_most

    def insert_ignoring(self, table: Table) -> Insert:
        """INSERT that skips a row whose unique key is stored already (ON CONFLICT DO NOTHING)."""
        return self.dialect_insert(table).on_conflict_do_nothing()

    def upsert(
        self,
        table: Table,
        index_elements: Sequence[str],
        set_: Sequence[str],
        where: Callable[[Excluded], ColumnElement[bool]] | None = None,
    ) -> Insert:
        """INSERT, or on a conflict of `index_elements` copy the incoming `set_` columns,
        only where `where(excluded)` holds (`excluded`: the incoming row)."""
        statement = self.dialect_insert(table)
        excluded = statement.excluded
        return statement.on_conflict_do_update(
            index_elements=list(index_elements),
            set_={name: excluded[name] for name in set_},
            where=None if where is None else where(excluded),
        )

    def locking_claimable(self, query: Select[Any]) -> Select[Any]:
        """`query` taking its rows FOR UPDATE SKIP LOCKED, where the database has row locks."""
        return query.with_for_update(skip_locked=True) if self.skips_locked_rows else query


SQLITE = Dialect(
    "sqlite",
    serialises_writes=True,
    skips_locked_rows=False,
    alters_by_copy=True,
    notifies=False,
    dialect_insert=sqlite.insert,
)
POSTGRESQL = Dialect(
    "postgresql",
    serialises_writes=False,
    skips_locked_rows=True,
    alters_by_copy=False,
    notifies=True,
    dialect_insert=postgresql.insert,
)
_DIALECTS = {dialect.name: dialect for dialect in (SQLITE, POSTGRESQL)}


def dialect_of(bind: AsyncEngine | AsyncConnection | Connection) -> Dialect:
    """The profile of the database an engine (or one of its connections) talks to."""
    return _DIALECTS[bind.dialect.name]


_write_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


async def run_batch(connection: AsyncConnection, work: Callable[[Connection], T]) -> T:
    """`work(sync_connection)`, its statements run one after another with nothing in
    between: on SQLite whole in the driver's thread (one hand-off, and a write lock held
    only as long as SQLite works), elsewhere through `run_sync`."""
    sync = connection.sync_connection
    driver = sync.connection.dbapi_connection if sync is not None else None
    if isinstance(driver, sqlite_driver.OneHopConnection):
        return await sqlite_driver.run_in_thread(driver, work, sync)
    return await connection.run_sync(work)


@asynccontextmanager
async def begin_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction; on SQLite, writers of this process take turns in FIFO order.

    SQLite has one writer at a time, and a writer that finds the lock taken sleeps
    with growing back-off: under steady load (the worker's outcome commits) a
    webhook's write could wait a second. Queueing the process's own writers on an
    asyncio lock hands the database over in arrival order instead; other processes
    still meet `busy_timeout`.

    (One writer task committing every kind of pending write in one shared
    transaction was tried and measured for issue 8: see BENCHMARKS.md. Writes of
    different kinds rarely wait at the same moment, so it merged 1.1-1.3 sessions a
    transaction and the accept rate did not move; this lock is the simpler of the two.)

    On SQLite the transaction takes the database's write lock at once (`BEGIN
    IMMEDIATE`): what it reads before its first write is then what it writes over. The
    driver's own BEGIN waits for the first INSERT or UPDATE, so a writer of another
    process (a `wagate worker` beside `wagate serve`) could commit between a read and
    the write decided on it.
    """
    if not dialect_of(engine).serialises_writes:
        async with engine.begin() as connection:
            yield connection
        return
    lock = _write_locks.get(engine)
    if lock is None:
        lock = _write_locks[engine] = asyncio.Lock()
    async with lock, engine.begin() as connection:
        driver = (
            connection.sync_connection.connection.dbapi_connection
            if connection.sync_connection
            else None
        )
        if isinstance(driver, sqlite_driver.OneHopConnection):
            driver.begin_immediate()  # with the first statement, in its hand-off
        else:
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection
