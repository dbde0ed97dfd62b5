"""Who is calling and which phone number they name: API keys and numbers, cached briefly."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Generic, TypeVar

from wagate.domain.errors import INVALID_ACCESS_TOKEN, INVALID_PARAMETER, GraphError
from wagate.domain.model import PhoneNumber
from wagate.ports import Clock, Store

KEY_PREFIX = "wg_"
T = TypeVar("T")


def hash_key(api_key: str) -> str:
    """The stored form of an API key; keys are 256-bit random, so a plain SHA-256 suffices."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    expires: float


class _TtlCache(Generic[T]):
    """A small bounded cache whose entries expire; misses are cached too."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[str, _Entry[T]] = {}

    def get(self, key: str, now: float) -> _Entry[T] | None:
        entry = self._entries.get(key)
        if entry is None or entry.expires < now:
            return None
        return entry

    def put(self, key: str, value: T, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = _Entry(value, now + self.seconds)

    def clear(self) -> None:
        self._entries.clear()


def phone_number_not_found(phone_number_id: str, method: str = "post") -> GraphError:
    """Meta's answer for an object the caller cannot see: it does not say which case it is."""
    return GraphError(
        INVALID_PARAMETER,
        f"Unsupported {method} request. Object with ID '{phone_number_id}' does not exist, cannot "
        "be loaded due to missing permissions, or does not support this operation.",
        subcode=33,
    )


class Access:
    """Authenticates API keys and resolves phone numbers, with a short cache in front."""

    def __init__(self, store: Store, clock: Clock, cache_seconds: float = 2.0) -> None:
        self._store = store
        self._clock = clock
        self._keys: _TtlCache[str | None] = _TtlCache(cache_seconds)
        self._numbers: _TtlCache[PhoneNumber | None] = _TtlCache(cache_seconds)

    async def project_of(self, api_key: str | None) -> str:
        """The project an API key belongs to, or a 190/401 error."""
        if not api_key:
            raise GraphError(
                INVALID_ACCESS_TOKEN,
                "Missing API key: send it as `X-API-Key` or `Authorization: Bearer`",
            )
        now = self._clock.now()
        entry = self._keys.get(api_key, now)
        if entry is None:
            project_id = await self._store.find_project_by_key_hash(hash_key(api_key))
            self._keys.put(api_key, project_id, now)
        else:
            project_id = entry.value
        if project_id is None:
            raise GraphError(INVALID_ACCESS_TOKEN, "The API key is invalid or has been revoked")
        return project_id

    async def phone_number_of(
        self, project_id: str, phone_number_id: str, method: str = "post"
    ) -> PhoneNumber:
        """A phone number the project owns; another project's number looks like a missing one."""
        if "\x00" in phone_number_id:  # no stored id has one; PostgreSQL text cannot hold one
            raise phone_number_not_found(phone_number_id, method)
        now = self._clock.now()
        entry = self._numbers.get(phone_number_id, now)
        if entry is None:
            number = await self._store.get_phone_number(phone_number_id)
            self._numbers.put(phone_number_id, number, now)
        else:
            number = entry.value
        if number is None or number.project_id != project_id:
            raise phone_number_not_found(phone_number_id, method)
        return number

    def forget(self) -> None:
        """Drop cached answers (after a key is revoked or a number changes in this process)."""
        self._keys.clear()
        self._numbers.clear()
