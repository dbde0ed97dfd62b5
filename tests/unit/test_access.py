"""API keys and phone numbers: cached briefly, revocation felt within the cache time."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from wagate.core.access import MISSES_CACHED, Access, _TtlCache, hash_key
from wagate.domain.errors import GraphError
from wagate.domain.model import KeyOwner, PhoneNumber


@dataclass
class FakeClock:
    t: float = 1000.0

    def now(self) -> float:
        return self.t


@dataclass
class KeyStore:
    """Just the two lookups Access makes, counting database trips."""

    keys: dict[str, KeyOwner] = field(default_factory=dict)
    numbers: dict[str, PhoneNumber] = field(default_factory=dict)
    lookups: int = 0

    async def find_project_by_key_hash(self, key_hash: str) -> KeyOwner | None:
        self.lookups += 1
        return self.keys.get(key_hash)

    async def get_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        self.lookups += 1
        return self.numbers.get(phone_number_id)


NUMBER = PhoneNumber("111", "waba", "prj_a", "sandbox", "", 80)


def make() -> tuple[Access, KeyStore, FakeClock]:
    store = KeyStore(keys={hash_key("wg_good"): KeyOwner("prj_a")}, numbers={"111": NUMBER})
    clock = FakeClock()
    return Access(store, clock, cache_seconds=2.0), store, clock  # type: ignore[arg-type]


async def test_a_known_key_names_its_project() -> None:
    access, _, _ = make()
    assert await access.project_of("wg_good") == "prj_a"


@pytest.mark.parametrize("key", [None, "", "wg_bad"])
async def test_missing_or_unknown_keys_are_190(key: str | None) -> None:
    access, _, _ = make()
    with pytest.raises(GraphError) as caught:
        await access.project_of(key)
    assert (caught.value.code, caught.value.http_status) == (190, 401)


async def test_lookups_are_cached_until_the_cache_time_passes() -> None:
    access, store, clock = make()
    for _ in range(5):
        await access.project_of("wg_good")
    assert store.lookups == 1
    clock.t += 2.5
    await access.project_of("wg_good")
    assert store.lookups == 2


async def test_a_revoked_key_stops_working_after_the_cache_time() -> None:
    access, store, clock = make()
    await access.project_of("wg_good")
    store.keys.clear()
    assert await access.project_of("wg_good") == "prj_a"
    clock.t += 2.5
    with pytest.raises(GraphError):
        await access.project_of("wg_good")


async def test_forget_drops_cached_answers_at_once() -> None:
    access, store, _ = make()
    await access.project_of("wg_good")
    store.keys.clear()
    access.forget()
    with pytest.raises(GraphError):
        await access.project_of("wg_good")


async def test_another_projects_number_is_the_same_error_as_a_missing_one() -> None:
    access, _, _ = make()
    with pytest.raises(GraphError) as foreign:
        await access.phone_number_of("prj_b", "111")
    with pytest.raises(GraphError) as missing:
        await access.phone_number_of("prj_b", "222")
    assert foreign.value.code == missing.value.code == 100
    assert foreign.value.subcode == missing.value.subcode == 33
    assert await access.phone_number_of("prj_a", "111") == NUMBER


# ---- a bounded cache that random input cannot empty ---------------------------------


async def test_the_key_returns_its_projects_rate_limit() -> None:
    access, store, _ = make()
    store.keys[hash_key("wg_limited")] = KeyOwner("prj_b", rate_limit=3)
    assert await access.owner_of("wg_limited") == KeyOwner("prj_b", 3)


async def test_random_keys_do_not_evict_a_working_key() -> None:
    access, store, _ = make()
    await access.project_of("wg_good")
    for i in range(20_000):
        with pytest.raises(GraphError):
            await access.project_of(f"wg_random_{i}")
    lookups = store.lookups
    assert await access.project_of("wg_good") == "prj_a"
    assert store.lookups == lookups  # still cached: no database trip


async def test_unknown_keys_are_remembered_but_only_a_bounded_number() -> None:
    access, store, _ = make()
    for _ in range(3):
        with pytest.raises(GraphError):
            await access.project_of("wg_random")
    assert store.lookups == 1
    for i in range(MISSES_CACHED + 10):
        with pytest.raises(GraphError):
            await access.project_of(f"wg_other_{i}")
    assert len(access._unknown_keys) == MISSES_CACHED
    before = store.lookups
    with pytest.raises(GraphError):
        await access.project_of("wg_random")  # evicted: asked again
    assert store.lookups == before + 1


async def test_an_overlong_key_is_refused_without_a_lookup() -> None:
    access, store, _ = make()
    with pytest.raises(GraphError) as caught:
        await access.project_of("wg_" + "x" * 10_000)
    assert caught.value.code == 190
    assert store.lookups == 0


async def test_a_full_cache_drops_the_least_recently_used_key_only() -> None:
    clock = FakeClock()
    cache: _TtlCache[str] = _TtlCache(60.0, max_entries=3)
    for key in ("a", "b", "c"):
        cache.put(key, key.upper(), clock.now())
    assert cache.get("a", clock.now()) is not None  # "a" is now the most recent
    cache.put("d", "D", clock.now())
    assert "b" not in cache
    assert all(key in cache for key in ("a", "c", "d"))
    assert len(cache) == 3


async def test_an_entry_past_its_time_is_not_answered() -> None:
    clock = FakeClock()
    cache: _TtlCache[str] = _TtlCache(2.0, max_entries=3)
    cache.put("a", "A", clock.now())
    clock.t += 2.5
    assert cache.get("a", clock.now()) is None
    assert "a" not in cache


async def test_unknown_numbers_do_not_evict_a_known_one() -> None:
    access, store, _ = make()
    await access.phone_number_of("prj_a", "111")
    for i in range(20_000):
        with pytest.raises(GraphError):
            await access.phone_number_of("prj_a", f"9{i}")
    lookups = store.lookups
    assert await access.phone_number_of("prj_a", "111") == NUMBER
    assert store.lookups == lookups


@dataclass
class SlowKeyStore(KeyStore):
    """Lookups that read at once but answer on `release`, so that callers overlap; `fail`
    makes them raise."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False

    async def find_project_by_key_hash(self, key_hash: str) -> KeyOwner | None:
        self.lookups += 1
        owner = self.keys.get(key_hash)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("database away")
        return owner

    async def get_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        self.lookups += 1
        await self.release.wait()
        return self.numbers.get(phone_number_id)


async def settle() -> None:
    """Let the callers and the lookup they started run up to their waits."""
    for _ in range(5):
        await asyncio.sleep(0)


def make_slow() -> tuple[Access, SlowKeyStore]:
    store = SlowKeyStore(keys={hash_key("wg_good"): KeyOwner("prj_a")}, numbers={"111": NUMBER})
    return Access(store, FakeClock(), cache_seconds=2.0), store  # type: ignore[arg-type]


async def test_callers_who_miss_together_share_one_lookup_of_the_key_and_the_number() -> None:
    access, store = make_slow()
    callers = [asyncio.ensure_future(access.authorize("wg_good", "111")) for _ in range(32)]
    await settle()
    assert store.lookups == 1  # the key's, shared by all 32
    store.release.set()
    grants = await asyncio.gather(*callers)
    assert {grant.number.phone_number_id for grant in grants} == {"111"}
    assert store.lookups == 2  # and then the number's


async def test_a_caller_cancelled_while_waiting_leaves_the_shared_lookup_to_the_others() -> None:
    access, store = make_slow()
    first = asyncio.ensure_future(access.project_of("wg_good"))
    second = asyncio.ensure_future(access.project_of("wg_good"))
    await settle()
    first.cancel()
    store.release.set()
    assert await second == "prj_a"
    assert first.cancelled()
    assert store.lookups == 1


async def test_a_failed_shared_lookup_fails_every_waiter_and_the_next_caller_asks_again() -> None:
    access, store = make_slow()
    store.fail = True
    callers = [asyncio.ensure_future(access.project_of("wg_good")) for _ in range(3)]
    await settle()
    store.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert store.lookups == 1
    store.fail = False
    assert await access.project_of("wg_good") == "prj_a"
    assert store.lookups == 2


async def test_after_forget_no_caller_shares_an_earlier_lookup_nor_is_its_answer_cached() -> None:
    access, store = make_slow()
    before = asyncio.ensure_future(access.project_of("wg_good"))
    await settle()
    # The key is revoked meanwhile, and this process forgets what it knew.
    store.keys.clear()
    access.forget()
    after = asyncio.ensure_future(access.project_of("wg_good"))
    await settle()
    assert store.lookups == 2  # the caller after forget asked the database itself
    store.release.set()
    assert await before == "prj_a"  # asked before the revocation
    with pytest.raises(GraphError):
        await after
    with pytest.raises(GraphError):  # the earlier answer was not cached
        await access.project_of("wg_good")
