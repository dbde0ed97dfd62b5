"""The Store on SQLAlchemy Core, for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from secrets import token_hex
from typing import Any

from sqlalchemy import Select, and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, create_engine, is_sqlite
from wagate.adapters.store.faults import is_row_fault
from wagate.adapters.store.group_commit import GroupCommitter, Row
from wagate.adapters.store.secrets import SecretBox
from wagate.adapters.store.tables import (
    PHONE_NUMBER_COLUMNS,
    api_keys,
    installation,
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
from wagate.ports import IdempotencyConflict, StoreUnavailable

_STORED_COLUMNS = [messages.c[f.name] for f in fields(StoredMessage)]
_NEW_MESSAGE_FIELDS = tuple(f.name for f in fields(NewMessage))
_INSERT_MESSAGE = insert(messages)
WEBHOOK_SECRET_KEY = "webhook_secret"


def phone_number_of(row: Any, box: SecretBox) -> PhoneNumber:
    """A `PhoneNumber` from a row of PHONE_NUMBER_COLUMNS, its access token decrypted."""
    number = PhoneNumber(**row._mapping)
    return replace(number, access_token=box.open(number.access_token))


class SqlStore:
    """Durable storage; message inserts go through a group committer."""

    def __init__(self, engine: AsyncEngine, secrets: SecretBox | None = None) -> None:
        """A store on `engine`; `secrets` defaults to the key of this database (see secrets.py)."""
        self.engine = engine
        self.secrets = secrets or SecretBox(engine.url)
        # SQLite has one writer at a time; PostgreSQL commits batches in parallel.
        writers = 1 if engine.dialect.name == "sqlite" else 4
        self.committer = GroupCommitter(self._write_batch, self._write_one, writers=writers)

    @classmethod
    def from_url(
        cls, url: str, *, sqlite_synchronous: str = "FULL", secret_key: str | None = None
    ) -> SqlStore:
        """A store on a new engine for `url`; `secret_key` None reads WAGATE_SECRET_KEY."""
        engine = create_engine(url, sqlite_synchronous=sqlite_synchronous)
        return cls(engine, SecretBox(engine.url, secret_key))

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
        except Exception as exc:
            if is_row_fault(exc):
                raise
            # The group committer logged it once for the whole batch.
            raise StoreUnavailable("the message was not stored") from exc

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
        return None if row is None else phone_number_of(row, self.secrets)

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
        row = {**asdict(number), "access_token": self.secrets.seal(number.access_token)}
        try:
            async with begin_write(self.engine) as connection:
                await connection.execute(insert(phone_numbers).values(**row, created_at=created_at))
        except IntegrityError as exc:
            raise ValueError(
                f"phone number {number.phone_number_id} exists already or its project does not"
            ) from exc

    # ---- secrets and the embedded sandbox's view of its numbers ------------------------

    async def installation_secret(self) -> str:
        """The installation's generated webhook secret, made once and kept encrypted."""
        query = select(installation.c.value).where(installation.c.key == WEBHOOK_SECRET_KEY)
        for _ in range(3):
            async with self.engine.connect() as connection:
                found = (await connection.execute(query)).scalar()
            if found is not None:
                return self.secrets.open(str(found))
            value = token_hex(32)
            try:
                async with begin_write(self.engine) as connection:
                    await connection.execute(
                        insert(installation).values(
                            key=WEBHOOK_SECRET_KEY, value=self.secrets.seal(value)
                        )
                    )
                return value
            except IntegrityError:
                continue  # another process made it first: read theirs
        raise RuntimeError("could not read or create the installation's webhook secret")

    async def seal_secrets(self, sandbox_token: Callable[[], str]) -> int:
        """Encrypt secrets stored in plaintext before, and give token-less sandbox numbers one.

        Also proves the key opens what is stored (SecretKeyError otherwise), so a
        process with the wrong key stops at start, not at its first send. Counts rows
        rewritten.
        """
        self.secrets.check()
        rewritten = 0
        async with begin_write(self.engine) as connection:
            rows = await connection.execute(
                select(
                    phone_numbers.c.phone_number_id,
                    phone_numbers.c.upstream,
                    phone_numbers.c.access_token,
                )
            )
            for phone_number_id, upstream, stored in rows.all():
                token = self.secrets.open(stored)
                if not token and upstream == "sandbox":
                    token = sandbox_token()
                elif SecretBox.is_sealed(stored):
                    continue
                await connection.execute(
                    update(phone_numbers)
                    .where(phone_numbers.c.phone_number_id == phone_number_id)
                    .values(access_token=self.secrets.seal(token))
                )
                rewritten += 1
            stored_secret = (
                await connection.execute(
                    select(installation.c.value).where(installation.c.key == WEBHOOK_SECRET_KEY)
                )
            ).scalar()
            if stored_secret is not None:
                plaintext = self.secrets.open(stored_secret)
                if not SecretBox.is_sealed(stored_secret):
                    await connection.execute(
                        update(installation)
                        .where(installation.c.key == WEBHOOK_SECRET_KEY)
                        .values(value=self.secrets.seal(plaintext))
                    )
                    rewritten += 1
        return rewritten

    async def has_sandbox_numbers(self) -> bool:
        """Whether any phone number goes to the sandbox."""
        query = select(phone_numbers.c.phone_number_id).where(phone_numbers.c.upstream == "sandbox")
        async with self.engine.connect() as connection:
            return (await connection.execute(query.limit(1))).first() is not None

    async def sandbox_credential(self, phone_number_id: str) -> tuple[str, str] | None:
        """(waba_id, access token) of a sandbox number; None for any other number."""
        query = select(phone_numbers.c.waba_id, phone_numbers.c.access_token).where(
            phone_numbers.c.phone_number_id == phone_number_id,
            phone_numbers.c.upstream == "sandbox",
        )
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else (row[0], self.secrets.open(row[1]))

    async def sandbox_waba_tokens(self, waba_id: str) -> frozenset[str]:
        """The access tokens of the sandbox numbers of a WABA."""
        query = select(phone_numbers.c.access_token).where(
            phone_numbers.c.waba_id == waba_id, phone_numbers.c.upstream == "sandbox"
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).scalars().all()
        return frozenset(token for token in (self.secrets.open(r) for r in rows) if token)
