"""The notifier on the in-memory outbox, a scripted receiver and a fake clock: nothing sleeps.

Deliveries come from messages really moving (Meta's statuses through the memory
status store) and from test events, as in the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.memory import START, FakeClock, ManualClock, Memory, settle
from wagate.adapters.memory import MemoryNotifications
from wagate.core.accept import Acceptor
from wagate.core.notify import Notifier, NotifySettings
from wagate.domain.delivery import Outcome
from wagate.domain.model import PhoneNumber, Status
from wagate.domain.notifications import (
    EVENT_TYPES,
    RETRY_SCHEDULE_S,
    AttemptRecord,
    ClaimedDelivery,
    WebhookEndpoint,
)
from wagate.domain.notify_formats import TEST_MESSAGE, webhook_test_data
from wagate.domain.statuses import StatusRow

SECRET = "whsec-never-in-a-log"
URL = "https://hooks.example.com/wa"
# A token in the query string, as some receivers want: no log may show it either.
QUERY_TOKEN = "query-token-never-in-a-log"
SEND = json.dumps(
    {
        "messaging_product": "whatsapp",
        "to": "447700900123",
        "type": "template",
        "template": {"name": "promo_template", "language": {"code": "en_US"}},
    }
).encode()
RANK: dict[str, int] = {"sent": 0, "delivered": 1, "read": 2, "failed": 3}


class NoJitter(random.Random):
    """Retry delays exactly as the schedule says (10 s, 40 s, 90 s, ...)."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def render(delivery: ClaimedDelivery, now_s: float) -> tuple[bytes, dict[str, str]]:
    """A tiny wire format: the delivery's id, type and data, signed with its secret."""
    body = json.dumps(
        {"id": delivery.id, "type": delivery.type, "data": json.loads(delivery.data)}
    ).encode()
    signature = hmac.new(delivery.endpoint.secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Idempotency-Key": delivery.id, "X-Webhook-Signature": signature}


@dataclass
class Answer:
    """What the receiver answers one POST (a `PostResult`)."""

    status_code: int | None
    error: str | None = None
    retry_after_s: float | None = None
    latency_ms: int = 12


OK = Answer(200)
SERVER_ERROR = Answer(500)
TIMEOUT = Answer(None, "timeout", latency_ms=10_000)


@dataclass(frozen=True, eq=False)
class Post:
    """One POST the notifier made, and when (fake time)."""

    url: str
    id: str
    type: str
    data: dict[str, Any]
    headers: Mapping[str, str]
    at: float

    @property
    def message(self) -> tuple[str, str]:
        """The message an event is about, and the status it tells."""
        message = self.data["message"]
        return message["id"], message["status"]


@dataclass
class Receiver:
    """Customers' receivers, scripted: `answer` decides each POST; every POST is kept."""

    clock: FakeClock
    answer: Callable[[Post], Answer] = lambda post: OK
    posts: list[Post] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)
    answered: dict[Post, Answer] = field(default_factory=dict)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Answer:
        event = json.loads(body)
        post = Post(url, event["id"], event["type"], event["data"], headers, self.clock.now())
        self.posts.append(post)
        self.in_flight[url] += 1
        self.most_in_flight[url] = max(self.most_in_flight[url], self.in_flight[url])
        try:
            for _ in range(5):  # a round trip: other POSTs run meanwhile
                await asyncio.sleep(0)
            answer = self.answer(post)
            self.answered[post] = answer
            return answer
        finally:
            self.in_flight[url] -= 1

    async def close(self) -> None:
        return None

    def delivered(self) -> list[Post]:
        """The POSTs answered 2xx, in order."""
        return [p for p in self.posts if (self.answered[p].status_code or 0) // 100 == 2]


async def gateway(
    clock: FakeClock | None = None, *, endpoints: int = 1
) -> tuple[Memory, PhoneNumber, list[WebhookEndpoint]]:
    """A number with `endpoints` webhook endpoints subscribed to every event."""
    memory = Memory(clock=clock or FakeClock())
    number = await memory.number()
    now_ms = int(memory.clock.now() * 1000)
    added = []
    for n in range(1, endpoints + 1):
        endpoint = WebhookEndpoint(
            id=f"whe_{n}",
            project_id=number.project_id,
            phone_number_id=number.phone_number_id,
            url=f"{URL}/{n}?token={QUERY_TOKEN}",
            kind="kapso",
            events=EVENT_TYPES,
            active=True,
            secret=SECRET,
            created_at=now_ms + n,
            updated_at=now_ms + n,
        )
        await memory.notifications.add_endpoint(endpoint)
        added.append(endpoint)
    return memory, number, added


async def sent_messages(memory: Memory, number: PhoneNumber, count: int) -> list[str]:
    """Ids of `count` accepted messages Meta accepted as wamid.meta<i> (no event yet)."""
    acceptor = Acceptor(memory.store, memory.clock)
    ids = [(await acceptor.accept(number, SEND)).message_id for _ in range(count)]
    claimed = await memory.queue.claim(
        number.phone_number_id, "w", memory.clock.now(), lease_s=60, horizon_s=60, limit=count
    )
    for message in claimed:
        wamid = f"wamid.meta{ids.index(message.id)}"
        await memory.queue.record(Outcome(message.seq, "w", "forwarded", 0, wamid=wamid))
    return ids


async def meta_says(memory: Memory, *statuses: tuple[int, Status]) -> None:
    """Meta's statuses of messages (by index) arrive, one webhook each: deliveries drafted."""
    for index, status in statuses:
        now_ms = int(memory.clock.now() * 1000)
        row = StatusRow(f"wamid.meta{index}", status, now_ms, None, None, None, None, None)
        await memory.statuses.ingest([row], [], [], now_ms)


def notifier(
    memory: Memory, receiver: Receiver, *, owner: str = "notifier-1", **settings: Any
) -> Notifier:
    return Notifier(
        memory.notifications,
        receiver,
        memory.clock,
        render,
        NotifySettings(**settings),
        owner=owner,
        rng=NoJitter(),
    )


async def round_of(*notifiers: Notifier) -> None:
    """One claim of each notifier, side by side, and every attempt recorded."""
    await asyncio.gather(*(n.run_once() for n in notifiers))
    await asyncio.gather(*(n.drain() for n in notifiers))


async def states(memory: Memory, endpoint: WebhookEndpoint) -> Counter[str]:
    deliveries = await memory.notifications.list_deliveries(endpoint.id, limit=1000)
    return Counter(d.state for d in deliveries)


# ---- one delivery: delivered, retried, dead, replayed ---------------------------------


async def test_a_2xx_delivers_the_event_once_with_the_headers_rendered_for_it() -> None:
    memory, number, [endpoint] = await gateway()
    [message_id] = await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    receiver = Receiver(memory.clock)
    worker = notifier(memory, receiver)
    await round_of(worker)
    await round_of(worker)
    [post] = receiver.posts
    assert (post.url, post.type, post.message) == (
        endpoint.url,
        "whatsapp.message.sent",
        (message_id, "sent"),
    )
    assert post.headers["X-Idempotency-Key"] == post.id
    assert len(post.headers["X-Webhook-Signature"]) == 64
    [delivery] = await memory.notifications.list_deliveries(endpoint.id)
    assert (delivery.id, delivery.state, delivery.attempts) == (post.id, "delivered", 1)


@pytest.mark.parametrize("failure", [SERVER_ERROR, TIMEOUT], ids=["500", "timeout"])
async def test_a_failed_attempt_is_retried_with_the_same_id_after_10_then_40_seconds(
    failure: Answer,
) -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    receiver = Receiver(memory.clock, lambda post: failure if len(receiver.posts) < 3 else OK)
    worker = notifier(memory, receiver)
    for step in (0, 9.9, 0.1, 39.9, 0.1):
        memory.clock.at += step
        await round_of(worker)
    assert [p.at - START for p in receiver.posts] == pytest.approx([0, 10, 50])
    assert len({p.id for p in receiver.posts}) == 1
    attempts = await memory.notifications.list_attempts(endpoint.id)
    assert [a.status_code for a in reversed(attempts)] == [failure.status_code] * 2 + [200]
    assert await states(memory, endpoint) == {"delivered": 1}


@pytest.mark.parametrize(
    ("retry_after_s", "retried_after_s"),
    [(15, 15), (3600, 20), (1, 10)],
    ids=["honoured", "at-most-twice-the-schedule", "never-sooner-than-the-schedule"],
)
async def test_retry_after_is_honoured_within_one_to_two_times_the_scheduled_delay(
    retry_after_s: float, retried_after_s: float
) -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    busy = Answer(503, retry_after_s=retry_after_s)
    receiver = Receiver(memory.clock, lambda post: busy if len(receiver.posts) == 1 else OK)
    worker = notifier(memory, receiver)
    await round_of(worker)
    [delivery] = await memory.notifications.list_deliveries(endpoint.id)
    assert delivery.next_attempt_at == int((START + retried_after_s) * 1000)


async def test_a_redirect_is_a_failure_not_followed() -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    receiver = Receiver(memory.clock, lambda post: Answer(302))
    await round_of(notifier(memory, receiver))
    [delivery] = await memory.notifications.list_deliveries(endpoint.id)
    assert (delivery.state, delivery.last_status_code) == ("pending", 302)
    assert delivery.last_error == "redirect not followed"
    assert len(receiver.posts) == 1


async def test_after_the_whole_schedule_a_delivery_is_dead_and_a_replay_delivers_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    up = False
    receiver = Receiver(memory.clock, lambda post: OK if up else SERVER_ERROR)
    # Never paused: the schedule (27.6 h) outlasts the default pause (24 h).
    worker = notifier(memory, receiver, pause_after_s=0)
    with caplog.at_level(logging.INFO, logger="wagate.notify"):
        for delay in (0, *RETRY_SCHEDULE_S):
            memory.clock.at += delay
            await round_of(worker)
    assert len(receiver.posts) == len(RETRY_SCHEDULE_S) + 1
    [dead] = await memory.notifications.list_deliveries(endpoint.id, state="dead")
    assert dead.attempts == len(RETRY_SCHEDULE_S) + 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "dead-lettered" in warning.getMessage()
    assert dead.id in warning.getMessage()
    memory.clock.at += 86400
    await round_of(worker)
    assert len(receiver.posts) == len(RETRY_SCHEDULE_S) + 1  # dead stays dead
    up = True
    assert await memory.notifications.replay(endpoint.id, None, int(memory.clock.now() * 1000))
    await round_of(worker)
    assert receiver.posts[-1].id == dead.id
    assert await states(memory, endpoint) == {"delivered": 1}


async def test_a_test_event_carries_the_documented_data() -> None:
    memory, number, [endpoint] = await gateway()
    now_ms = int(memory.clock.now() * 1000)
    data = webhook_test_data(number.waba_id, number.phone_number_id)
    assert await memory.notifications.add_test_delivery(endpoint.id, "evt_test", data, now_ms)
    receiver = Receiver(memory.clock)
    await round_of(notifier(memory, receiver))
    [post] = receiver.posts
    assert (post.id, post.type) == ("evt_test", "whatsapp.webhook.test")
    assert post.data == {
        "waba_id": number.waba_id,
        "phone_number_id": number.phone_number_id,
        "test": True,
        "message": TEST_MESSAGE,
    }


# ---- order, and a receiver that is down ----------------------------------------------


async def test_a_receiver_down_for_hours_gets_every_event_afterwards_in_order_per_message() -> None:
    memory, number, [endpoint] = await gateway()
    ids = await sent_messages(memory, number, 2)
    await meta_says(memory, (0, "sent"), (1, "sent"), (0, "delivered"))
    await meta_says(memory, (1, "delivered"), (0, "read"), (1, "read"))
    up_at = START + 2 * 3600
    receiver = Receiver(memory.clock, lambda post: OK if post.at >= up_at else SERVER_ERROR)
    worker = notifier(memory, receiver)
    while memory.clock.now() < START + 5 * 3600:
        await round_of(worker)
        memory.clock.at += 30
    assert await states(memory, endpoint) == {"delivered": 6}
    for message_id in ids:
        told = [p.message[1] for p in receiver.posts if p.message[0] == message_id]
        # Every attempt, failed ones included, in order: `delivered` was never posted
        # before `sent` got through, nor `read` before `delivered`.
        assert told == sorted(told, key=RANK.__getitem__)
        delivered = [p.message[1] for p in receiver.delivered() if p.message[0] == message_id]
        assert delivered == ["sent", "delivered", "read"]


async def test_a_message_whose_events_fail_does_not_hold_up_another_messages_events() -> None:
    memory, number, _ = await gateway()
    stuck, flowing = await sent_messages(memory, number, 2)
    await meta_says(memory, (0, "sent"), (1, "sent"), (0, "delivered"))
    await meta_says(memory, (1, "delivered"), (0, "read"), (1, "read"))
    receiver = Receiver(memory.clock, lambda post: SERVER_ERROR if post.message[0] == stuck else OK)
    worker = notifier(memory, receiver)
    for _ in range(4):
        await round_of(worker)
    assert [p.message for p in receiver.delivered()] == [
        (flowing, "sent"),
        (flowing, "delivered"),
        (flowing, "read"),
    ]
    # The stuck message's `sent` waits for its retry; its later events wait behind it.
    assert [p.message for p in receiver.posts if p.message[0] == stuck] == [(stuck, "sent")]


async def test_no_more_than_per_endpoint_posts_are_in_flight_to_one_endpoint() -> None:
    clock = ManualClock()
    memory, number, [first, second] = await gateway(clock, endpoints=2)
    await sent_messages(memory, number, 20)
    await meta_says(memory, *((i, "sent") for i in range(20)))
    receiver = Receiver(clock)
    # Polls and housekeeping a long way off: only the end of attempts moves the backlog.
    worker = notifier(memory, receiver, per_endpoint=3, poll_s=600, housekeeping_s=600)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(20):
            await settle()
        assert receiver.most_in_flight == {first.url: 3, second.url: 3}
        assert await states(memory, first) == await states(memory, second) == {"delivered": 20}
        assert clock.now() == START
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


class CountingClaims(MemoryNotifications):
    """The memory outbox, counting the settles that leased something."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory.database)
        self.claims = 0

    async def settle(
        self,
        records: Sequence[AttemptRecord],
        owner: str,
        now_ms: int,
        *,
        limit: int,
        per_endpoint: int,
        lease_ms: int,
    ) -> list[ClaimedDelivery]:
        claimed = await super().settle(
            records, owner, now_ms, limit=limit, per_endpoint=per_endpoint, lease_ms=lease_ms
        )
        self.claims += bool(claimed)
        return claimed


async def test_posts_to_an_endpoint_go_on_from_leased_deliveries_without_a_claim_between() -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 8)
    await meta_says(memory, *((i, "sent") for i in range(8)))
    outbox = CountingClaims(memory)
    receiver = Receiver(memory.clock)
    settings = NotifySettings(per_endpoint=2, window_factor=4)
    worker = Notifier(outbox, receiver, memory.clock, render, settings, owner="n", rng=NoJitter())
    assert await worker.run_once() == 8  # a window of 2 x 4 leased at once
    await worker.drain()
    assert receiver.most_in_flight[endpoint.url] == 2
    assert len({p.id for p in receiver.posts}) == len(receiver.posts) == 8
    assert outbox.claims == 1
    assert await states(memory, endpoint) == {"delivered": 8}


@dataclass
class SlowReceiver(Receiver):
    """A receiver that takes `seconds` of the fake clock to answer each POST."""

    seconds: float = 20.0

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Answer:
        await self.clock.sleep(self.seconds)
        return await super().post(url, body, headers, timeout_s)


async def test_a_delivery_that_waited_past_its_lease_is_left_to_the_reaper_not_posted() -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 4)
    await meta_says(memory, *((i, "sent") for i in range(4)))
    receiver = SlowReceiver(memory.clock)
    # Leases of 60 s, attempts of up to 10 s: a delivery is posted at most 45 s after its
    # claim. One POST at a time, 20 s each: the fourth would start at 60 s.
    worker = notifier(memory, receiver, per_endpoint=1, window_factor=4, housekeeping_s=600)
    await round_of(worker)
    assert (len(receiver.posts), worker.expired) == (3, 1)
    assert await states(memory, endpoint) == {"delivered": 3, "delivering": 1}
    memory.clock.at += 1  # the lease has ended: reaped, claimed again, posted once
    assert await memory.notifications.reap_deliveries(int(memory.clock.now() * 1000)) == 1
    await round_of(worker)
    assert len({p.id for p in receiver.posts}) == len(receiver.posts) == 4
    assert await states(memory, endpoint) == {"delivered": 4}


async def test_a_notifier_that_stops_leaves_what_it_leased_and_had_not_posted_to_the_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    memory, number, [endpoint] = await gateway(clock)
    await sent_messages(memory, number, 4)
    await meta_says(memory, *((i, "sent") for i in range(4)))
    receiver = SlowReceiver(clock)
    worker = notifier(
        memory, receiver, per_endpoint=1, window_factor=4, poll_s=600, housekeeping_s=600
    )
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="wagate.notify"):
        task = asyncio.create_task(worker.run(stop))
        await settle()
        assert len(receiver.posts) == 0  # the first POST is out, answering in 20 s
        stop.set()
        await settle()
        await clock.advance(20.5)  # it ends, and is recorded: the notifier stops
        await asyncio.wait_for(task, timeout=5)
    assert len(receiver.posts) == 1
    assert await states(memory, endpoint) == {"delivered": 1, "delivering": 3}
    assert any("3 leased webhook deliveries not posted" in r.getMessage() for r in caplog.records)


# ---- pausing -------------------------------------------------------------------------


async def test_an_endpoint_failing_past_pause_after_is_paused_until_resumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 2)
    await meta_says(memory, (0, "sent"))
    up = False
    receiver = Receiver(memory.clock, lambda post: OK if up else SERVER_ERROR)
    worker = notifier(memory, receiver, pause_after_s=3600)
    with caplog.at_level(logging.INFO, logger="wagate.notify"):
        # Attempts at 0, 10, 50, 140, 440, 2240 s: not yet an hour of failures.
        for delay in (0, *RETRY_SCHEDULE_S[:5]):
            memory.clock.at += delay
            await round_of(worker)
        assert await memory.notifications.get_endpoint(endpoint.id) == dataclasses.replace(
            endpoint, failing_since=int(START * 1000)
        )
        memory.clock.at += RETRY_SCHEDULE_S[5]  # the attempt at 9440 s fails too: paused
        await round_of(worker)
    paused = await memory.notifications.get_endpoint(endpoint.id)
    assert paused is not None
    assert paused.paused_at == int((START + 9440) * 1000)
    [warning] = [r.getMessage() for r in caplog.records if "PAUSED" in r.getMessage()]
    assert endpoint.id in warning
    assert f"{URL}/1" in warning
    posts = len(receiver.posts)
    await meta_says(memory, (1, "sent"))  # a new event waits too
    for _ in range(10):
        memory.clock.at += 3600
        await round_of(worker)
    assert len(receiver.posts) == posts
    up = True
    resumed = dataclasses.replace(
        paused, paused_at=None, failing_since=None, updated_at=int(memory.clock.now() * 1000)
    )
    assert await memory.notifications.update_endpoint(resumed)
    await round_of(worker)
    assert await states(memory, endpoint) == {"delivered": 2}


@pytest.mark.parametrize(
    ("other", "paused"), [(OK, False), (SERVER_ERROR, True)], ids=["success-beside", "all-fail"]
)
async def test_a_success_beside_a_failure_restarts_the_count_instead_of_pausing(
    other: Answer, paused: bool
) -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 2)
    failing = dataclasses.replace(endpoint, failing_since=int(START * 1000))
    await memory.notifications.update_endpoint(failing)
    memory.clock.at += 2 * 3600  # failing for two hours, by what the store says
    await meta_says(memory, (0, "sent"), (1, "sent"))
    receiver = Receiver(
        memory.clock,
        lambda post: other if post.data["message"]["wamid"] == "wamid.meta0" else SERVER_ERROR,
    )
    # Both claimed before either is recorded: the failure's claim still says "since START".
    await round_of(notifier(memory, receiver, pause_after_s=3600))
    stored = await memory.notifications.get_endpoint(endpoint.id)
    assert stored is not None
    assert (stored.paused_at is not None) is paused


async def test_a_resume_while_an_attempt_is_in_flight_is_not_overruled_by_its_claim() -> None:
    # Failing for two hours by the store; an attempt is claimed with that `failing_since`,
    # and while it is in flight the customer resumes the endpoint (PATCH: the failure
    # count starts again). The attempt fails: one failure since the resume, no pause.
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 1)
    failing = dataclasses.replace(endpoint, failing_since=int(START * 1000))
    await memory.notifications.update_endpoint(failing)
    memory.clock.at += 2 * 3600
    await meta_says(memory, (0, "sent"))

    def resumed_meanwhile(post: Post) -> Answer:
        current = memory.database.endpoints[endpoint.id]
        memory.database.endpoints[endpoint.id] = dataclasses.replace(
            current, paused_at=None, failing_since=None
        )
        return SERVER_ERROR

    await round_of(notifier(memory, Receiver(memory.clock, resumed_meanwhile), pause_after_s=3600))
    stored = await memory.notifications.get_endpoint(endpoint.id)
    assert stored is not None
    assert stored.paused_at is None
    assert stored.failing_since == int(memory.clock.now() * 1000)


async def test_logs_say_what_failed_and_what_comes_next_but_never_a_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory, number, _ = await gateway()
    await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    receiver = Receiver(memory.clock, lambda post: SERVER_ERROR)
    worker = notifier(memory, receiver, pause_after_s=60)
    with caplog.at_level(logging.DEBUG, logger="wagate.notify"):
        for delay in (0, *RETRY_SCHEDULE_S[:3]):
            memory.clock.at += delay
            await round_of(worker)
    [first, *_] = [r for r in caplog.records if r.levelno == logging.INFO]
    assert "HTTP 500" in first.getMessage()
    assert "retry in 10 s" in first.getMessage()
    assert any("PAUSED" in r.getMessage() for r in caplog.records)
    signature = receiver.posts[0].headers["X-Webhook-Signature"]
    for said in (r.getMessage() for r in caplog.records):
        assert SECRET not in said
        assert QUERY_TOKEN not in said
        assert signature not in said


# ---- several notifiers, leases and records -------------------------------------------


async def test_two_notifiers_on_one_database_never_post_the_same_delivery_twice() -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 30)
    await meta_says(memory, *((i, "sent") for i in range(30)))
    await meta_says(memory, *((i, "delivered") for i in range(30)))
    posts: list[Post] = []
    first, second = Receiver(memory.clock, posts=posts), Receiver(memory.clock, posts=posts)
    one = notifier(memory, first, owner="notifier-1", per_endpoint=50, batch=10)
    two = notifier(memory, second, owner="notifier-2", per_endpoint=50, batch=10)
    for _ in range(5):
        await round_of(one, two)
    assert await states(memory, endpoint) == {"delivered": 60}
    assert Counter(p.id for p in posts).most_common(1)[0][1] == 1
    assert one.delivered
    assert two.delivered


async def test_a_delivery_leased_by_a_notifier_that_died_is_posted_after_its_lease() -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    now_ms = int(memory.clock.now() * 1000)
    [lost] = await memory.notifications.claim_deliveries(
        "died", now_ms, limit=10, per_endpoint=8, lease_ms=60_000
    )
    receiver = Receiver(memory.clock)
    worker = notifier(memory, receiver)
    await round_of(worker)
    assert receiver.posts == []
    memory.clock.at += 61
    await round_of(worker)
    assert [p.id for p in receiver.posts] == [lost.id]
    assert await states(memory, endpoint) == {"delivered": 1}


class FlakyRecords(MemoryNotifications):
    """The memory outbox whose database is unavailable for the first `failures` records."""

    def __init__(self, memory: Memory, failures: int) -> None:
        super().__init__(memory.database)
        self.failures = failures
        self.calls = 0

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("the database is down")
        await super().record_attempts(records)


async def test_an_attempt_that_cannot_be_recorded_is_recorded_again_not_posted_again() -> None:
    memory, number, [endpoint] = await gateway()
    await sent_messages(memory, number, 1)
    await meta_says(memory, (0, "sent"))
    outbox = FlakyRecords(memory, failures=3)
    receiver = Receiver(memory.clock)
    worker = Notifier(outbox, receiver, memory.clock, render, owner="n", rng=NoJitter())
    await round_of(worker)
    assert len(receiver.posts) == 1
    assert outbox.calls == 4
    # Backoff between the records: 0.5 + 1 + 2 s after the POST.
    assert memory.clock.now() - receiver.posts[0].at == pytest.approx(3.5)
    assert await states(memory, endpoint) == {"delivered": 1}


# ---- waking --------------------------------------------------------------------------


async def test_a_ring_wakes_an_idle_notifier_and_a_retry_wakes_it_at_its_due_time() -> None:
    clock = ManualClock()
    memory, number, [endpoint] = await gateway(clock)
    await sent_messages(memory, number, 1)
    receiver = Receiver(clock, lambda post: SERVER_ERROR if len(receiver.posts) == 1 else OK)
    worker = notifier(memory, receiver, poll_s=600, housekeeping_s=600)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await settle()
        await meta_says(memory, (0, "sent"))
        worker.bell.ring()  # as the ingest path does after its commit
        await settle()
        assert [p.at for p in receiver.posts] == [START]
        await clock.advance(9.75)
        assert len(receiver.posts) == 1
        await clock.advance(0.5)
        assert [p.at - START for p in receiver.posts] == [0, 10]
        assert await states(memory, endpoint) == {"delivered": 1}
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
