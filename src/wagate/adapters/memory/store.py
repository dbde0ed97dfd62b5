"""Projects, keys, numbers and messages in memory: Directory, Outbox, MessageReader, Admin."""

from __future__ import annotations

import dataclasses

from wagate.adapters.memory.notify import forget_endpoints
from wagate.adapters.memory.tables import MemoryDatabase, MessageRow, NumberRow
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


class MemoryStore:
    """What `SqlStore` does, on a `MemoryDatabase`."""

    def __init__(self, database: MemoryDatabase | None = None) -> None:
        self.database = database or MemoryDatabase()

    async def close(self) -> None:
        """Nothing to flush."""

    # ---- messages --------------------------------------------------------------------

    async def add_message(self, message: NewMessage) -> None:
        """Store one message, queued and pending; IdempotencyConflict if its key is taken."""
        key = message.idempotency_key
        if key is not None and self._by_idempotency_key(message.project_id, key) is not None:
            raise IdempotencyConflict(key)
        if message.phone_number_id not in self.database.numbers:
            raise PhoneNumberGone(message.phone_number_id)
        seq = self.database.next_seq()
        self.database.messages[seq] = MessageRow(
            seq=seq,
            message=message,
            updated_at=message.created_at,
            due_at=message.created_at,
            idempotency_key=key,
        )

    async def find_by_idempotency_key(self, project_id: str, key: str) -> StoredMessage | None:
        """The message a project sent with this idempotency key, if any."""
        row = self._by_idempotency_key(project_id, key)
        return None if row is None else row.stored()

    async def release_idempotency_key(self, message_id: str) -> None:
        """Forget a message's idempotency key (its window has passed)."""
        for row in self.database.messages.values():
            if row.message.id == message_id:
                row.idempotency_key = None

    async def get_message(self, phone_number_id: str, message_id: str) -> StoredMessage | None:
        """One message of a phone number."""
        for row in self.database.messages.values():
            if row.message.id == message_id and row.message.phone_number_id == phone_number_id:
                return row.stored()
        return None

    async def list_messages(self, query: MessageQuery) -> list[StoredMessage]:
        """Up to `query.limit` messages, newest first (oldest first when paging `before`)."""
        rows = [
            row
            for row in self.database.messages.values()
            if row.message.phone_number_id == query.phone_number_id
            and (query.status is None or row.status == query.status)
            and (query.upstream_wamid is None or row.upstream_wamid == query.upstream_wamid)
            and (query.since is None or row.message.created_at >= query.since)
            and (query.until is None or row.message.created_at <= query.until)
            and (query.after_seq is None or row.seq < query.after_seq)
            and (
                query.after_seq is not None
                or query.before_seq is None
                or row.seq > query.before_seq
            )
        ]
        oldest_first = query.after_seq is None and query.before_seq is not None
        rows.sort(key=lambda row: row.seq, reverse=not oldest_first)
        return [row.stored() for row in rows[: query.limit]]

    def _by_idempotency_key(self, project_id: str, key: str) -> MessageRow | None:
        for row in self.database.messages.values():
            if row.idempotency_key == key and row.message.project_id == project_id:
                return row
        return None

    # ---- readiness -------------------------------------------------------------------

    async def schema_revision(self) -> str | None:
        """The revision the database says it is at; StoreUnavailable when it is "down"."""
        if not self.database.reachable:
            raise StoreUnavailable("the database is down")
        return self.database.schema_revision

    # ---- projects, keys, numbers -----------------------------------------------------

    async def find_project_by_key_hash(self, key_hash: str) -> KeyOwner | None:
        """The project (and its rate limit) of a live (not revoked) API key, by the key's hash."""
        for key, stored_hash in self.database.keys.values():
            if stored_hash == key_hash and key.revoked_at is None:
                project = self.database.projects[key.project_id]
                return KeyOwner(
                    project.id, project.rate_limit, project.marketing_limit, project.frequency_cap
                )
        return None

    async def get_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        """A phone number by its id."""
        row = self.database.numbers.get(phone_number_id)
        return None if row is None else row.number

    async def create_project(self, project: Project) -> None:
        """Add a project; ValueError if its id is taken."""
        if project.id in self.database.projects:
            raise ValueError(f"project {project.id} exists already")
        self.database.projects[project.id] = project

    async def list_projects(self) -> list[Project]:
        """Every project, oldest first."""
        return sorted(self.database.projects.values(), key=lambda p: (p.created_at, p.id))

    async def set_project_rate_limit(self, project_id: str, rate_limit: int | None) -> bool:
        """Set (None: clear) a project's requests per minute; False if there is no such project."""
        project = self.database.projects.get(project_id)
        if project is None:
            return False
        self.database.projects[project_id] = dataclasses.replace(project, rate_limit=rate_limit)
        return True

    async def set_project_policies(
        self, project_id: str, marketing_limit: str, frequency_cap: int | None
    ) -> bool:
        """Set a project's 131049 policy and frequency cap; False if there is no such project."""
        project = self.database.projects.get(project_id)
        if project is None:
            return False
        self.database.projects[project_id] = dataclasses.replace(
            project, marketing_limit=marketing_limit, frequency_cap=frequency_cap
        )
        return True

    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Add an API key by its hash; ValueError if its id or hash is taken."""
        taken = any(h == key_hash for _, h in self.database.keys.values())
        if key.id in self.database.keys or taken or key.project_id not in self.database.projects:
            raise ValueError(f"API key {key.id} exists already or its project does not")
        self.database.keys[key.id] = (key, key_hash)

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        """A project's keys, revoked ones included, oldest first."""
        keys = [key for key, _ in self.database.keys.values() if key.project_id == project_id]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        """Revoke a key; False if there is no such live key."""
        found = self.database.keys.get(key_id)
        if found is None or found[0].revoked_at is not None:
            return False
        self.database.keys[key_id] = (dataclasses.replace(found[0], revoked_at=at), found[1])
        return True

    async def add_phone_number(self, number: PhoneNumber, *, created_at: int) -> None:
        """Add a phone number; raises ValueError if its id is taken or its project unknown."""
        if (
            number.phone_number_id in self.database.numbers
            or number.project_id not in self.database.projects
        ):
            raise ValueError(
                f"phone number {number.phone_number_id} exists already or its project does not"
            )
        self.database.numbers[number.phone_number_id] = NumberRow(number, created_at)

    async def list_phone_numbers(self, project_id: str | None) -> list[PhoneNumber]:
        """A project's phone numbers (every number when None), ordered by id."""
        return [
            row.number
            for _, row in sorted(self.database.numbers.items())
            if project_id is None or row.number.project_id == project_id
        ]

    async def update_phone_number(
        self,
        phone_number_id: str,
        *,
        access_token: str | None,
        mps: int | None,
        waba_id: str | None,
    ) -> bool:
        """Change what is given (None: keep it); False if there is no such number."""
        row = self.database.numbers.get(phone_number_id)
        if row is None:
            return False
        number = row.number
        if access_token is not None:
            number = dataclasses.replace(number, access_token=access_token)
        if mps is not None:
            number = dataclasses.replace(number, mps=mps)
        if waba_id is not None:
            number = dataclasses.replace(number, waba_id=waba_id)
        row.number = number
        return True

    async def remove_phone_number(self, phone_number_id: str, *, force: bool) -> int | None:
        """Count the number's undelivered messages; delete it and its history if none or forced."""
        database = self.database
        if phone_number_id not in database.numbers:
            return None
        mine = {
            seq: row
            for seq, row in database.messages.items()
            if row.message.phone_number_id == phone_number_id
        }
        undelivered = sum(row.state in ("queued", "sending") for row in mine.values())
        if undelivered and not force:
            return undelivered
        wamids = {row.upstream_wamid for row in mine.values() if row.upstream_wamid is not None}
        for seq in mine:
            del database.messages[seq]
        # In place: the other memory adapters hold the same tables.
        for status_key in [k for k, v in database.statuses.items() if v.wamid in wamids]:
            del database.statuses[status_key]
        database.events[:] = [event for event in database.events if event.wamid not in wamids]
        for pair in [k for k in database.pairs if k[0] == phone_number_id]:
            del database.pairs[pair]
        endpoints = {
            e.id for e in database.endpoints.values() if e.phone_number_id == phone_number_id
        }
        for endpoint_id in endpoints:
            del database.endpoints[endpoint_id]
        forget_endpoints(database, endpoints)
        del database.numbers[phone_number_id]
        return undelivered
