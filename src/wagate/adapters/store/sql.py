"""The Store on SQLAlchemy Core, for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from sqlalchemy import Select, and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, create_engine, is_sqlite
from wagate.adapters.store.group_commit import GroupCommitter, Row
from wagate.adapters.store.tables import (
    PHONE_NUMBER_COLUMNS,
    api_keys,
    messages,
    phone_numbers,
    projects,
)
from wagate.domain.model import (
    ApiKey,
    KeyOwner,
    MessageQuery,
    NewMessage,
    PhoneNumber,
    Project,
    StoredMessage,
)
from wagate.ports import IdempotencyConflict

_STORED_COLUMNS = [messages.c[f.name] for f in fields(StoredMessage)]
_NEW_MESSAGE_FIELDS = tuple(f.name for f in fields(NewMessage))
_INSERT_MESSAGE = insert(messages)


class SqlStore:
    """Durable storage; message inserts go through a group committer."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite has one writer at a time; PostgreSQL commits batches in parallel.
        writers = 1 if engine.dialect.name == "sqlite" else 4
        self.committer = GroupCommitter(self._write_batch, self._write_one, writers=writers)

    @classmethod
    def from_url(cls, url: str, *, sqlite_synchronous: str = "FULL") -> SqlStore:
        """A store on a new engine for `url`."""
        return cls(create_engine(url, sqlite_synchronous=sqlite_synchronous))

    @property
    def is_sqlite(self) -> bool:
        """Whether this store runs on SQLite."""
        return is_sqlite(str(self.engine.url))

    async def close(self) -> None:
        """Flush pending commits and release connections."""
        await self.committer.close()
        await self.engine.dispose()

    # ---- messages --------------------------------------------------------------------

    async def add_message(self, message: NewMessage) -> None:
        """Commit one message durably, in a batch with its concurrent neighbours."""
        # Not dataclasses.asdict: it deep-copies every value, and this is the hot path.
        row = {name: getattr(message, name) for name in _NEW_MESSAGE_FIELDS}
        row["status"] = "pending"
        row["state"] = "queued"
        row["updated_at"] = message.created_at
        row["due_at"] = message.created_at
        try:
            await self.committer.submit(row)
        except IntegrityError as exc:
            # Whichever constraint the driver names, a stored row with this key means
            # another request won the race; anything else is a real error.
            if message.idempotency_key is not None and await self.find_by_idempotency_key(
                message.project_id, message.idempotency_key
            ):
                raise IdempotencyConflict(message.idempotency_key) from exc
            raise

    async def _write_batch(self, rows: Sequence[Row]) -> None:
        async with begin_write(self.engine) as connection:
            await connection.execute(_INSERT_MESSAGE, list(rows))

    async def _write_one(self, row: Row) -> None:
        async with begin_write(self.engine) as connection:
            await connection.execute(_INSERT_MESSAGE, row)

    async def find_by_idempotency_key(self, project_id: str, key: str) -> StoredMessage | None:
        """The message a project sent with this idempotency key, if any."""
        query = select(*_STORED_COLUMNS).where(
            messages.c.project_id == project_id, messages.c.idempotency_key == key
        )
        return await self._one_message(query)

    async def release_idempotency_key(self, message_id: str) -> None:
        """Forget a message's idempotency key (its window has passed)."""
        async with begin_write(self.engine) as connection:
            await connection.execute(
                update(messages).where(messages.c.id == message_id).values(idempotency_key=None)
            )

    async def get_message(self, phone_number_id: str, message_id: str) -> StoredMessage | None:
        """One message of a phone number."""
        query = select(*_STORED_COLUMNS).where(
            messages.c.phone_number_id == phone_number_id, messages.c.id == message_id
        )
        return await self._one_message(query)

    async def list_messages(self, query: MessageQuery) -> list[StoredMessage]:
        """Up to `query.limit` messages, newest first (oldest first when paging `before`)."""
        conditions: list[Any] = [messages.c.phone_number_id == query.phone_number_id]
        if query.status is not None:
            conditions.append(messages.c.status == query.status)
        if query.since is not None:
            conditions.append(messages.c.created_at >= query.since)
        if query.until is not None:
            conditions.append(messages.c.created_at <= query.until)
        order = messages.c.seq.desc()
        if query.after_seq is not None:
            conditions.append(messages.c.seq < query.after_seq)
        elif query.before_seq is not None:
            conditions.append(messages.c.seq > query.before_seq)
            order = messages.c.seq.asc()
        statement = select(*_STORED_COLUMNS).where(and_(*conditions)).order_by(order)
        async with self.engine.connect() as connection:
            result = await connection.execute(statement.limit(query.limit))
            return [StoredMessage(**row._mapping) for row in result]

    async def _one_message(self, query: Select[Any]) -> StoredMessage | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else StoredMessage(**row._mapping)

    # ---- projects, keys, numbers -----------------------------------------------------

    async def find_project_by_key_hash(self, key_hash: str) -> KeyOwner | None:
        """The project (and its rate limit) of a live (not revoked) API key, by the key's hash."""
        query = (
            select(api_keys.c.project_id, projects.c.rate_limit)
            .join(projects, projects.c.id == api_keys.c.project_id)
            .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
        )
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else KeyOwner(row.project_id, row.rate_limit)

    async def get_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        """A phone number by its id."""
        query = select(*PHONE_NUMBER_COLUMNS).where(
            phone_numbers.c.phone_number_id == phone_number_id
        )
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else PhoneNumber(**row._mapping)

    async def create_project(self, project: Project) -> None:
        """Add a project."""
        async with begin_write(self.engine) as connection:
            await connection.execute(insert(projects).values(**asdict(project)))

    async def list_projects(self) -> list[Project]:
        """Every project, oldest first."""
        query = select(
            projects.c.id, projects.c.name, projects.c.created_at, projects.c.rate_limit
        ).order_by(projects.c.created_at, projects.c.id)
        async with self.engine.connect() as connection:
            return [Project(**row._mapping) for row in await connection.execute(query)]

    async def set_project_rate_limit(self, project_id: str, rate_limit: int | None) -> bool:
        """Set (None: clear) a project's requests per minute; False if there is no such project."""
        statement = (
            update(projects).where(projects.c.id == project_id).values(rate_limit=rate_limit)
        )
        async with begin_write(self.engine) as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount)

    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Add an API key by its hash."""
        async with begin_write(self.engine) as connection:
            await connection.execute(insert(api_keys).values(**asdict(key), key_hash=key_hash))

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        """A project's keys, revoked ones included, oldest first."""
        query = (
            select(
                api_keys.c.id,
                api_keys.c.project_id,
                api_keys.c.prefix,
                api_keys.c.label,
                api_keys.c.created_at,
                api_keys.c.revoked_at,
            )
            .where(api_keys.c.project_id == project_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self.engine.connect() as connection:
            return [ApiKey(**row._mapping) for row in await connection.execute(query)]

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        """Revoke a key; False if there is no such live key."""
        statement = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        async with begin_write(self.engine) as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount)

    async def add_phone_number(self, number: PhoneNumber, *, created_at: int) -> None:
        """Add a phone number; raises ValueError if its id is taken."""
        try:
            async with begin_write(self.engine) as connection:
                await connection.execute(
                    insert(phone_numbers).values(**asdict(number), created_at=created_at)
                )
        except IntegrityError as exc:
            raise ValueError(
                f"phone number {number.phone_number_id} exists already or its project does not"
            ) from exc
