"""Running the Alembic migrations from code (`wagate migrate`, tests), and the schema check
every other process makes at start (`require_schema`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from wagate.adapters.store.engine import create_engine
from wagate.core.health import schema_problem

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision under migrations/versions (a test keeps the two in step). A
# database already there skips Alembic, whose import alone costs every CLI call ~0.5 s.
HEAD = "0008"
# Every revision this code knows (a file per revision, named after it): a database at
# one of them but HEAD is behind; at any other, it was migrated by a newer wagate.
KNOWN = frozenset(
    path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py")
)

_REVISION = text("SELECT version_num FROM alembic_version")


async def revision_of(connection: AsyncConnection) -> str | None:
    """The revision the connected database is at; None before the first migration."""
    try:
        result = await connection.execute(_REVISION)
    except DBAPIError as exc:
        if "alembic_version" in str(exc):  # no such table: no schema yet
            return None
        raise
    return result.scalar()


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and this database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def current_revision(url: str) -> str | None:
    """The revision the database is at; None before the first migration.

    Raises when the database cannot be reached.
    """
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await revision_of(connection)
    finally:
        await engine.dispose()


def migrate(url: str) -> None:
    """Bring the database at `url` up to the newest schema (blocking; call off the loop)."""
    if asyncio.run(current_revision(url)) == HEAD:
        return
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def require_schema(url: str) -> bool:
    """Stop the process (one line) unless the database's schema is this code's HEAD.

    A database with no schema at all is a new installation: it is created (True), so a
    first `wagate serve` just works. One behind or unknown is left to `wagate migrate`,
    run once before new processes start, never by whichever process starts first.
    """
    revision = asyncio.run(current_revision(url))
    if revision is None:
        migrate(url)
        return True
    problem = schema_problem(revision, HEAD, KNOWN)
    if problem is not None:
        raise SystemExit(problem)
    return False
