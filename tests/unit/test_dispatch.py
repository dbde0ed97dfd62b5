"""The dispatcher on an in-memory queue, a scripted upstream and a fake clock: nothing sleeps."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from tests.unit.memory import START, FakeClock, ManualClock, Memory, settle
from wagate.adapters.memory import MemoryQueue
from wagate.adapters.memory.tables import NumberRow
from wagate.core.accept import Acceptor
from wagate.core.dispatch import Dispatcher, DispatchSettings, upstream_payload
from wagate.domain.delivery import Claimed, Outcome, UpstreamResult, Waiting
from wagate.domain.errors import MESSAGE_EXPIRED
from wagate.domain.model import NewMessage, PhoneNumber, Project, StoredMessage
from wagate.domain.recipients import resolve_recipient
from wagate.domain.retry import RetryPolicy
from wagate.ports import Clock, Queue, Upstream

NUMBER = PhoneNumber(
    phone_number_id="106540352242922",
    waba_id="102290129340398",
    project_id="prj_test",
    upstream="sandbox",
    access_token="token-1",
    mps=80,
)
# No jitter, so every retry delay is exact: 2 s, 4 s, 8 s ... capped at 60 s.
POLICY = RetryPolicy(base_delay_s=2.0, factor=2.0, max_delay_s=60.0, max_attempts=5, jitter=0.0)
STORED_REQUEST: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "to": "447700900123",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}


@dataclass
class FakeQueue:
    """A scripted queue: hands out given claims and records the calls a send makes.

    For what one send decides (and the tier lookups); rounds run on the memory queue.
    """

    to_claim: list[Claimed] = field(default_factory=list)
    recorded: list[Outcome] = field(default_factory=list)
    throttled: list[tuple[str, float]] = field(default_factory=list)
    held: list[tuple[str, str, int]] = field(default_factory=list)
    tiers: list[int | None] = field(default_factory=list)

    async def waiting(self) -> list[Waiting]:
        return [Waiting(NUMBER, START)]

    async def claim(
        self,
        phone_number_id: str,
        owner: str,
        now: float,
        *,
        lease_s: float,
        horizon_s: float,
        limit: int,
        tier_mps: int | None = None,
    ) -> list[Claimed]:
        self.tiers.append(tier_mps)
        claimed = [m for m in self.to_claim if m.phone_number_id == phone_number_id][:limit]
        self.to_claim = [m for m in self.to_claim if m not in claimed]
        return claimed

    async def record(self, outcome: Outcome) -> None:
        self.recorded.append(outcome)

    async def throttle(self, phone_number_id: str, now: float) -> None:
        self.throttled.append((phone_number_id, now))

    async def hold_recipient(self, phone_number_id: str, recipient: str, until_ms: int) -> None:
        self.held.append((phone_number_id, recipient, until_ms))

    async def reap_leases(self, now: float) -> int:
        return 0

    async def expire(self, now: float) -> int:
        return 0

    async def reconcile(self, now: float) -> int:
        return 0

    async def close(self) -> None:
        return None


@dataclass
class UpstreamCall:
    """One POST the dispatcher made, and when (fake time)."""

    base_url: str
    version: str
    phone_number_id: str
    token: str
    payload: dict[str, Any]
    at: float


class FakeUpstream:
    """Meta, scripted: answers each send with the next result (the last one repeats)."""

    def __init__(self, clock: FakeClock, *results: UpstreamResult) -> None:
        self.clock = clock
        self.results = list(results) or [ok()]
        self.calls: list[UpstreamCall] = []
        self.tier: int | None = None
        self.tier_asks = 0

    async def send(
        self, base_url: str, version: str, phone_number_id: str, token: str, payload: bytes
    ) -> UpstreamResult:
        self.calls.append(
            UpstreamCall(
                base_url, version, phone_number_id, token, json.loads(payload), self.clock.now()
            )
        )
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]

    async def throughput(
        self, base_url: str, version: str, phone_number_id: str, token: str
    ) -> int | None:
        self.tier_asks += 1
        return self.tier

    async def close(self) -> None:
        return None


def ok(wamid: str = "wamid.UPSTREAM1") -> UpstreamResult:
    """Meta accepted the message."""
    return UpstreamResult(wamid=wamid, message_status="accepted", http_status=200)


def error(code: int, http_status: int = 400) -> UpstreamResult:
    """Meta refused the message with a Graph error."""
    return UpstreamResult(
        error_code=code,
        error_title=f"title of {code}",
        error_details=f"details of {code}",
        http_status=http_status,
    )


def claimed(
    seq: int = 1,
    *,
    recipient: str = "447700900123",
    attempts: int = 1,
    slot: float = START,
    expires_at: float = START + 3600,
    request: dict[str, Any] | None = None,
) -> Claimed:
    """A message as a claim hands it to the dispatcher."""
    return Claimed(
        seq=seq,
        id=f"wamid.gateway{seq}",
        phone_number_id=NUMBER.phone_number_id,
        recipient=recipient,
        request=json.dumps(request or {**STORED_REQUEST, "to": recipient}),
        attempts=attempts,
        created_at=int(START * 1000),
        expires_at=int(expires_at * 1000),
        slot=slot,
        interval=1 / NUMBER.mps,
    )


def dispatcher(queue: Queue, upstream: Upstream, clock: Clock) -> Dispatcher:
    """A dispatcher with exact (unjittered) retries and a fixed owner name."""
    return Dispatcher(
        queue,
        upstream,
        clock,
        lambda number: f"http://127.0.0.1:9/{number.upstream}",
        DispatchSettings(graph_version="v23.0", retry=POLICY),
        owner="worker-1",
        rng=random.Random(7),
    )


@dataclass
class Rig:
    """A dispatcher with its fakes."""

    clock: FakeClock
    queue: FakeQueue
    upstream: FakeUpstream
    dispatcher: Dispatcher


def rig(*results: UpstreamResult) -> Rig:
    """A dispatcher whose upstream answers with `results`."""
    clock = FakeClock()
    queue = FakeQueue()
    upstream = FakeUpstream(clock, *results)
    return Rig(clock, queue, upstream, dispatcher(queue, upstream, clock))


# ---- what one send becomes ---------------------------------------------------------


async def test_an_accepted_send_is_forwarded_with_metas_wamid() -> None:
    r = rig(ok("wamid.FROM_META"))
    outcome = await r.dispatcher.send(NUMBER, claimed(seq=3))
    assert outcome.kind == "forwarded"
    assert outcome.seq == 3
    assert outcome.owner == "worker-1"
    assert outcome.wamid == "wamid.FROM_META"
    assert outcome.upstream_status == "accepted"
    [call] = r.upstream.calls
    assert call.base_url == "http://127.0.0.1:9/sandbox"
    assert call.version == "v23.0"
    assert call.phone_number_id == NUMBER.phone_number_id
    assert call.token == "token-1"


@pytest.mark.parametrize(
    ("attempt", "delay_s"), [(1, 2.0), (2, 4.0), (3, 8.0)], ids=["first", "second", "third"]
)
async def test_a_transient_error_becomes_a_retry_due_after_the_policys_backoff(
    attempt: int, delay_s: float
) -> None:
    r = rig(error(131000, 500))
    outcome = await r.dispatcher.send(NUMBER, claimed(attempts=attempt))
    assert outcome.kind == "retry"
    assert outcome.error_code == 131000
    assert outcome.error_details == "details of 131000"
    assert outcome.at_ms == int(START * 1000)
    assert outcome.due_at_ms == outcome.at_ms + int(delay_s * 1000)
    # An ordinary transient error slows down nothing but this message.
    assert r.queue.throttled == []
    assert r.queue.held == []


async def test_a_transient_error_on_the_last_allowed_attempt_fails_the_message() -> None:
    r = rig(error(131000, 500))
    outcome = await r.dispatcher.send(NUMBER, claimed(attempts=POLICY.max_attempts))
    assert outcome.kind == "failed"
    assert outcome.error_code == 131000
    assert outcome.due_at_ms is None


async def test_an_answer_without_a_code_is_retried_as_something_went_wrong() -> None:
    r = rig(UpstreamResult(http_status=502, error_details="bad gateway"))
    outcome = await r.dispatcher.send(NUMBER, claimed())
    assert outcome.kind == "retry"
    assert outcome.error_code == 131000


@pytest.mark.parametrize("code", [132001, 131026, 131049, 131050, 100])
async def test_a_permanent_error_fails_the_message_with_metas_code(code: int) -> None:
    r = rig(error(code))
    outcome = await r.dispatcher.send(NUMBER, claimed())
    assert outcome.kind == "failed"
    assert outcome.error_code == code
    assert outcome.error_title == f"title of {code}"
    assert outcome.error_details == f"details of {code}"
    assert outcome.due_at_ms is None
    assert r.queue.throttled == []
    assert r.queue.held == []


async def test_a_throughput_limit_throttles_the_whole_number() -> None:
    r = rig(error(130429))
    outcome = await r.dispatcher.send(NUMBER, claimed())
    assert outcome.kind == "retry"
    assert outcome.error_code == 130429
    assert outcome.due_at_ms == int(START * 1000) + 2000
    assert r.queue.throttled == [(NUMBER.phone_number_id, START)]
    assert r.queue.held == []


@pytest.mark.parametrize(("attempt", "hold_s"), [(1, 4), (2, 16)])
async def test_a_pair_rate_limit_holds_only_that_recipient_for_four_to_the_n_seconds(
    attempt: int, hold_s: int
) -> None:
    r = rig(error(131056))
    outcome = await r.dispatcher.send(NUMBER, claimed(recipient="447700900999", attempts=attempt))
    until_ms = int(START * 1000) + hold_s * 1000
    assert outcome.kind == "retry"
    assert outcome.due_at_ms == until_ms
    assert r.queue.held == [(NUMBER.phone_number_id, "447700900999", until_ms)]
    assert r.queue.throttled == []


async def test_an_expired_message_fails_without_calling_meta() -> None:
    r = rig(ok())
    outcome = await r.dispatcher.send(NUMBER, claimed(expires_at=START - 1))
    assert r.upstream.calls == []
    assert outcome.kind == "failed"
    assert outcome.error_code == MESSAGE_EXPIRED
    assert outcome.error_title
    assert "time to live" in (outcome.error_details or "")


async def test_a_message_at_its_expiry_instant_is_still_sent() -> None:
    r = rig(ok())
    outcome = await r.dispatcher.send(NUMBER, claimed(expires_at=START))
    assert outcome.kind == "forwarded"
    assert len(r.upstream.calls) == 1


# ---- rounds: claim, wait for the slot, send, record ----------------------------------


def on_memory(
    *results: UpstreamResult, mps: int = NUMBER.mps
) -> tuple[Memory, FakeUpstream, Dispatcher]:
    """A dispatcher on the in-memory queue, holding NUMBER, whose upstream answers `results`."""
    memory = Memory()
    number = dataclasses.replace(NUMBER, mps=mps)
    memory.database.projects[NUMBER.project_id] = Project(NUMBER.project_id, "dispatch", 0)
    memory.database.numbers[NUMBER.phone_number_id] = NumberRow(number, 0)
    upstream = FakeUpstream(memory.clock, *results)
    return memory, upstream, dispatcher(memory.queue, upstream, memory.clock)


async def queued(
    memory: Memory, count: int, recipient: str = "447700900123", ttl_s: int = 3600
) -> list[str]:
    """Ids of `count` messages queued for NUMBER now, expiring after `ttl_s`."""
    ids = []
    for _ in range(count):
        seq = next(_message_ids)
        await memory.store.add_message(
            NewMessage(
                id=f"wamid.gateway{seq}",
                project_id=NUMBER.project_id,
                phone_number_id=NUMBER.phone_number_id,
                recipient_input=recipient,
                recipient=recipient,
                recipient_kind="phone",
                request=json.dumps({**STORED_REQUEST, "to": recipient}),
                template_name="promo_template",
                template_language="en_US",
                biz_opaque_callback_data=None,
                created_at=int(memory.clock.now() * 1000),
                expires_at=int(memory.clock.now() * 1000) + ttl_s * 1000,
                idempotency_key=None,
                request_hash=None,
            )
        )
        ids.append(f"wamid.gateway{seq}")
    return ids


_message_ids = itertools.count(1)


async def stored(memory: Memory, message_id: str) -> StoredMessage:
    message = await memory.store.get_message(NUMBER.phone_number_id, message_id)
    assert message is not None
    return message


async def test_a_round_sends_each_claimed_message_at_its_paced_slot_and_records_it() -> None:
    memory, upstream, worker = on_memory(ok("wamid.A"), ok("wamid.B"), mps=4)
    first, second = await queued(memory, 2)
    assert await worker.run_once() == 2
    await worker.drain()
    # 4 msg/s: one at once, the next a quarter second later.
    assert [round(call.at - START, 6) for call in upstream.calls] == [0.0, 0.25]
    assert [(await stored(memory, i)).upstream_wamid for i in (first, second)] == [
        "wamid.A",
        "wamid.B",
    ]
    assert worker.sent == 2


async def test_a_round_expires_messages_past_their_ttl_before_claiming() -> None:
    memory, upstream, worker = on_memory()
    [old] = await queued(memory, 1)
    memory.clock.at += 3601
    assert await worker.run_once() == 0
    assert upstream.calls == []
    assert (await stored(memory, old)).error_code == MESSAGE_EXPIRED


async def test_a_throughput_limit_in_a_round_halves_the_numbers_next_claims() -> None:
    memory, _, worker = on_memory(error(130429), ok(), mps=10)
    await queued(memory, 1)
    assert await worker.run_once() == 1
    await worker.drain()
    await queued(memory, 1)
    [later] = await memory.queue.claim(
        NUMBER.phone_number_id, "w", memory.clock.now(), lease_s=60, horizon_s=1, limit=5
    )
    assert later.interval == pytest.approx(0.2)  # 5 msg/s instead of 10


async def test_a_pair_rate_limit_in_a_round_holds_that_recipient_not_the_others() -> None:
    # 1 msg/s and claims of one message: each round claims one message.
    memory, upstream, worker = on_memory(error(131056), ok(), mps=1)
    worker.settings = dataclasses.replace(worker.settings, max_claim=1)
    first, held = await queued(memory, 2, recipient="447700900001")
    [other] = await queued(memory, 1, recipient="447700900002")
    assert await worker.run_once() == 1
    await worker.drain()
    memory.clock.at = START + 1
    assert await worker.run_once() == 1
    await worker.drain()
    assert [call.payload["to"] for call in upstream.calls] == ["447700900001", "447700900002"]
    assert (await stored(memory, other)).upstream_wamid is not None
    for message_id in (first, held):
        assert (await stored(memory, message_id)).upstream_wamid is None


async def test_a_send_that_raises_is_left_to_its_lease_instead_of_stopping_the_worker() -> None:
    class Broken(FakeUpstream):
        async def send(
            self, base_url: str, version: str, phone_number_id: str, token: str, payload: bytes
        ) -> UpstreamResult:
            raise RuntimeError("connection pool exploded")

    memory, _, _ = on_memory()
    worker = dispatcher(memory.queue, Broken(memory.clock), memory.clock)
    await queued(memory, 2)
    assert await worker.run_once() == 2
    await worker.drain()
    # Nothing recorded: both wait for their lease to end, then go back to the queue.
    assert await memory.queue.reap_leases(memory.clock.now()) == 0
    assert await memory.queue.reap_leases(memory.clock.now() + 61) == 2


# ---- what Meta is sent ----------------------------------------------------------------


def sent_for(request: dict[str, Any]) -> dict[str, Any]:
    """What Meta is sent for a request, with the recipient the accept path stored for it."""
    stored = resolve_recipient(request.get("to"), request.get("recipient"))
    sent: dict[str, Any] = json.loads(upstream_payload(json.dumps(request), stored.address))
    return sent


def test_upstream_payload_fills_in_recipient_type_and_language_policy() -> None:
    sent = sent_for(STORED_REQUEST)
    assert sent["recipient_type"] == "individual"
    assert sent["template"]["language"] == {"code": "en_US", "policy": "deterministic"}


def test_upstream_payload_keeps_everything_else_the_client_sent() -> None:
    request = {
        **STORED_REQUEST,
        "recipient_type": "individual",
        "recipient": "US.13491208655302741918",
        "biz_opaque_callback_data": "order-7",
        "product_policy": "STRICT",
        "message_activity_sharing": True,
        "context": {"message_id": "wamid.PREVIOUS"},
        "template": {
            "name": "seasonal_promo",
            "language": {"code": "pt_BR", "policy": "deterministic"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]},
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": 0,
                    "parameters": [{"type": "text", "text": "summer"}],
                },
            ],
        },
    }
    assert sent_for(request) == request


def test_upstream_payload_adds_no_empty_fields() -> None:
    sent = sent_for(STORED_REQUEST)
    assert set(sent) == {*STORED_REQUEST, "recipient_type"}
    assert None not in sent.values()


async def test_late_slots_are_spaced_again_not_sent_in_a_burst() -> None:
    clock = FakeClock()
    queue = FakeQueue(to_claim=[claimed(seq, slot=START) for seq in range(1, 6)])
    upstream = FakeUpstream(clock)
    worker = dispatcher(queue, upstream, clock)
    await worker.run_once()
    await worker.drain()
    times = sorted(call.at for call in upstream.calls)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 5
    assert min(gaps) >= 1 / NUMBER.mps - 1e-9


async def test_metas_throughput_tier_is_asked_once_and_passed_to_every_claim() -> None:
    clock = FakeClock()
    queue = FakeQueue()
    upstream = FakeUpstream(clock)
    upstream.tier = 80
    worker = dispatcher(queue, upstream, clock)
    await worker.run_once()  # the tier is not known yet: the lookup starts beside the claim
    await asyncio.sleep(0)  # the lookup answers
    for _ in range(2):
        clock.at += 1.0
        await worker.run_once()
    assert queue.tiers == [None, 80, 80]
    assert upstream.tier_asks == 1
    await worker.drain()


SECOND = dataclasses.replace(NUMBER, phone_number_id="106540352242923")


class TwoNumbers(FakeQueue):
    """A queue with two phone numbers."""

    async def waiting(self) -> list[Waiting]:
        return [Waiting(NUMBER, START), Waiting(SECOND, START)]


class DeadTierUpstream(FakeUpstream):
    """An upstream whose tier lookup for NUMBER never answers (a 30 s timeout, or worse)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.tier = 40
        self.hung: list[str] = []

    async def throughput(
        self, base_url: str, version: str, phone_number_id: str, token: str
    ) -> int | None:
        self.tier_asks += 1
        if phone_number_id == NUMBER.phone_number_id:
            self.hung.append(phone_number_id)
            await asyncio.Event().wait()
        return self.tier


async def test_a_tier_lookup_that_never_answers_delays_no_claim() -> None:
    clock = FakeClock()
    queue = TwoNumbers(
        to_claim=[
            claimed(1),
            dataclasses.replace(claimed(2), phone_number_id=SECOND.phone_number_id),
        ]
    )
    upstream = DeadTierUpstream(clock)
    worker = dispatcher(queue, upstream, clock)
    # Were the lookup awaited inside the round, this would never return.
    assert await asyncio.wait_for(worker.run_once(), timeout=2) == 2
    await asyncio.sleep(0)
    assert upstream.hung == [NUMBER.phone_number_id]
    clock.at += 1.0
    await asyncio.wait_for(worker.run_once(), timeout=2)
    # The second number's tier arrived; the first is still unknown and asked only once.
    # (A worker claims its numbers in an order of its own: compare without the order.)
    assert queue.tiers[:2] == [None, None]
    assert sorted(queue.tiers[2:], key=str) == [40, None]
    assert upstream.tier_asks == 2
    await asyncio.wait_for(worker.drain(), timeout=2)
    assert len(upstream.calls) == 2


async def test_a_failed_tier_lookup_keeps_the_number_claiming_and_is_asked_again_later() -> None:
    class Failing(FakeUpstream):
        async def throughput(
            self, base_url: str, version: str, phone_number_id: str, token: str
        ) -> int | None:
            self.tier_asks += 1
            raise RuntimeError("graph is down")

    clock = FakeClock()
    queue = FakeQueue()
    upstream = Failing(clock)
    worker = dispatcher(queue, upstream, clock)
    await worker.run_once()
    await asyncio.sleep(0)
    clock.at += 1.0
    await worker.run_once()
    assert upstream.tier_asks == 1
    clock.at += 61.0
    await worker.run_once()
    await asyncio.sleep(0)
    assert upstream.tier_asks == 2
    assert queue.tiers == [None, None, None]
    await worker.drain()


# ---- an outcome that cannot be recorded is recorded later, never sent again ----------


class FlakyRecords(FakeQueue):
    """A queue whose database is unavailable for the first `failures` records."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.record_attempts = 0

    async def record(self, outcome: Outcome) -> None:
        self.record_attempts += 1
        if self.record_attempts <= self.failures:
            raise ConnectionRefusedError("the database is down")
        await super().record(outcome)


async def test_an_outcome_that_cannot_be_recorded_is_recorded_again_not_sent_again() -> None:
    clock = FakeClock()
    queue = FlakyRecords(4, to_claim=[claimed(1)])
    upstream = FakeUpstream(clock, ok("wamid.ONCE"))
    worker = dispatcher(queue, upstream, clock)
    await worker.run_once()
    await worker.drain()
    assert len(upstream.calls) == 1
    assert queue.record_attempts == 5
    [outcome] = queue.recorded
    assert (outcome.kind, outcome.wamid) == ("forwarded", "wamid.ONCE")
    # Backoff between the records: 0.5 + 1 + 2 + 4 s after the send.
    assert clock.now() - upstream.calls[0].at == pytest.approx(7.5)


@pytest.mark.parametrize(
    "wamid", ["wamid." + "A" * 5000, "wamid.NUL\x00BYTE", ""], ids=["huge", "nul", "empty"]
)
async def test_an_absurd_wamid_from_meta_is_recorded_as_forwarded_without_it(wamid: str) -> None:
    r = rig(ok(wamid))
    outcome = await r.dispatcher.send(NUMBER, claimed())
    assert outcome.kind == "forwarded"
    assert outcome.wamid is None
    assert outcome.upstream_status == "accepted"


async def test_a_long_but_sane_wamid_is_kept() -> None:
    wamid = "wamid." + "B" * 300
    r = rig(ok(wamid))
    assert (await r.dispatcher.send(NUMBER, claimed())).wamid == wamid


@pytest.mark.parametrize(
    "typed", ["+44 7700 900123", "0044 7700 900123", "44-7700-900123", "+44 (7700) 900-123"]
)
def test_upstream_payload_sends_to_as_the_e164_digits_answered_as_wa_id(typed: str) -> None:
    sent = sent_for({**STORED_REQUEST, "to": typed})
    assert sent["to"] == "447700900123"


def test_upstream_payload_leaves_a_bsuid_send_as_it_was() -> None:
    request = {**STORED_REQUEST, "recipient": "US.ENT.11815799212886844830"}
    request.pop("to", None)
    sent = sent_for(request)
    assert sent["recipient"] == "US.ENT.11815799212886844830"
    assert "to" not in sent


# ---- waking: an idle worker is told of work, it does not poll every number -----------


class CountingQueue(MemoryQueue):
    """The memory queue, counting the claims and looks the worker makes."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory.database)
        self.claims = 0
        self.looks = 0

    async def claim(
        self,
        phone_number_id: str,
        owner: str,
        now: float,
        *,
        lease_s: float,
        horizon_s: float,
        limit: int,
        tier_mps: int | None = None,
    ) -> list[Claimed]:
        self.claims += 1
        return await super().claim(
            phone_number_id,
            owner,
            now,
            lease_s=lease_s,
            horizon_s=horizon_s,
            limit=limit,
            tier_mps=tier_mps,
        )

    async def waiting(self) -> list[Waiting]:
        self.looks += 1
        return await super().waiting()


@dataclass
class Idle:
    """A worker running on a manual clock, waiting for work."""

    memory: Memory
    clock: ManualClock
    queue: CountingQueue
    upstream: FakeUpstream
    worker: Dispatcher
    acceptor: Acceptor
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=5)


async def idle_worker(*, numbers: int = 1, poll_s: float = 60.0) -> tuple[Idle, list[PhoneNumber]]:
    """A running worker whose fallback look is `poll_s` apart, and `numbers` idle numbers."""
    clock = ManualClock()
    memory = Memory(clock=clock)
    added = [
        await memory.number(phone_number_id=f"1065403522{n:05d}", mps=80) for n in range(numbers)
    ]
    queue = CountingQueue(memory)
    upstream = FakeUpstream(clock)
    worker = Dispatcher(
        queue,
        upstream,
        clock,
        lambda number: f"http://127.0.0.1:9/{number.upstream}",
        DispatchSettings(retry=POLICY, poll_s=poll_s),
        owner="worker-1",
    )
    acceptor = Acceptor(memory.store, clock, work=worker.bell)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await settle()
    return Idle(memory, clock, queue, upstream, worker, acceptor, stop, task), added


async def test_an_accept_wakes_an_idle_worker_which_sends_at_once() -> None:
    idle, [number] = await idle_worker(poll_s=60.0)
    try:
        await idle.acceptor.accept(number, json.dumps(STORED_REQUEST).encode())
        await settle()
        # Time has not moved: the worker did not wait for its look (60 s away) to send.
        [call] = idle.upstream.calls
        assert call.at == START
        assert call.phone_number_id == number.phone_number_id
    finally:
        await idle.close()


async def test_an_idle_worker_with_many_idle_numbers_makes_no_claim_attempt() -> None:
    idle, _ = await idle_worker(numbers=1000, poll_s=1.0)
    try:
        await idle.clock.advance(10.0)
        assert idle.queue.claims == 0
        # It is alive: one look per second at the numbers with work (there are none).
        assert 10 <= idle.queue.looks <= 12
    finally:
        await idle.close()


async def test_a_message_due_later_is_claimed_at_its_due_time_without_polling_for_it() -> None:
    idle, [number] = await idle_worker(poll_s=60.0)
    try:
        await idle.acceptor.accept(number, json.dumps(STORED_REQUEST).encode())
        # Held (a 131056 earlier) until 30 s from now, before the worker could claim it.
        await idle.queue.hold_recipient(
            number.phone_number_id, "447700900123", int(START + 30) * 1000
        )
        await settle()
        await idle.clock.advance(29.75)
        assert idle.upstream.calls == []
        # The accept's wake-up claimed once, which put the message off to its pair's turn
        # (the hold lives in the pair's pacing state, not in the backlog), then a few quick
        # retries, then a timer: no claim for the rest of the 30 s.
        early = idle.queue.claims
        # (retries after 0.05, 0.1, 0.2 and 0.4 s: the next would pass the half-second horizon)
        assert 1 <= early <= 5
        await idle.clock.advance(0.25)
        [call] = idle.upstream.calls
        assert call.at == START + 30
        assert idle.queue.claims == early + 1
    finally:
        await idle.close()


async def test_a_backlog_is_claimed_horizon_after_horizon_without_waiting_for_a_look() -> None:
    idle, [number] = await idle_worker(poll_s=60.0)
    try:
        idle.memory.database.numbers[number.phone_number_id].number = dataclasses.replace(
            number, mps=10
        )
        for _ in range(20):
            await idle.acceptor.accept(number, json.dumps(STORED_REQUEST).encode())
        await idle.clock.advance(2.5)
        # 10 msg/s and a half-second horizon: several claims, one after the other, sent
        # all 20 in about two seconds, though no look came (they are 60 s apart).
        assert len(idle.upstream.calls) == 20
        assert idle.queue.claims >= 4
    finally:
        await idle.close()


async def test_a_retried_message_is_claimed_again_at_its_due_time() -> None:
    idle, [number] = await idle_worker(poll_s=60.0)
    idle.upstream.results = [error(131000, 500), ok()]
    try:
        await idle.acceptor.accept(number, json.dumps(STORED_REQUEST).encode())
        await settle()
        await idle.clock.advance(3.0)
        # POLICY retries after 2 s; the worker's timer, not its look, brings it back.
        assert [call.at for call in idle.upstream.calls] == [START, START + 2.0]
    finally:
        await idle.close()


async def test_a_rotated_token_is_used_from_the_next_look_even_if_no_look_saw_work_waiting() -> (
    None
):
    memory, upstream, worker = on_memory(ok("wamid.A"), ok("wamid.B"))
    await queued(memory, 1)
    assert await worker.run_once() == 1
    await worker.drain()
    # Idle at the next look: its messages never wait long enough for a look to see them.
    memory.clock.at += worker.settings.poll_s + 0.1
    await worker.run_once()
    await memory.store.update_phone_number(
        NUMBER.phone_number_id, access_token="rotated", mps=None, waba_id=None
    )
    await queued(memory, 1)
    worker.bell.notify(NUMBER.phone_number_id)  # as the accept does
    assert await worker.run_once() == 1
    await worker.drain()
    assert [call.token for call in upstream.calls] == [NUMBER.access_token, "rotated"]


# ---- never more than the rate in any second, even when wake-ups come late ----------


def most_in_a_second(times: list[float]) -> int:
    """The most sends in any half-open window of one second."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, start + 1.0) - i for i, start in enumerate(ordered)),
        default=0,
    )


async def test_a_late_wake_up_does_not_put_more_than_the_rate_into_a_second() -> None:
    # Two seconds of slots at the number's 80 msg/s, then the process stalls for
    # 300 ms (a long claim, a GC pause): the slots of the stall come due at once,
    # beside the on-time ones after it.
    clock = ManualClock()
    rate = NUMBER.mps
    slots = [START + 0.5 + i / rate for i in range(3 * rate)]
    queue = FakeQueue(to_claim=[claimed(i + 1, slot=slot) for i, slot in enumerate(slots)])
    upstream = FakeUpstream(clock)
    worker = dispatcher(queue, upstream, clock)
    worker.settings = dataclasses.replace(worker.settings, max_claim=len(slots))

    await worker.run_once()
    await clock.advance(1.0, step=0.001)
    await clock.advance(0.3, step=0.3)  # the stall
    await clock.advance(4.0, step=0.001)
    await worker.drain()

    times = [call.at for call in upstream.calls]
    assert len(times) == len(slots)
    assert most_in_a_second(times) <= rate
    # Held back only as long as the window needs: the last send is at most one
    # interval per stalled-and-caught-up send late.
    assert max(times) <= slots[-1] + 0.3 + 1 / rate


class ManyNumbers(FakeQueue):
    """Twelve numbers, all with due work; every claim takes a moment, is recorded and finds
    nothing (and the claims in flight at once are counted)."""

    numbers: ClassVar[list[PhoneNumber]] = [
        dataclasses.replace(NUMBER, phone_number_id=f"1065403522429{n:02d}") for n in range(12)
    ]

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def waiting(self) -> list[Waiting]:
        return [Waiting(number, START) for number in self.numbers]

    async def claim(
        self,
        phone_number_id: str,
        owner: str,
        now: float,
        *,
        lease_s: float,
        horizon_s: float,
        limit: int,
        tier_mps: int | None = None,
    ) -> list[Claimed]:
        self.claims.append(phone_number_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            return []
        finally:
            self.in_flight -= 1


async def test_workers_go_round_robin_over_many_numbers_each_from_its_own_start() -> None:
    clock = FakeClock()
    ids = sorted(number.phone_number_id for number in ManyNumbers.numbers)
    starts = []
    for seed in (1, 2):
        queue = ManyNumbers()
        worker = dispatcher(queue, FakeUpstream(clock), clock)
        worker.rng = random.Random(seed)
        await worker.run_once()
        first_round = list(queue.claims)
        # Each number once, in order, from somewhere: a rotation of the sorted numbers.
        start = ids.index(first_round[0])
        assert first_round == ids[start:] + ids[:start]
        starts.append(start)
        # The next round goes on after the last number claimed, not from the top.
        clock.at += 0.06
        await worker.run_once()
        assert queue.claims[len(first_round)] == ids[start]
    assert starts[0] != starts[1]


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_claims_of_different_numbers_run_side_by_side_up_to_the_setting(
    concurrency: int,
) -> None:
    clock = FakeClock()
    queue = ManyNumbers()
    worker = dispatcher(queue, FakeUpstream(clock), clock)
    worker.settings = dataclasses.replace(worker.settings, claim_concurrency=concurrency)

    await worker.run_once()

    assert sorted(queue.claims) == sorted(n.phone_number_id for n in ManyNumbers.numbers)
    assert queue.most_in_flight == concurrency
