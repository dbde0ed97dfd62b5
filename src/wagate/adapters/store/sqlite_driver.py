"""SQLAlchemy's aiosqlite adapter with one hand-off to the connection's thread a statement.

aiosqlite runs each sqlite3 call in the connection's own thread and hands the result
back to the event loop. SQLAlchemy's adapter makes three or four such calls for every
statement: create a cursor, execute, fetch the rows, close the cursor. Each hand-off
wakes the loop from the other thread, and on the loop that wake-up costs more than
SQLite's work: an ingest of one status (eight statements) took 2.0 ms of the loop's
CPU, a transaction of the accept path about as much. Here a statement is one
function run in the connection's thread (cursor, execute, rows, close) and one
hand-off back: the same sqlite3 calls, in the same order, on the same thread.

Everything else (connections, transactions, errors, server-side cursors) is
SQLAlchemy's aiosqlite dialect unchanged; `create_engine` passes this module's
`DBAPI` as the engine's `module`.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

# What a statement leaves behind: description, rowcount, lastrowid, rows (None: no rows).
_Done = tuple[Any, int, int | None, list[Any] | None]
T = TypeVar("T")

# The aiosqlite connection whose thread is running a `run_in_thread` function, if any.
_in_thread = threading.local()


def _begin(connection: sqlite3.Connection, immediate: bool) -> None:
    """Open the transaction `begin_immediate` asked for, where none is open yet."""
    if immediate and not connection.in_transaction:
        connection.execute("BEGIN IMMEDIATE")


def _run(
    connection: sqlite3.Connection,
    operation: str,
    parameters: Any,
    immediate: bool = False,
    many: bool = False,
) -> _Done:
    """One statement (`many`: an executemany) in the connection's thread: executed, its
    rows read, its cursor closed."""
    _begin(connection, immediate)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description and not many else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A DBAPI cursor whose statements each cost one hand-off (see the module's docstring).

    It holds no sqlite3 cursor between calls: what SQLAlchemy reads after a statement
    (description, rowcount, lastrowid, rows) is kept from the statement's run.
    """

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # The parent's __init__ would open an aiosqlite cursor (a hand-off of its own).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized: Any = {}
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        """The last statement's column description (None for one without rows)."""
        return self._description

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed."""
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        """The rowid of the last row inserted (sqlite3's value, None before any)."""
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        """Rows `fetchmany` returns by default (the rows are in memory already)."""
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        """Nothing to close: the sqlite3 cursor was closed in its thread."""

    def close(self) -> None:
        """Forget the rows not fetched."""
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        """A statement: in its connection's thread at once when called there (see
        `run_in_thread`), else handed off."""
        if not self._here(operation, parameters, many=False):
            return super().execute(operation, parameters)
        return None

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        """Like `execute`, with one row of parameters after another."""
        if not self._here(operation, seq_of_parameters, many=True):
            return super().executemany(operation, seq_of_parameters)
        return None

    def _here(self, operation: Any, parameters: Any, *, many: bool) -> bool:
        """Run the statement now if this is the connection's thread in `run_in_thread`."""
        if getattr(_in_thread, "connection", None) is not self._connection:
            return False
        try:
            raw = self._connection._conn
            self._keep(_run(raw, operation, parameters, self._immediate(), many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        return True

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            done: _Done = await self._connection._execute(
                _run, self._connection._conn, operation, parameters, self._immediate()
            )
        self._keep(done)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            done: _Done = await self._connection._execute(
                _run, self._connection._conn, operation, seq_of_parameters, self._immediate(), True
            )
        self._keep(done)

    def _immediate(self) -> bool:
        """Whether this statement opens the transaction `begin_immediate` asked for."""
        connection = self._adapt_connection
        if isinstance(connection, OneHopConnection) and connection.immediate:
            connection.immediate = False
            return True
        return False

    def _keep(self, done: _Done) -> None:
        self._description, self._rowcount, self._lastrowid, rows = done
        self._rows = collections.deque(rows) if rows is not None else collections.deque()

    def nextset(self) -> None:
        """SQLite returns one result set a statement."""


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection, making `OneHopCursor`s.

    A commit or rollback with no transaction open (after a read: sqlite3 opens one
    only for a write) costs nothing, and `begin_immediate` opens the transaction with
    the first statement, in its hand-off.
    """

    __slots__ = ("immediate",)
    _cursor_cls = OneHopCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # The next statement first runs BEGIN IMMEDIATE (see `begin_immediate`).
        self.immediate = False

    def begin_immediate(self) -> None:
        """Take the database's write lock with the next statement (`BEGIN IMMEDIATE` run
        before it, in the same hand-off): what the transaction reads is then what it
        writes over. A transaction that runs no statement takes nothing."""
        self.immediate = True

    def _open(self) -> bool:
        # `in_transaction` reads SQLite's autocommit flag; no statement of this
        # connection runs now (SQLAlchemy holds it), so reading it here is safe.
        raw: sqlite3.Connection | None = self._connection._connection
        return raw is None or raw.in_transaction

    def commit(self) -> None:
        """Commit the open transaction, if there is one."""
        self.immediate = False
        if self._open():
            super().commit()

    def rollback(self) -> None:
        """Roll back the open transaction, if there is one."""
        self.immediate = False
        if self._open():
            super().rollback()


def _call_in_thread(connection: Any, work: Callable[[Any], T], argument: Any) -> T:
    """In the connection's thread: `work(argument)`, its statements run right here."""
    _in_thread.connection = connection
    try:
        return work(argument)
    finally:
        _in_thread.connection = None


async def run_in_thread(
    driver: OneHopConnection, work: Callable[[Any], T], sync_connection: Any
) -> T:
    """Run `work(sync_connection)` (SQLAlchemy's synchronous Connection over `driver`)
    whole in the connection's thread: one hand-off for all its statements, where each
    would otherwise cost one, and no wait for the event loop between them (a write
    transaction holds SQLite's write lock that long).

    The loop awaits meanwhile and nothing else uses the connection (the adapter's
    mutex is held). `work` must make only statements: a commit, a rollback or a
    server-side cursor would wait for the event loop it is blocking.
    """
    connection = driver._connection
    async with driver._execute_mutex:
        result: T = await connection._execute(_call_in_thread, connection, work, sync_connection)
    return result


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI adapter whose connections make `OneHopCursor`s."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        """An aiosqlite connection (its thread a daemon, as SQLAlchemy makes it)."""
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True
        return OneHopConnection(self, await_(connection))


DBAPI = OneHopDBAPI(aiosqlite, sqlite3)
