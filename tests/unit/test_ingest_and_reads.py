"""Statuses in, messages out: ingest and the read use cases on the in-memory store."""

from __future__ import annotations

import json

import pytest

from tests.unit.memory import START, Memory
from wagate.core.accept import Acceptor
from wagate.core.ingest import Ingestor
from wagate.core.reads import Reader
from wagate.domain.delivery import Outcome
from wagate.domain.errors import GraphError
from wagate.domain.model import MessageQuery, PhoneNumber
from wagate.domain.notifications import EVENT_TYPES, WebhookEndpoint
from wagate.domain.webhooks import signature_of

SECRET = "meta-app-secret"
SANDBOX_SECRET = "installation-secret"
SEND = json.dumps(
    {
        "messaging_product": "whatsapp",
        "to": "447700900123",
        "type": "template",
        "template": {"name": "promo_template", "language": {"code": "en_US"}},
    }
).encode()


def webhook(*statuses: tuple[str, str, int], clicks: tuple[str, ...] = ()) -> bytes:
    """Meta's webhook body: (wamid, status, unix seconds) updates and link clicks by wamid."""
    value = {
        "messaging_product": "whatsapp",
        "statuses": [
            {"id": wamid, "status": status, "timestamp": str(at), "recipient_id": "447700900123"}
            for wamid, status, at in statuses
        ],
        "user_actions": [
            {
                "action_type": "marketing_messages_link_click",
                "timestamp": str(int(START)),
                "marketing_messages_link_click_data": {"tracking_token": wamid, "click_id": "c1"},
            }
            for wamid in clicks
        ],
    }
    entry = {"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


async def sent_messages(memory: Memory, number: PhoneNumber, count: int) -> list[str]:
    """Ids of `count` accepted messages Meta accepted as wamid.meta<i>."""
    acceptor = Acceptor(memory.store, memory.clock)
    ids = []
    for _ in range(count):
        ids.append((await acceptor.accept(number, SEND)).message_id)
        memory.clock.at += 0.001
    claimed = await memory.queue.claim(
        number.phone_number_id, "w", memory.clock.now(), lease_s=60, horizon_s=10, limit=count
    )
    for i, message in enumerate(claimed):
        wamid = f"wamid.meta{i}"
        await memory.queue.record(Outcome(message.seq, "w", "forwarded", 0, wamid=wamid))
    return ids


def ingestor(memory: Memory) -> Ingestor:
    return Ingestor(memory.statuses, memory.clock, SECRET, SANDBOX_SECRET)


async def test_a_signed_webhook_moves_the_message_and_a_retry_of_it_changes_nothing() -> None:
    memory = Memory()
    number = await memory.number()
    [message_id] = await sent_messages(memory, number, 1)
    body = webhook(("wamid.meta0", "sent", 1), ("wamid.meta0", "delivered", 2))
    result = await ingestor(memory).receive(body, signature_of(body, SECRET))
    assert (result.stored, result.moved) == (2, 1)
    again = await ingestor(memory).receive(body, signature_of(body, SECRET))
    assert (again.stored, again.duplicates, again.moved) == (0, 2, 0)
    read = await Reader(memory.store, memory.statuses).message(number.phone_number_id, message_id)
    assert read.message.status == "delivered"
    assert [entry.status for entry in read.timeline] == ["sent", "delivered"]


async def test_a_click_retried_by_meta_is_stored_once() -> None:
    memory = Memory()
    number = await memory.number()
    await sent_messages(memory, number, 1)
    body = webhook(clicks=("wamid.meta0",))
    for _ in range(2):
        await ingestor(memory).receive(body, signature_of(body, SECRET))
    assert len(await memory.statuses.events("wamid.meta0")) == 1


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64])
async def test_an_unsigned_or_wrongly_signed_webhook_stores_nothing(signature: str | None) -> None:
    memory = Memory()
    body = webhook(("wamid.any", "sent", 1))
    with pytest.raises(GraphError) as refused:
        await ingestor(memory).receive(body, signature)
    assert refused.value.http_status == 401
    assert await memory.statuses.timeline(["wamid.any"]) == {}


async def test_a_message_of_another_number_or_with_a_nul_is_not_found() -> None:
    memory = Memory()
    number = await memory.number()
    [message_id] = await sent_messages(memory, number, 1)
    reader = Reader(memory.store, memory.statuses)
    for phone_number_id, wanted in (("999", message_id), (number.phone_number_id, "wamid.\x00")):
        with pytest.raises(GraphError) as refused:
            await reader.message(phone_number_id, wanted)
        assert (refused.value.code, refused.value.subcode) == (100, 33)


async def test_pages_go_newest_first_and_say_whether_more_lie_beyond() -> None:
    memory = Memory()
    number = await memory.number()
    ids = await sent_messages(memory, number, 5)
    reader = Reader(memory.store, memory.statuses)
    phone = number.phone_number_id
    first = await reader.page(MessageQuery(phone, limit=2))
    assert ([r.message.id for r in first.items], first.has_more) == ([ids[4], ids[3]], True)
    last_seq = first.items[-1].message.seq
    rest = await reader.page(MessageQuery(phone, limit=3, after_seq=last_seq))
    assert ([r.message.id for r in rest.items], rest.has_more) == ([ids[2], ids[1], ids[0]], False)
    back = await reader.page(MessageQuery(phone, limit=2, before_seq=rest.items[0].message.seq))
    # Paging back towards newer messages still lists newest first.
    assert ([r.message.id for r in back.items], back.has_more) == ([ids[4], ids[3]], False)


async def test_each_message_on_a_page_carries_its_own_timeline() -> None:
    memory = Memory()
    number = await memory.number()
    await sent_messages(memory, number, 2)
    body = webhook(("wamid.meta0", "sent", 1), ("wamid.meta1", "read", 2))
    await ingestor(memory).receive(body, signature_of(body, SECRET))
    page = await Reader(memory.store, memory.statuses).page(MessageQuery(number.phone_number_id))
    timelines = {r.message.upstream_wamid: [e.status for e in r.timeline] for r in page.items}
    assert timelines == {"wamid.meta0": ["sent"], "wamid.meta1": ["read"]}


class Bell:
    """A NotifySignal that counts its rings."""

    def __init__(self) -> None:
        self.rings = 0

    def ring(self) -> None:
        self.rings += 1


async def test_the_notifier_is_woken_only_when_a_status_wrote_a_customer_webhook() -> None:
    # Without an endpoint a move writes no delivery: waking the notifier would only
    # make it look (a read each status POST) for nothing.
    memory = Memory()
    number = await memory.number()
    await sent_messages(memory, number, 2)
    bell = Bell()
    ingest = Ingestor(memory.statuses, memory.clock, SECRET, SANDBOX_SECRET, notify=bell)
    body = webhook(("wamid.meta0", "sent", 1))
    result = await ingest.receive(body, signature_of(body, SECRET))
    assert (result.moved, result.notified, bell.rings) == (1, 0, 0)

    now_ms = int(memory.clock.now() * 1000)
    await memory.notifications.add_endpoint(
        WebhookEndpoint(
            id="whe_1",
            project_id=number.project_id,
            phone_number_id=number.phone_number_id,
            url="https://example.com/hook",
            kind="kapso",
            events=EVENT_TYPES,
            active=True,
            secret="endpoint-secret",
            created_at=now_ms,
            updated_at=now_ms,
        )
    )
    body = webhook(("wamid.meta1", "sent", 1), ("wamid.meta1", "delivered", 2))
    result = await ingest.receive(body, signature_of(body, SECRET))
    assert (result.moved, result.notified, bell.rings) == (1, 2, 1)
