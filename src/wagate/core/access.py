"""Who is calling and which phone number they name: API keys and numbers, cached briefly."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from wagate.core.shared import shared
from wagate.domain.errors import INVALID_ACCESS_TOKEN, INVALID_PARAMETER, GraphError
from wagate.domain.model import KeyOwner, PhoneNumber
from wagate.ports import Clock, Directory

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
    """A bounded cache whose entries expire; when full it drops the least recently used.

    Dropping one entry, not all of them, is what keeps a flood of new keys from
    sending every caller back to the database at once.
    """

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        # A dict keeps insertion order: re-inserting on a hit makes it an LRU.
        self._entries: dict[str, _Entry[T]] = {}

    def get(self, key: str, now: float) -> _Entry[T] | None:
        entry = self._entries.pop(key, None)
        if entry is None or entry.expires < now:
            return None
        self._entries[key] = entry
        return entry

    def put(self, key: str, value: T, now: float) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(value, now + self.seconds)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def clear(self) -> None:
        self._entries.clear()


# Live keys are `wg_` + 43 characters and Meta's phone number ids about 16 digits;
# anything far longer is refused without a lookup and never cached.
MAX_KEY_LENGTH = 256
MAX_PHONE_NUMBER_ID_LENGTH = 128
# Failed lookups are cached apart, in a smaller LRU: random keys evict each other,
# never the keys that work.
MISSES_CACHED = 1_024


def phone_number_not_found(phone_number_id: str, method: str = "post") -> GraphError:
    """Meta's answer for an object the caller cannot see: it does not say which case it is."""
    return GraphError(
        INVALID_PARAMETER,
        f"Unsupported {method} request. Object with ID '{phone_number_id}' does not exist, cannot "
        "be loaded due to missing permissions, or does not support this operation.",
        subcode=33,
    )


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authorized request may act as: the key's project and the number it names."""

    owner: KeyOwner
    number: PhoneNumber


def _admit_any(owner: KeyOwner) -> None:
    """No check between the key and the number."""


class Access:
    """Authenticates API keys and resolves phone numbers, with a short cache in front."""

    def __init__(self, store: Directory, clock: Clock, cache_seconds: float = 2.0) -> None:
        self._store = store
        self._clock = clock
        self._keys: _TtlCache[KeyOwner] = _TtlCache(cache_seconds)
        self._unknown_keys: _TtlCache[None] = _TtlCache(cache_seconds, MISSES_CACHED)
        self._numbers: _TtlCache[PhoneNumber] = _TtlCache(cache_seconds)
        self._unknown_numbers: _TtlCache[None] = _TtlCache(cache_seconds, MISSES_CACHED)
        # Lookups under way, so that callers who miss together share one: when a busy
        # key's entry expired, each of the ~32 requests in flight asked the database on
        # its own (15 connections checked out at once, new ones opened past the pool).
        # An entry lives only while its lookup does.
        self._key_lookups: dict[str, asyncio.Future[KeyOwner | None]] = {}
        self._number_lookups: dict[str, asyncio.Future[PhoneNumber | None]] = {}
        # Bumped by `forget`: a lookup begun before it neither fills the cache after it
        # nor answers a caller who came after it.
        self._generation = 0

    async def authorize(
        self,
        api_key: str | None,
        phone_number_id: str,
        method: str = "post",
        *,
        admit: Callable[[KeyOwner], None] = _admit_any,
    ) -> Grant:
        """The key's project and the number it names, or the Graph error a caller gets.

        The one check every door makes: a 190/401 for a missing, unknown or revoked
        key; then `admit` (what the door refuses once it knows the caller, e.g. a
        rate limit or the Graph version: it raises to refuse); then a code 100,
        subcode 33 for a number that is missing or another project's.
        """
        owner = await self.owner_of(api_key)
        admit(owner)
        return Grant(owner, await self.phone_number_of(owner.project_id, phone_number_id, method))

    async def project_of(self, api_key: str | None) -> str:
        """The project an API key belongs to, or a 190/401 error."""
        return (await self.owner_of(api_key)).project_id

    async def owner_of(self, api_key: str | None) -> KeyOwner:
        """The project an API key belongs to, with its rate limit, or a 190/401 error."""
        if not api_key:
            raise GraphError(
                INVALID_ACCESS_TOKEN,
                "Missing API key: send it as `X-API-Key` or `Authorization: Bearer`",
            )
        now = self._clock.now()
        entry = self._keys.get(api_key, now)
        if entry is not None:
            return entry.value
        if len(api_key) > MAX_KEY_LENGTH or self._unknown_keys.get(api_key, now) is not None:
            raise _invalid_key()
        owner = await shared(self._key_lookups, api_key, lambda: self._look_up_key(api_key, now))
        if owner is None:
            raise _invalid_key()
        return owner

    async def _look_up_key(self, api_key: str, now: float) -> KeyOwner | None:
        generation = self._generation
        owner = await self._store.find_project_by_key_hash(hash_key(api_key))
        if generation != self._generation:
            return owner  # forgotten meanwhile: answer only the callers who asked before
        if owner is None:
            self._unknown_keys.put(api_key, None, now)
        else:
            self._keys.put(api_key, owner, now)
        return owner

    async def phone_number_of(
        self, project_id: str, phone_number_id: str, method: str = "post"
    ) -> PhoneNumber:
        """A phone number the project owns; another project's number looks like a missing one."""
        now = self._clock.now()
        entry = self._numbers.get(phone_number_id, now)
        if entry is not None:
            number: PhoneNumber | None = entry.value
        elif (
            # No stored id has a NUL; PostgreSQL text cannot hold one.
            "\x00" in phone_number_id
            or len(phone_number_id) > MAX_PHONE_NUMBER_ID_LENGTH
            or self._unknown_numbers.get(phone_number_id, now) is not None
        ):
            number = None
        else:
            number = await shared(
                self._number_lookups,
                phone_number_id,
                lambda: self._look_up_number(phone_number_id, now),
            )
        if number is None or number.project_id != project_id:
            raise phone_number_not_found(phone_number_id, method)
        return number

    async def _look_up_number(self, phone_number_id: str, now: float) -> PhoneNumber | None:
        generation = self._generation
        number = await self._store.get_phone_number(phone_number_id)
        if generation != self._generation:
            return number
        if number is None:
            self._unknown_numbers.put(phone_number_id, None, now)
        else:
            self._numbers.put(phone_number_id, number, now)
        return number

    def forget(self) -> None:
        """Drop cached answers (after a key is revoked or a number changes in this process)."""
        for cache in (self._keys, self._unknown_keys, self._numbers, self._unknown_numbers):
            cache.clear()
        self._generation += 1
        self._key_lookups.clear()
        self._number_lookups.clear()


def _invalid_key() -> GraphError:
    return GraphError(INVALID_ACCESS_TOKEN, "The API key is invalid or has been revoked")
