"""Alembic environment: runs migrations on the async engine of `sqlalchemy.url`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from wagate.adapters.store.engine import create_engine, dialect_of
from wagate.adapters.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=dialect_of(connection).alters_by_copy,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("wagate migrations run online only: `wagate migrate`")
asyncio.run(_run_async())
