"""Running the Alembic migrations from code (`wagate migrate`, `wagate serve`, tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from wagate.adapters.store.engine import create_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision under migrations/versions (a test keeps the two in step). A
# database already there skips Alembic, whose import alone costs every CLI call ~0.5 s.
HEAD = "0005"


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and this database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def current_revision(url: str) -> str | None:
    """The revision the database is at; None before the first migration."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return result.scalar()
    except DBAPIError:
        return None
    finally:
        await engine.dispose()


def migrate(url: str) -> None:
    """Bring the database at `url` up to the newest schema (blocking; call off the loop)."""
    if asyncio.run(current_revision(url)) == HEAD:
        return
    from alembic import command

    command.upgrade(alembic_config(url), "head")
