"""The sandbox's memory is bounded whatever clients send: caps, LRU memories, a bounded schedule."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from wagate.adapters.sandbox import SandboxConfig, SandboxState
from wagate.adapters.sandbox.access import RECHECK_SECONDS, FirstUseTokens, GatewayTokens
from wagate.adapters.sandbox.templates import TemplateStore, parse_create, seed_templates
from wagate.adapters.sandbox.webhooks import WebhookSender, signature
from wagate.domain.errors import GraphError


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = 1_700_000_000.0

    def now(self) -> float:
        """The fake time."""
        return self.at

    async def sleep(self, seconds: float) -> None:
        """Move time on instead of waiting."""
        self.at += max(0.0, seconds)


def message(to: str = "+1 555 010 0001", **extra: Any) -> bytes:
    """A marketing send of the seeded promo template."""
    return msgspec.json.encode(
        {
            "messaging_product": "whatsapp",
            "to": to,
            "type": "template",
            "template": {"name": "promo_template", "language": {"code": "en_US"}},
            **extra,
        }
    )


def create(name: str) -> Any:
    """A template creation body."""
    return parse_create(
        msgspec.json.encode(
            {
                "name": name,
                "language": "en_US",
                "category": "MARKETING",
                "components": [{"type": "BODY", "text": "Hi"}],
            }
        )
    )


def test_a_waba_holds_at_most_its_cap_of_templates_and_deleting_frees_a_slot() -> None:
    store = TemplateStore(0.0, max_per_waba=len(seed_templates()) + 2)
    now = 0.0
    store.create("w", create("one"), now)
    store.create("w", create("two"), now)  # the seeds + 2
    with pytest.raises(GraphError) as full:
        store.create("w", create("three"), now)
    assert full.value.code == 100

    store.delete("w", "one", None)
    store.create("w", create("three"), now)
    store.create("other", create("one"), now)  # another WABA has its own room


def test_only_so_many_wabas_are_seeded_and_templates_created_in_all() -> None:
    store = TemplateStore(0.0, max_wabas=3, max_created=2)
    for waba in ("a", "b", "c"):
        assert store.list(waba, 0.0)
    with pytest.raises(GraphError):
        store.list("d", 0.0)
    assert store.list("a", 0.0)  # known WABAs keep working

    store.create("a", create("x"), 0.0)
    store.create("b", create("x"), 0.0)
    with pytest.raises(GraphError):
        store.create("c", create("x"), 0.0)


def test_phone_numbers_beyond_the_cap_are_refused_and_do_not_grow_counters() -> None:
    state = SandboxState(SandboxConfig(max_numbers=2, mps=1000), FakeClock())
    state.send("1", message(), authorized=True)
    state.send("2", message(), authorized=True)

    with pytest.raises(GraphError) as refused:
        state.send("3", message(), authorized=True)

    assert refused.value.code == 100
    assert set(state.per_number) == {"1", "2"}
    assert state.totals.errors == {100: 1}


def test_unauthorised_sends_are_counted_only_in_the_totals() -> None:
    state = SandboxState(SandboxConfig(), FakeClock())
    for n in range(100):
        with pytest.raises(GraphError) as refused:
            state.send(f"made-up-{n}", message(), authorized=False)
        assert refused.value.code == 190

    assert state.per_number == {}
    assert state.totals.errors == {190: 100}


def test_remembered_sends_are_forgotten_least_recent_first() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(mps=1000, max_remembered_sends=3), clock)
    for n in range(10):
        state.send("1", message(f"+1 555 010 {n:04d}"), authorized=True)
        clock.at += 1

    assert len(state._sent) == 3
    state.send("1", message("+1 555 010 0009"), authorized=True)
    assert state.totals.duplicate_sends == 1  # the most recent is still remembered
    state.send("1", message("+1 555 010 0000"), authorized=True)
    assert state.totals.duplicate_sends == 1  # the oldest was forgotten


def test_a_full_update_schedule_refuses_sends_with_a_transient_131016() -> None:
    clock = FakeClock()
    config = SandboxConfig(mps=1000, webhook_url="http://127.0.0.1:9/hook", max_pending_updates=6)
    state = SandboxState(config, clock)
    state.send("1", message("+1 555 010 0001"), authorized=True)  # sent, delivered, read
    state.send("1", message("+1 555 010 0002"), authorized=True)

    with pytest.raises(GraphError) as refused:
        state.send("1", message("+1 555 010 0003"), authorized=True)
    assert refused.value.code == 131016

    clock.at += 1.5  # three status delays: the sender takes every update, room again
    assert len(state.schedule.take_due(clock.at)) == 6
    state.send("1", message("+1 555 010 0003"), authorized=True)


def test_a_recipient_longer_than_64_characters_is_refused_with_131009() -> None:
    state = SandboxState(SandboxConfig(), FakeClock())
    with pytest.raises(GraphError) as refused:
        state.send("1", message("1" * 65), authorized=True)
    assert refused.value.code == 131009
    state.send("1", message("+1 555 010 0001"), authorized=True)


async def test_a_standalone_number_belongs_to_its_first_token_until_reset() -> None:
    state = SandboxState(SandboxConfig(), FakeClock())
    tokens = FirstUseTokens(state)

    assert await tokens.number("1", "alpha") == "1"
    assert await tokens.number("1", "beta") is None
    assert await tokens.waba("1", "alpha")
    assert not await tokens.waba("1", "beta")
    tokens.reset()
    assert await tokens.number("1", "beta") == "1"


async def test_the_embedded_sandbox_asks_the_database_at_most_once_per_ttl() -> None:
    clock = FakeClock()
    asked: list[str] = []
    stored: dict[str, tuple[str, str]] = {}

    async def credential(phone_number_id: str) -> tuple[str, str] | None:
        asked.append(phone_number_id)
        return stored.get(phone_number_id)

    async def waba_tokens(waba_id: str) -> frozenset[str]:
        return frozenset(token for waba, token in stored.values() if waba == waba_id)

    tokens = GatewayTokens(credential, waba_tokens, ttl=2.0, clock=clock)
    assert await tokens.number("1", "sbx_a") is None
    stored["1"] = ("waba", "sbx_a")
    assert await tokens.number("1", "sbx_a") is None  # the unknown id is trusted for the ttl
    clock.at += 2.0
    assert await tokens.number("1", "sbx_a") == "waba"
    assert await tokens.number("1", "sbx_b") is None  # asks once more: a rotation?
    assert await tokens.number("1", "sbx_b") is None
    assert asked == ["1", "1", "1"]
    assert await tokens.waba("waba", "sbx_a")
    assert not await tokens.waba("waba", "sbx_b")


async def test_a_wall_clock_stepping_back_does_not_stretch_the_embedded_sandboxs_ttl() -> None:
    clock = FakeClock()
    stored: dict[str, tuple[str, str]] = {}

    async def credential(phone_number_id: str) -> tuple[str, str] | None:
        return stored.get(phone_number_id)

    async def waba_tokens(waba_id: str) -> frozenset[str]:
        return frozenset()

    tokens = GatewayTokens(credential, waba_tokens, ttl=2.0, clock=clock)
    assert await tokens.number("1", "sbx_a") is None
    stored["1"] = ("waba", "sbx_a")
    clock.at -= 3600.0  # NTP corrects the clock by an hour

    assert await tokens.number("1", "sbx_a") == "waba"


async def test_a_rotated_token_stays_valid_for_the_grace_then_only_the_new_one_works() -> None:
    clock = FakeClock()
    stored = {"1": ("waba", "sbx_old")}

    async def credential(phone_number_id: str) -> tuple[str, str] | None:
        return stored.get(phone_number_id)

    async def waba_tokens(waba_id: str) -> frozenset[str]:
        return frozenset()

    tokens = GatewayTokens(credential, waba_tokens, ttl=2.0, clock=clock)
    assert await tokens.number("1", "sbx_old") == "waba"
    stored["1"] = ("waba", "sbx_new")  # `wagate numbers update --access-token-file ...`
    clock.at += 0.5
    # A worker that learnt of the rotation first: the new token works before the ttl is up,
    # and sends claimed with the old token still pass.
    assert await tokens.number("1", "sbx_new") == "waba"
    assert await tokens.number("1", "sbx_old") == "waba"
    clock.at += tokens.grace - 0.1
    assert await tokens.number("1", "sbx_old") == "waba"  # refreshed meanwhile, still in grace
    clock.at += 0.2
    assert await tokens.number("1", "sbx_old") is None
    assert await tokens.number("1", "sbx_new") == "waba"
    assert await tokens.number("1", "sbx_other") is None


async def test_sends_that_miss_the_embedded_sandboxs_cache_together_share_one_lookup() -> None:
    # When the ttl ends under load every send in flight misses at once: one query
    # answers them all (each asking for itself queued dozens behind the writes).
    clock = FakeClock()
    asked: list[str] = []
    release = asyncio.Event()

    async def credential(phone_number_id: str) -> tuple[str, str] | None:
        asked.append(phone_number_id)
        await release.wait()
        return ("waba", "sbx_a")

    async def waba_tokens(waba_id: str) -> frozenset[str]:
        return frozenset()

    tokens = GatewayTokens(credential, waba_tokens, ttl=2.0, clock=clock)
    waiting = [asyncio.ensure_future(tokens.number("1", "sbx_a")) for _ in range(32)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["waba"] * 32
    assert asked == ["1"]
    # Unknown tokens that miss together share their recheck too.
    clock.at += RECHECK_SECONDS
    release.clear()
    waiting = [asyncio.ensure_future(tokens.number("1", "sbx_other")) for _ in range(8)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [None] * 8
    assert asked == ["1", "1"]


async def test_a_send_counts_when_it_arrived_not_when_its_token_was_checked() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(mps=80), clock)
    state.attach("1", "waba")
    arrived = clock.at
    clock.at += 1.5  # the token lookup took a second and a half
    state.send("1", message(), authorized=True, at=arrived)
    assert [sent.at for sent in state.sends] == [arrived]


async def test_an_in_process_webhook_that_fails_is_retried_like_a_refused_post() -> None:
    # The gateway hands its embedded sandbox the ingest itself; an ingest that raises
    # (the database away) must be retried with backoff, as a 5xx from an HTTP receiver.
    clock = FakeClock()
    config = SandboxConfig(
        mps=80, webhook_url="in-process", app_secret="s", status_delay=0.0, webhook_backoff=0.0
    )
    state = SandboxState(config, clock)
    state.attach("1", "waba")
    state.send("1", message(), authorized=True)
    sender = WebhookSender(state, "in-process")
    taken: list[tuple[bytes, str]] = []

    async def ingest(body: bytes, signed: str) -> None:
        if not taken and state.webhook_counters.retries == 0:
            raise ConnectionError("database away")
        taken.append((body, signed))

    sender.deliver = ingest
    sender.start()
    try:
        clock.at += 10.0  # every status of the send is due
        await sender.flush()
        for _ in range(20):
            await asyncio.sleep(0)
    finally:
        await sender.aclose()
    assert state.webhook_counters.retries == 1
    assert taken
    assert all(signed == signature(body, "s") for body, signed in taken)
    assert state.webhook_counters.posts == len(taken)
