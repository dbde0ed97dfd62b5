"""The send checks' memory (templates, opt-outs, limits) on the in-memory store and a fake
clock: when they list, when they answer 134101, when they let a send through unchecked,
and a 131049's 24 h hold in the queue (issue 10)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from tests.unit.memory import START, Memory
from tests.unit.test_dispatch import NUMBER, ok, on_memory, queued, stored
from wagate.adapters.memory import MemoryTemplates
from wagate.adapters.memory.caps import MemoryFrequencyCaps
from wagate.adapters.sandbox.templates import seed_templates
from wagate.core.compliance import SendChecks
from wagate.core.ingest import Ingestor
from wagate.core.recipients import RecipientBook, RecipientSettings
from wagate.core.templates import TemplateBook, TemplateSettings
from wagate.domain.errors import GraphError
from wagate.domain.model import KeyOwner
from wagate.domain.recipients import resolve_recipient
from wagate.domain.requests import Language, Template
from wagate.domain.template_events import TemplateUpdate
from wagate.domain.templates import Template as StoredTemplate
from wagate.domain.validation import decode_request
from wagate.domain.webhooks import signature_of
from wagate.ports import TemplatesUnavailable, UpstreamAnswer

SECRET = "unit-app-secret"


class FakeSource:
    """Meta's template list, scripted: the sandbox's seeds, or a failure, or a wait."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = [t.to_json() for t in seed_templates()]
        self.listings = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def list_templates(
        self, base_url: str, version: str, waba_id: str, token: str
    ) -> list[dict[str, Any]]:
        self.listings += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise TemplatesUnavailable("HTTP 503")
        return [dict(entry) for entry in self.entries]

    async def create_template(
        self, base_url: str, version: str, waba_id: str, token: str, body: bytes
    ) -> UpstreamAnswer:
        raise NotImplementedError

    async def delete_template(
        self, base_url: str, version: str, waba_id: str, token: str, query: Mapping[str, str]
    ) -> UpstreamAnswer:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def book(memory: Memory, source: FakeSource, **settings: float) -> TemplateBook:
    return TemplateBook(
        MemoryTemplates(memory.database),
        source,
        memory.clock,
        lambda number: "http://upstream.test",
        "v24.0",
        TemplateSettings(**settings),  # type: ignore[arg-type]
    )


def template(name: str) -> Template:
    return Template(name=name, language=Language(code="en_US"))


async def code_of(check: Any) -> int | None:
    try:
        await check
    except GraphError as error:
        return error.code
    return None


# ---- templates -------------------------------------------------------------------------


async def test_a_wabas_first_listing_is_kept_and_shared_through_the_store() -> None:
    memory, source = Memory(), FakeSource()
    first = book(memory, source)
    assert await code_of(first.check(NUMBER, template("promo_template"))) is None
    assert await code_of(first.check(NUMBER, template("no_such"))) == 132001
    assert await code_of(first.check(NUMBER, template("paused_promo"))) == 132015
    # Another process on the same store reads the stored rows: no second listing.
    second = book(memory, source)
    assert await code_of(second.check(NUMBER, template("promo_template"))) is None
    # One listing: a miss right after a listing does not list again (within `miss_s`).
    assert source.listings == 1


async def test_a_flood_of_unknown_names_lists_the_waba_once_per_miss_interval() -> None:
    memory, source = Memory(), FakeSource()
    checks = book(memory, source, miss_s=30.0)
    for n in range(200):
        assert await code_of(checks.check(NUMBER, template(f"bad_{n}"))) == 132001
    assert source.listings == 1  # the first listing answers every miss for `miss_s`
    memory.clock.at += 31
    assert await code_of(checks.check(NUMBER, template("bad_again"))) == 132001
    assert source.listings == 2


async def test_a_template_approved_after_a_miss_is_found_by_the_next_miss_listing() -> None:
    memory, source = Memory(), FakeSource()
    checks = book(memory, source, miss_s=5.0)
    assert await code_of(checks.check(NUMBER, template("draft_promo"))) == 132001
    for entry in source.entries:
        if entry["name"] == "draft_promo":
            entry["status"] = "APPROVED"
    memory.clock.at += 6
    assert await code_of(checks.check(NUMBER, template("draft_promo"))) is None


async def test_a_send_waiting_for_a_slow_first_listing_gets_134101_not_a_false_132001() -> None:
    memory, source = Memory(), FakeSource()
    source.gate = asyncio.Event()
    checks = book(memory, source, wait_s=0.05)
    assert await code_of(checks.check(NUMBER, template("promo_template"))) == 134101
    source.gate.set()
    await asyncio.sleep(0.01)
    assert await code_of(checks.check(NUMBER, template("promo_template"))) is None
    assert source.listings == 1


async def test_an_upstream_that_cannot_list_leaves_the_sends_to_it_then_is_asked_again() -> None:
    memory, source = Memory(), FakeSource()
    source.fail = True
    checks = book(memory, source, retry_s=30.0)
    # Nothing known: the send is not refused here (Meta checks it when it leaves).
    assert await code_of(checks.check(NUMBER, template("no_such"))) is None
    assert await code_of(checks.check(NUMBER, template("no_such"))) is None
    assert source.listings == 1
    source.fail = False
    memory.clock.at += 31
    await code_of(checks.check(NUMBER, template("no_such")))
    await asyncio.sleep(0)  # the background listing
    assert await code_of(checks.check(NUMBER, template("no_such"))) == 132001


async def test_a_webhook_pause_reaches_another_process_at_its_next_poll() -> None:
    memory, source = Memory(), FakeSource()
    ingesting, sending = book(memory, source), book(memory, source)
    assert await code_of(sending.check(NUMBER, template("promo_template"))) is None
    await ingesting.check(NUMBER, template("promo_template"))
    [promo] = [e for e in source.entries if e["name"] == "promo_template"]
    memory.clock.at += 1
    changed = await ingesting.apply(
        [TemplateUpdate(NUMBER.waba_id, str(promo["id"]), None, None, status="PAUSED")]
    )
    assert changed == 1
    assert await code_of(ingesting.check(NUMBER, template("promo_template"))) == 132015
    assert await code_of(sending.check(NUMBER, template("promo_template"))) is None
    assert await sending.poll() == 1
    assert await code_of(sending.check(NUMBER, template("promo_template"))) == 132015


async def test_the_listing_is_refreshed_in_the_background_after_refresh_s() -> None:
    memory, source = Memory(), FakeSource()
    checks = book(memory, source, refresh_s=300.0)
    await checks.check(NUMBER, template("promo_template"))
    memory.clock.at += 301
    await checks.check(NUMBER, template("promo_template"))
    await asyncio.sleep(0)
    assert source.listings == 2


class HeldListing(FakeSource):
    """A source whose next listing after `hold` answers what it was asked, once released."""

    def __init__(self) -> None:
        super().__init__()
        self.held: asyncio.Event | None = None

    async def list_templates(
        self, base_url: str, version: str, waba_id: str, token: str
    ) -> list[dict[str, Any]]:
        self.listings += 1
        asked = [dict(entry) for entry in self.entries]
        if self.held is not None:
            gate, self.held = self.held, None
            await gate.wait()
        return asked


async def test_a_refresh_is_never_overtaken_by_a_listing_asked_before_it() -> None:
    memory, source = Memory(), HeldListing()
    checks = book(memory, source, refresh_s=300.0)
    assert await code_of(checks.check(NUMBER, template("promo_template"))) is None
    source.held = gate = asyncio.Event()
    memory.clock.at += 301
    await checks.check(NUMBER, template("promo_template"))  # starts a background listing
    await asyncio.sleep(0)
    # The template is deleted upstream; the gateway lists again, as after its DELETE.
    source.entries = [e for e in source.entries if e["name"] != "promo_template"]
    refreshing = asyncio.ensure_future(checks.refresh(NUMBER))
    await asyncio.sleep(0.01)
    gate.set()  # the listing asked before the delete answers last
    await refreshing
    assert await code_of(checks.check(NUMBER, template("promo_template"))) == 132001
    assert source.listings == 3


class HeldPoll(MemoryTemplates):
    """The memory store whose next `changed_since` answers what it read, once released."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory.database)
        self.held: asyncio.Event | None = None

    async def changed_since(self, since_ms: int) -> list[tuple[str, StoredTemplate]]:
        read = await super().changed_since(since_ms)
        if self.held is not None:
            gate, self.held = self.held, None
            await gate.wait()
        return read


async def test_a_poll_that_read_before_a_refresh_does_not_undo_it() -> None:
    memory, source = Memory(), FakeSource()
    store = HeldPoll(memory)
    checks = TemplateBook(
        store, source, memory.clock, lambda number: "http://upstream.test", "v24.0"
    )
    assert await code_of(checks.check(NUMBER, template("promo_template"))) is None
    store.held = gate = asyncio.Event()
    polling = asyncio.ensure_future(checks.poll())  # reads promo_template as it is now
    await asyncio.sleep(0)
    source.entries = [e for e in source.entries if e["name"] != "promo_template"]
    memory.clock.at += 0.5
    await checks.refresh(NUMBER)  # as after a DELETE through the gateway
    gate.set()
    await polling
    assert await code_of(checks.check(NUMBER, template("promo_template"))) == 132001
    memory.clock.at += 1
    await checks.poll()  # the next poll reads the row the refresh wrote: DELETED
    assert await code_of(checks.check(NUMBER, template("promo_template"))) == 132001


# ---- opt-outs and limits ----------------------------------------------------------------


async def test_a_stopped_recipient_gets_131050_until_a_resume() -> None:
    memory = Memory()
    recipients = RecipientBook(memory.statuses, memory.clock)
    assert await code_of(recipients.check("waba", "447700900123", "hold")) is None
    recipients.note_preferences([("waba", "447700900123", "stop")])
    assert await code_of(recipients.check("waba", "447700900123", "hold")) == 131050
    assert await code_of(recipients.check("other", "447700900123", "hold")) is None
    recipients.note_preferences([("waba", "447700900123", "resume")])
    assert await code_of(recipients.check("waba", "447700900123", "hold")) is None


async def test_a_limited_recipient_is_refused_only_when_the_project_refuses_and_only_24_h() -> None:
    memory = Memory()
    recipients = RecipientBook(memory.statuses, memory.clock)
    until = int(memory.clock.now() * 1000) + 24 * 3_600_000
    await recipients.check("waba", "r", "hold")
    recipients.note_limits([("waba", "r", until)])
    assert await code_of(recipients.check("waba", "r", "refuse")) == 131049
    assert await code_of(recipients.check("waba", "r", "hold")) is None
    memory.clock.at += 24 * 3600 + 1
    assert await code_of(recipients.check("waba", "r", "refuse")) is None


async def test_past_its_bound_the_book_reads_each_recipient_from_the_store() -> None:
    memory = Memory()
    for n in range(5):
        memory.database.preferences[("waba", f"r{n}")] = _stop()
    recipients = RecipientBook(memory.statuses, memory.clock, RecipientSettings(max_entries=3))
    assert await code_of(recipients.check("waba", "r4", "hold")) == 131050
    assert recipients.overflow
    assert await code_of(recipients.check("waba", "r9", "hold")) is None


def _stop() -> Any:
    from wagate.adapters.memory.tables import Preference

    return Preference("stop", int(START * 1000), int(START * 1000))


# ---- 131049: the next send waits 24 h ---------------------------------------------------


def failed_status(wamid: str, code: int, at: float) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": NUMBER.phone_number_id},
        "statuses": [
            {
                "id": wamid,
                "status": "failed",
                "timestamp": str(int(at)),
                "recipient_id": "447700900123",
                "errors": [{"code": code, "title": "Healthy ecosystem"}],
            }
        ],
    }
    change = {"field": "messages", "value": value}
    entry = {"id": NUMBER.waba_id, "changes": [change]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


async def test_after_131049_the_next_send_to_that_recipient_waits_24_h_and_is_then_sent() -> None:
    memory, upstream, worker = on_memory(ok("wamid.FIRST"), ok("wamid.SECOND"))
    [first] = await queued(memory, 1)
    assert await worker.run_once() == 1
    await worker.drain()
    assert (await stored(memory, first)).upstream_wamid == "wamid.FIRST"
    recipients = RecipientBook(memory.statuses, memory.clock)
    await recipients.check(NUMBER.waba_id, "447700900123", "hold")
    ingest = Ingestor(memory.statuses, memory.clock, SECRET, recipients=recipients)
    body = failed_status("wamid.FIRST", 131049, memory.clock.now())
    await ingest.receive(body, signature_of(body, SECRET))
    # The project holds (the default): the send is accepted, and the queue keeps it.
    assert await code_of(recipients.check(NUMBER.waba_id, "447700900123", "hold")) is None
    assert await code_of(recipients.check(NUMBER.waba_id, "447700900123", "refuse")) == 131049
    # Marketing messages live 30 days by default: this one outlives the hold.
    [held] = await queued(memory, 1, ttl_s=30 * 24 * 3600)
    await queued(memory, 1, recipient="447700900999")
    memory.clock.at += 1
    for _ in range(3):
        # The fake clock's sleeps move time on: a send paced to a later slot goes then.
        await worker.run_once()
        await worker.drain()
    assert [call.payload["to"] for call in upstream.calls] == ["447700900123", "447700900999"]
    memory.clock.at = START + 24 * 3600 - 60
    await worker.run_once()
    await worker.drain()
    assert (await stored(memory, held)).upstream_wamid is None  # a minute early: still held
    memory.clock.at = START + 24 * 3600 + 1
    await worker.run_once()
    await worker.drain()
    calls = [(call.payload["to"], call.at - START) for call in upstream.calls]
    assert [to for to, _ in calls] == ["447700900123", "447700900999", "447700900123"]
    assert calls[1][1] < 60  # the other recipient at once
    assert calls[2][1] >= 24 * 3600  # the limited one after 24 h, not before
    assert (await stored(memory, held)).upstream_wamid is not None


# ---- the frequency cap ----------------------------------------------------------------


async def test_a_frequency_cap_refuses_the_sends_over_it_for_a_rolling_day() -> None:
    memory = Memory()
    checks = SendChecks(caps=MemoryFrequencyCaps(), clock=memory.clock)
    owner = KeyOwner(NUMBER.project_id, frequency_cap=2)
    request = decode_request(SEND)
    ana, bob = resolve_recipient("+447700900123", None), resolve_recipient("+447700900124", None)
    assert await code_of(checks.check(NUMBER, request, ana, owner)) is None
    memory.clock.at += 3600
    assert await code_of(checks.check(NUMBER, request, ana, owner)) is None
    assert await code_of(checks.check(NUMBER, request, ana, owner)) == 1_000_003
    assert await code_of(checks.check(NUMBER, request, bob, owner)) is None
    # Without a cap, nothing is counted.
    assert await code_of(checks.check(NUMBER, request, ana, KeyOwner(NUMBER.project_id))) is None
    # A day after the first send, one more may go; the second's day is not over yet.
    memory.clock.at = START + 24 * 3600 + 1
    assert await code_of(checks.check(NUMBER, request, ana, owner)) is None
    assert await code_of(checks.check(NUMBER, request, ana, owner)) == 1_000_003


SEND = json.dumps(
    {
        "messaging_product": "whatsapp",
        "to": "+447700900123",
        "type": "template",
        "template": {"name": "promo_template", "language": {"code": "en_US"}},
    }
).encode()


async def test_a_late_webhook_does_not_bring_a_deleted_template_back() -> None:
    memory, source = Memory(), FakeSource()
    checks = book(memory, source, miss_s=1.0)
    await checks.check(NUMBER, template("promo_template"))
    [promo] = [e for e in source.entries if e["name"] == "promo_template"]
    source.entries.remove(promo)
    await checks.refresh(NUMBER)
    assert await code_of(checks.check(NUMBER, template("promo_template"))) == 132001
    late = TemplateUpdate(NUMBER.waba_id, str(promo["id"]), None, None, status="APPROVED")
    assert await checks.apply([late]) == 0
    await checks.poll()  # the rows written since, DELETED included
    assert await code_of(checks.check(NUMBER, template("promo_template"))) == 132001
