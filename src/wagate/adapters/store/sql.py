"""The Store on SQLAlchemy Core, for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from secrets import token_hex
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wagate.adapters.store.engine import (
    begin_write,
    create_engine,
    dialect_of,
    is_sqlite,
)
from wagate.adapters.store.faults import is_row_fault
from wagate.adapters.store.group_commit import GroupCommitter, Row
from wagate.adapters.store.migrate import revision_of
from wagate.adapters.store.queries import directory, installation, notify
from wagate.adapters.store.queries import messages as outbox
from wagate.adapters.store.secrets import SecretBox
from wagate.domain.model import (
    ApiKey,
    KeyOwner,
    MessageQuery,
    NewMessage,
    PhoneNumber,
    Project,
    StoredMessage,
)
from wagate.ports import IdempotencyConflict, PhoneNumberGone, StoreUnavailable

_NEW_MESSAGE_FIELDS = tuple(f.name for f in fields(NewMessage))
_PHONE_NUMBER_FIELDS = tuple(f.name for f in fields(PhoneNumber))
# Re-exported: the installation's facts are named in queries/installation.py.
WEBHOOK_SECRET_KEY = installation.WEBHOOK_SECRET_KEY


def phone_number_of(row: Any, box: SecretBox) -> PhoneNumber:
    """A `PhoneNumber` from a row holding PHONE_NUMBER_COLUMNS, its access token decrypted."""
    number = PhoneNumber(**{name: row._mapping[name] for name in _PHONE_NUMBER_FIELDS})
    return replace(number, access_token=box.open(number.access_token))


class SqlStore:
    """Durable storage; message inserts go through a group committer."""

    def __init__(self, engine: AsyncEngine, secrets: SecretBox | None = None) -> None:
        """A store on `engine`; `secrets` defaults to the key of this database (see secrets.py)."""
        self.engine = engine
        self.secrets = secrets or SecretBox(engine.url)
        # Up to 4 batches of accepted messages commit at once where the database allows.
        dialect = dialect_of(engine)
        writers = dialect.writers(at_most=4)
        self._notifies = dialect.notifies
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
            if await self.get_phone_number(message.phone_number_id) is None:
                raise PhoneNumberGone(message.phone_number_id) from exc
            raise
        except Exception as exc:
            if is_row_fault(exc):
                raise
            # The group committer logged it once for the whole batch.
            raise StoreUnavailable("the message was not stored") from exc

    async def _write_batch(self, rows: Sequence[Row]) -> None:
        async with begin_write(self.engine) as connection:
            await connection.execute(outbox.INSERT_MESSAGE, list(rows))
            await self._notify_work(connection, rows)

    async def _write_one(self, row: Row) -> None:
        async with begin_write(self.engine) as connection:
            await connection.execute(outbox.INSERT_MESSAGE, row)
            await self._notify_work(connection, [row])

    async def _notify_work(self, connection: AsyncConnection, rows: Sequence[Row]) -> None:
        """Tell the workers of other processes which numbers have new work (at the commit)."""
        if self._notifies:
            numbers = sorted({row["phone_number_id"] for row in rows})
            await connection.execute(outbox.NOTIFY_WORK, {"b_numbers": numbers})

    async def find_by_idempotency_key(self, project_id: str, key: str) -> StoredMessage | None:
        """The message a project sent with this idempotency key, if any."""
        return await self._one_message(
            outbox.FIND_BY_IDEMPOTENCY_KEY, {"b_project_id": project_id, "b_key": key}
        )

    async def release_idempotency_key(self, message_id: str) -> None:
        """Forget a message's idempotency key (its window has passed)."""
        async with begin_write(self.engine) as connection:
            await connection.execute(outbox.RELEASE_IDEMPOTENCY_KEY, {"b_id": message_id})

    async def get_message(self, phone_number_id: str, message_id: str) -> StoredMessage | None:
        """One message of a phone number."""
        return await self._one_message(
            outbox.GET_MESSAGE, {"b_phone_number_id": phone_number_id, "b_id": message_id}
        )

    async def list_messages(self, query: MessageQuery) -> list[StoredMessage]:
        """Up to `query.limit` messages, newest first (oldest first when paging `before`)."""
        async with self.engine.connect() as connection:
            result = await connection.execute(outbox.list_messages(query))
            return [StoredMessage(**row._mapping) for row in result]

    async def _one_message(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> StoredMessage | None:
        row = await self._first(statement, parameters)
        return None if row is None else StoredMessage(**row._mapping)

    async def _first(self, statement: Executable, parameters: Mapping[str, Any]) -> Any:
        """The first row a read returns, or None."""
        async with self.engine.connect() as connection:
            return (await connection.execute(statement, parameters)).first()

    async def _write(self, statement: Executable, parameters: Mapping[str, Any]) -> int:
        """Execute a write in its own transaction; the rows it matched."""
        async with begin_write(self.engine) as connection:
            result = await connection.execute(statement, parameters)
        return int(result.rowcount or 0)

    # ---- readiness -------------------------------------------------------------------

    async def schema_revision(self) -> str | None:
        """The schema revision the database is at (None: no schema yet); raises
        StoreUnavailable when it cannot be reached (a SQLite file gone counts)."""
        path = self.engine.url.database
        if (
            self.is_sqlite
            and path
            and path != ":memory:"
            and not await asyncio.to_thread(Path(path).is_file)
        ):
            # A pooled connection would go on reading the deleted file.
            raise StoreUnavailable("the SQLite database file is gone")
        async with self.engine.connect() as connection:
            return await revision_of(connection)

    # ---- projects, keys, numbers -----------------------------------------------------

    async def find_project_by_key_hash(self, key_hash: str) -> KeyOwner | None:
        """The project (and its rate limit) of a live (not revoked) API key, by the key's hash."""
        row = await self._first(directory.KEY_OWNER, {"b_key_hash": key_hash})
        if row is None:
            return None
        return KeyOwner(row.project_id, row.rate_limit, row.marketing_limit, row.frequency_cap)

    async def get_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        """A phone number by its id."""
        row = await self._first(directory.PHONE_NUMBER, {"b_phone_number_id": phone_number_id})
        return None if row is None else phone_number_of(row, self.secrets)

    async def create_project(self, project: Project) -> None:
        """Add a project."""
        await self._write(directory.INSERT_PROJECT, asdict(project))

    async def list_projects(self) -> list[Project]:
        """Every project, oldest first."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(directory.LIST_PROJECTS)
            return [Project(**row._mapping) for row in rows]

    async def set_project_rate_limit(self, project_id: str, rate_limit: int | None) -> bool:
        """Set (None: clear) a project's requests per minute; False if there is no such project."""
        parameters = {"b_project_id": project_id, "b_rate_limit": rate_limit}
        return bool(await self._write(directory.SET_PROJECT_RATE_LIMIT, parameters))

    async def set_project_policies(
        self, project_id: str, marketing_limit: str, frequency_cap: int | None
    ) -> bool:
        """Set a project's 131049 policy and frequency cap; False if there is no such project."""
        parameters = {
            "b_project_id": project_id,
            "b_marketing_limit": marketing_limit,
            "b_frequency_cap": frequency_cap,
        }
        return bool(await self._write(directory.SET_PROJECT_POLICIES, parameters))

    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Add an API key by its hash."""
        await self._write(directory.INSERT_API_KEY, {**asdict(key), "key_hash": key_hash})

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        """A project's keys, revoked ones included, oldest first."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(directory.LIST_API_KEYS, {"b_project_id": project_id})
            return [ApiKey(**row._mapping) for row in rows]

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        """Revoke a key; False if there is no such live key."""
        return bool(await self._write(directory.REVOKE_API_KEY, {"b_key_id": key_id, "b_at": at}))

    async def add_phone_number(self, number: PhoneNumber, *, created_at: int) -> None:
        """Add a phone number; raises ValueError if its id is taken."""
        row = {
            **asdict(number),
            "access_token": self.secrets.seal(number.access_token),
            "created_at": created_at,
        }
        try:
            await self._write(directory.INSERT_PHONE_NUMBER, row)
        except IntegrityError as exc:
            raise ValueError(
                f"phone number {number.phone_number_id} exists already or its project does not"
            ) from exc

    async def list_phone_numbers(self, project_id: str | None) -> list[PhoneNumber]:
        """A project's phone numbers (every number when None), ordered by id."""
        async with self.engine.connect() as connection:
            if project_id is None:
                rows = await connection.execute(directory.EVERY_NUMBER)
            else:
                rows = await connection.execute(
                    directory.NUMBERS_OF_PROJECT, {"b_project_id": project_id}
                )
            return [phone_number_of(row, self.secrets) for row in rows]

    async def update_phone_number(
        self,
        phone_number_id: str,
        *,
        access_token: str | None,
        mps: int | None,
        waba_id: str | None,
    ) -> bool:
        """Change what is given (None: keep it); False if there is no such number."""
        key = {"b_phone_number_id": phone_number_id}
        changes: list[tuple[Executable, dict[str, Any]]] = []
        if access_token is not None:
            sealed = self.secrets.seal(access_token)
            changes.append((directory.SET_ACCESS_TOKEN, {**key, "b_access_token": sealed}))
        if mps is not None:
            changes.append((directory.SET_MPS, {**key, "b_mps": mps}))
        if waba_id is not None:
            changes.append((directory.SET_WABA_ID, {**key, "b_waba_id": waba_id}))
        async with begin_write(self.engine) as connection:
            if (await connection.execute(directory.PHONE_NUMBER, key)).first() is None:
                return False
            for statement, parameters in changes:
                await connection.execute(statement, parameters)
        return True

    async def remove_phone_number(self, phone_number_id: str, *, force: bool) -> int | None:
        """Count the number's undelivered messages; delete it and its history if none or forced."""
        key = {"b_phone_number_id": phone_number_id}
        async with begin_write(self.engine) as connection:
            if (await connection.execute(directory.PHONE_NUMBER, key)).first() is None:
                return None
            undelivered = int(
                (await connection.execute(directory.UNDELIVERED_COUNT, key)).scalar_one()
            )
            if undelivered and not force:
                return undelivered
            for statement in (
                directory.DELETE_NUMBER_STATUSES,
                directory.DELETE_NUMBER_EVENTS,
                directory.DELETE_NUMBER_MESSAGES,
                directory.DELETE_NUMBER_PAIRS,
                # Its customer webhook endpoints, with their deliveries and attempts.
                notify.DELETE_NUMBER_ATTEMPTS,
                notify.DELETE_NUMBER_DELIVERIES,
                notify.DELETE_NUMBER_ENDPOINTS,
                directory.DELETE_NUMBER,
            ):
                await connection.execute(statement, key)
        return undelivered

    # ---- secrets and the embedded sandbox's view of its numbers ------------------------

    async def installation_secret(self) -> str:
        """The installation's generated webhook secret, made once and kept encrypted."""
        for _ in range(3):
            found = await self._first(installation.FACT, {"b_key": WEBHOOK_SECRET_KEY})
            if found is not None:
                return self.secrets.open(str(found.value))
            value = token_hex(32)
            row = {"key": WEBHOOK_SECRET_KEY, "value": self.secrets.seal(value)}
            try:
                await self._write(installation.INSERT_FACT, row)
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
            rows = await connection.execute(directory.ACCESS_TOKENS)
            for phone_number_id, upstream, stored in rows.all():
                token = self.secrets.open(stored)
                if not token and upstream == "sandbox":
                    token = sandbox_token()
                elif SecretBox.is_sealed(stored):
                    continue
                await connection.execute(
                    directory.SET_ACCESS_TOKEN,
                    {
                        "b_phone_number_id": phone_number_id,
                        "b_access_token": self.secrets.seal(token),
                    },
                )
                rewritten += 1
            key = {"b_key": WEBHOOK_SECRET_KEY}
            stored_secret = (await connection.execute(installation.FACT, key)).scalar()
            if stored_secret is not None:
                # Opened even when sealed: a wrong key fails here, at start.
                plaintext = self.secrets.open(stored_secret)
                if not SecretBox.is_sealed(stored_secret):
                    sealed = {**key, "b_value": self.secrets.seal(plaintext)}
                    await connection.execute(installation.SET_FACT, sealed)
                    rewritten += 1
        return rewritten

    async def has_sandbox_numbers(self) -> bool:
        """Whether any phone number goes to the sandbox."""
        return await self._first(directory.ANY_SANDBOX_NUMBER, {}) is not None

    async def sandbox_credential(self, phone_number_id: str) -> tuple[str, str] | None:
        """(waba_id, access token) of a sandbox number; None for any other number."""
        parameters = {"b_phone_number_id": phone_number_id}
        row = await self._first(directory.SANDBOX_CREDENTIAL, parameters)
        return None if row is None else (row.waba_id, self.secrets.open(row.access_token))

    async def sandbox_waba_tokens(self, waba_id: str) -> frozenset[str]:
        """The access tokens of the sandbox numbers of a WABA."""
        async with self.engine.connect() as connection:
            result = await connection.execute(directory.SANDBOX_WABA_TOKENS, {"b_waba_id": waba_id})
            stored = result.scalars().all()
        return frozenset(token for token in (self.secrets.open(s) for s in stored) if token)
