"""Accepting a send on the in-memory store: what is committed, and idempotent retries."""

from __future__ import annotations

import json
import os
import re

import msgspec
import pytest

from tests.unit.memory import START, Memory
from wagate.core.accept import Acceptor, new_message_id
from wagate.domain.errors import GraphError
from wagate.domain.model import MessageQuery, PhoneNumber

BODY = {
    "messaging_product": "whatsapp",
    "to": "+44 7700 900123",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}


def body(**changes: object) -> bytes:
    """A send body, with some fields changed."""
    return json.dumps({**BODY, **changes}).encode()


async def setup() -> tuple[Memory, Acceptor, PhoneNumber]:
    memory = Memory()
    number = await memory.number()
    acceptor = Acceptor(memory.store, memory.clock, ttl_seconds=3600, idempotency_window_seconds=60)
    return memory, acceptor, number


async def stored(memory: Memory, number: PhoneNumber) -> int:
    return len(await memory.store.list_messages(MessageQuery(number.phone_number_id, limit=100)))


async def test_an_accepted_send_is_stored_queued_with_its_ttl_and_answered_like_meta() -> None:
    memory, acceptor, number = await setup()
    accepted = await acceptor.accept(number, body())
    answer = msgspec.json.decode(accepted.body)
    assert answer["contacts"] == [{"input": "+44 7700 900123", "wa_id": "447700900123"}]
    assert answer["messages"] == [{"id": accepted.message_id, "message_status": "accepted"}]
    message = await memory.store.get_message(number.phone_number_id, accepted.message_id)
    assert message is not None
    assert (message.status, message.recipient, message.created_at) == (
        "pending",
        "447700900123",
        int(START * 1000),
    )
    [claimed] = await memory.queue.claim(
        number.phone_number_id, "w", START, lease_s=1, horizon_s=1, limit=5
    )
    assert claimed.expires_at == int(START * 1000) + 3_600_000


async def test_a_retry_with_the_same_key_and_body_replays_the_first_answer() -> None:
    memory, acceptor, number = await setup()
    first = await acceptor.accept(number, body(), "key-1")
    again = await acceptor.accept(number, body(), "key-1")
    assert (again.message_id, again.body, again.replayed) == (first.message_id, first.body, True)
    assert await stored(memory, number) == 1


async def test_the_same_key_with_another_body_is_refused_with_422() -> None:
    _, acceptor, number = await setup()
    await acceptor.accept(number, body(), "key-1")
    with pytest.raises(GraphError) as refused:
        await acceptor.accept(number, body(to="447700900999"), "key-1")
    assert (refused.value.code, refused.value.http_status) == (100, 422)


async def test_a_key_past_its_window_starts_a_new_message() -> None:
    memory, acceptor, number = await setup()
    first = await acceptor.accept(number, body(), "key-1")
    memory.clock.at += 61
    second = await acceptor.accept(number, body(), "key-1")
    assert (second.replayed, second.message_id != first.message_id) == (False, True)
    assert await stored(memory, number) == 2


async def test_a_key_another_process_commits_first_is_replayed_not_stored_twice() -> None:
    memory, acceptor, number = await setup()
    winner = await Acceptor(memory.store, memory.clock).accept(number, body(), "key-1")
    real_find = memory.store.find_by_idempotency_key
    calls = 0

    async def late_find(project_id: str, key: str) -> object:
        # The first look finds nothing: the other process had not committed yet.
        nonlocal calls
        calls += 1
        return None if calls == 1 else await real_find(project_id, key)

    memory.store.find_by_idempotency_key = late_find  # type: ignore[method-assign,assignment]
    accepted = await acceptor.accept(number, body(), "key-1")
    assert (accepted.message_id, accepted.replayed) == (winner.message_id, True)
    assert await stored(memory, number) == 1


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "tab\t"])
async def test_a_malformed_idempotency_key_is_refused_before_anything_is_stored(key: str) -> None:
    memory, acceptor, number = await setup()
    with pytest.raises(GraphError) as refused:
        await acceptor.accept(number, body(), key)
    assert refused.value.code == 100
    assert await stored(memory, number) == 0


async def test_a_send_racing_the_removal_of_its_number_is_refused_as_unknown_and_not_stored() -> (
    None
):
    memory, acceptor, number = await setup()
    # The door found the number; `wagate numbers remove` commits before the send does.
    await memory.store.remove_phone_number(number.phone_number_id, force=True)
    with pytest.raises(GraphError) as refused:
        await acceptor.accept(number, body())
    assert (refused.value.code, refused.value.subcode) == (100, 33)
    assert memory.database.messages == {}


def test_message_ids_are_unique_and_shaped_like_meta_across_draws_of_random_bytes() -> None:
    ids = [new_message_id() for _ in range(3 * 256 + 7)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"wamid\.[A-Za-z0-9_-]{32}", i) for i in ids)


def test_ids_of_one_moment_share_their_start_and_differ_after_it() -> None:
    at = [new_message_id(1_764_979_200_000) for _ in range(50)]
    later = new_message_id(1_764_979_200_000 + 3_600_000)
    # 6 bytes of time are the first 8 base64 characters after `wamid.`.
    assert {i[:14] for i in at} == {at[0][:14]}
    assert later[:14] != at[0][:14]
    assert len({i[14:] for i in at}) == 50


def test_a_forked_process_does_not_hand_out_its_parents_drawn_ids() -> None:
    new_message_id()  # the parent now holds bytes drawn ahead
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        os.write(write_end, "\n".join(new_message_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = [new_message_id() for _ in range(5)]
    assert len(child) == 5
    assert not set(child) & set(parent)
