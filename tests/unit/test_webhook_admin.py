"""Administering customer webhooks on the in-memory store: what an operator or a project may
set, what they are told to correct, what they see of a secret, and what they cannot reach."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.unit.memory import Memory
from wagate.adapters.memory import MemoryNotifications
from wagate.core import admin
from wagate.core import webhook_admin as hooks
from wagate.domain.notifications import (
    EVENT_TYPES,
    ROTATION_GRACE_S,
    TEST_EVENT,
    AttemptRecord,
)
from wagate.domain.notify_formats import mask_secret

URL = "https://hooks.example.com/wagate"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class World:
    """Memory with the webhook store, a project and its number."""

    def __init__(self) -> None:
        self.memory = Memory()
        self.hooks = MemoryNotifications(self.memory.database)

    async def setup(self, phone_number_id: str = "106540352242922") -> str:
        number = await self.memory.number(phone_number_id=phone_number_id)
        return number.project_id

    async def create(self, **kwargs: Any) -> hooks.ShownWebhook:
        kwargs.setdefault("phone_number_id", "106540352242922")
        kwargs.setdefault("url", URL)
        return await hooks.create_webhook(
            self.memory.store, self.hooks, self.memory.clock, **kwargs
        )

    async def dead_letter(self, webhook_id: str) -> str:
        """Queue a test event and fail it for good; its delivery id."""
        delivery_id = await hooks.send_test(
            self.memory.store, self.hooks, self.hooks, self.memory.clock, webhook_id
        )
        now = int(self.memory.clock.now() * 1000)
        claimed = await self.hooks.claim_deliveries(
            "unit", now, limit=10, per_endpoint=10, lease_ms=10_000
        )
        [delivery] = [c for c in claimed if c.id == delivery_id]
        await self.hooks.record_attempts(
            [AttemptRecord(delivery.seq, webhook_id, "unit", now, 12, 500, "HTTP 500", "dead")]
        )
        return delivery_id


@pytest.fixture
async def world() -> World:
    created = World()
    await created.setup()
    return created


async def test_a_new_webhook_gets_kapsos_defaults_and_its_secret_is_shown_once(
    world: World,
) -> None:
    created = await world.create()
    endpoint = created.endpoint
    assert endpoint.kind == "kapso"
    assert endpoint.events == (
        "whatsapp.message.sent",
        "whatsapp.message.delivered",
        "whatsapp.message.read",
        "whatsapp.message.failed",
    )
    assert endpoint.active is True
    assert endpoint.id.startswith("whk_")
    assert created.secret_is_new
    assert created.secret_key == endpoint.secret
    assert len(endpoint.secret) >= 32
    shown = await hooks.show_webhook(world.hooks, endpoint.id)
    [listed] = await hooks.list_webhooks(world.memory.store, world.hooks, "106540352242922")
    for later in (shown, listed):
        assert later.secret_key == mask_secret(endpoint.secret)
        assert endpoint.secret not in later.secret_key
        assert not later.secret_is_new


async def test_a_given_secret_is_kept_and_a_standard_one_is_generated_as_whsec(
    world: World,
) -> None:
    given = await world.create(secret_key="a-kapso-secret-of-mine")
    assert given.endpoint.secret == "a-kapso-secret-of-mine"
    standard = await world.create(kind="standard")
    assert standard.secret_key.startswith("whsec_")
    assert len(base64.b64decode(standard.secret_key.removeprefix("whsec_"))) >= 24
    vector = await world.create(kind="standard", secret_key=STANDARD_SECRET)
    assert vector.endpoint.secret == STANDARD_SECRET


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "url: "),
        ({"url": "https://user:pw@hooks.example.com/"}, "user name"),
        ({"url": "not a url"}, "url: "),
        ({"kind": "svix"}, "kind must be one of kapso, meta, standard"),
        ({"events": []}, "at least one"),
        ({"events": ["whatsapp.message.sent", "whatsapp.message.bounced"]}, "bounced"),
        ({"events": [TEST_EVENT]}, "unknown event"),
        ({"headers": {f"X-H{i}": "v" for i in range(21)}}, "at most 20"),
        ({"headers": {"X Bad": "v"}}, "not a valid HTTP header name"),
        ({"headers": {"": "v"}}, "not a valid HTTP header name"),
        ({"headers": {"Content-Type": "text/plain"}}, "set by wagate"),
        ({"headers": {"X-Webhook-Signature": "forged"}}, "set by wagate"),
        ({"headers": {"x-idempotency-key": "1"}}, "set by wagate"),
        ({"headers": {"X-Hub-Signature-256": "sha256=0"}}, "set by wagate"),
        ({"headers": {"Webhook-Id": "msg_1"}}, "set by wagate"),
        ({"headers": {"Host": "internal"}}, "set by wagate"),
        ({"headers": {"X-Src": "a\r\nX-Evil: 1"}}, "printable ASCII"),
        ({"headers": {"X-Src": "a", "x-src": "b"}}, "twice"),
        ({"secret_key": "short"}, "16-256"),
        ({"secret_key": "has a space in the secret"}, "without spaces"),
        ({"kind": "standard", "secret_key": "not-whsec-but-long-enough"}, "whsec_"),
        ({"kind": "standard", "secret_key": "whsec_not base64!"}, "whsec_"),
        ({"kind": "standard", "secret_key": "whsec_c2hvcnQ="}, "24-64"),
    ],
)
async def test_a_webhook_that_cannot_work_is_refused_saying_what_to_fix(
    world: World, change: dict[str, Any], words: str
) -> None:
    with pytest.raises(admin.AdminError, match=None) as refused:
        await world.create(**change)
    assert words in str(refused.value)
    assert await world.hooks.list_endpoints("106540352242922") == []
    # The same mistake is refused by an update, and leaves the webhook as it was.
    kept = await world.create()
    with pytest.raises(admin.AdminError) as again:
        await hooks.update_webhook(world.hooks, world.memory.clock, kept.endpoint.id, **change)
    assert words in str(again.value)
    assert await world.hooks.get_endpoint(kept.endpoint.id) == kept.endpoint


async def test_the_receivers_own_headers_are_kept_as_given(world: World) -> None:
    headers = {f"X-Tenant-{i}": f"value {i}" for i in range(19)} | {"Authorization": "Bearer t"}
    created = await world.create(headers=headers)
    assert created.endpoint.headers == headers


async def test_events_are_kept_in_the_catalogues_order_without_duplicates(world: World) -> None:
    created = await world.create(
        events=["whatsapp.contact.opted_out", "whatsapp.message.read", "whatsapp.message.read"]
    )
    assert created.endpoint.events == ("whatsapp.message.read", "whatsapp.contact.opted_out")
    every = await world.create(events=list(EVENT_TYPES))
    assert every.endpoint.events == EVENT_TYPES


async def test_an_update_changes_only_what_is_given(world: World) -> None:
    created = await world.create(headers={"X-Source": "a"})
    world.memory.clock.at += 5
    updated = await hooks.update_webhook(
        world.hooks,
        world.memory.clock,
        created.endpoint.id,
        url="https://other.example.com/in",
        active=False,
    )
    endpoint = updated.endpoint
    assert endpoint.url == "https://other.example.com/in"
    assert endpoint.active is False
    assert endpoint.headers == {"X-Source": "a"}
    assert endpoint.secret == created.endpoint.secret
    assert endpoint.updated_at == created.endpoint.updated_at + 5000
    assert updated.secret_key == mask_secret(endpoint.secret)
    with pytest.raises(admin.AdminError, match="nothing to change"):
        await hooks.update_webhook(world.hooks, world.memory.clock, endpoint.id)


async def test_a_standard_secret_rotation_keeps_the_old_one_signing_for_the_grace_time(
    world: World,
) -> None:
    created = await world.create(kind="standard", secret_key=STANDARD_SECRET)
    rotated = await hooks.update_webhook(
        world.hooks, world.memory.clock, created.endpoint.id, rotate_secret=True
    )
    endpoint = rotated.endpoint
    assert rotated.secret_is_new
    assert rotated.secret_key == endpoint.secret
    assert endpoint.secret.startswith("whsec_")
    assert endpoint.secret != STANDARD_SECRET
    assert endpoint.previous_secret == STANDARD_SECRET
    now_ms = int(world.memory.clock.now() * 1000)
    assert endpoint.previous_secret_until == now_ms + int(ROTATION_GRACE_S * 1000)
    assert (await world.hooks.get_endpoint(endpoint.id)) == endpoint


async def test_a_kapso_secret_is_replaced_at_once_because_it_carries_one_signature(
    world: World,
) -> None:
    created = await world.create()
    rotated = await hooks.update_webhook(
        world.hooks, world.memory.clock, created.endpoint.id, secret_key="the-new-kapso-secret"
    )
    assert rotated.secret_key == "the-new-kapso-secret"
    assert rotated.endpoint.previous_secret is None
    # The same secret again is no rotation: shown masked, nothing kept aside.
    same = await hooks.update_webhook(
        world.hooks, world.memory.clock, created.endpoint.id, secret_key="the-new-kapso-secret"
    )
    assert not same.secret_is_new
    assert same.secret_key == mask_secret("the-new-kapso-secret")
    with pytest.raises(admin.AdminError, match="not both"):
        await hooks.update_webhook(
            world.hooks,
            world.memory.clock,
            created.endpoint.id,
            secret_key="the-new-kapso-secret",
            rotate_secret=True,
        )


async def test_turning_a_kapso_webhook_standard_generates_a_secret_it_can_sign_with(
    world: World,
) -> None:
    created = await world.create()
    changed = await hooks.update_webhook(
        world.hooks, world.memory.clock, created.endpoint.id, kind="standard"
    )
    assert changed.endpoint.kind == "standard"
    assert changed.secret_is_new
    assert changed.secret_key.startswith("whsec_")
    # The old hex secret could never have signed a standard webhook: nothing to keep aside.
    assert changed.endpoint.previous_secret is None


async def test_another_projects_webhook_looks_missing_everywhere(world: World) -> None:
    mine = await world.create()
    other_project = await world.setup("5550100")
    webhook_id = mine.endpoint.id
    store, clock = world.memory.store, world.memory.clock
    calls = [
        hooks.show_webhook(world.hooks, webhook_id, project_id=other_project),
        hooks.update_webhook(
            world.hooks, clock, webhook_id, active=False, project_id=other_project
        ),
        hooks.remove_webhook(world.hooks, webhook_id, project_id=other_project),
        hooks.send_test(
            store, world.hooks, world.hooks, clock, webhook_id, project_id=other_project
        ),
        hooks.list_deliveries(world.hooks, world.hooks, webhook_id, project_id=other_project),
        hooks.list_attempts(world.hooks, world.hooks, webhook_id, project_id=other_project),
        hooks.replay(world.hooks, world.hooks, clock, webhook_id, project_id=other_project),
        hooks.pause_webhook(world.hooks, world.hooks, clock, webhook_id, project_id=other_project),
        hooks.resume_webhook(world.hooks, clock, webhook_id, project_id=other_project),
    ]
    for call in calls:
        with pytest.raises(hooks.WebhookNotFound, match=webhook_id):
            await call
    with pytest.raises(admin.NumberNotFound):
        await hooks.list_webhooks(store, world.hooks, "106540352242922", other_project)
    with pytest.raises(admin.NumberNotFound):
        await world.create(project_id=other_project)
    # Under another number's path, even the owner's webhook is missing.
    with pytest.raises(hooks.WebhookNotFound):
        await hooks.show_webhook(world.hooks, webhook_id, phone_number_id="5550100")
    assert await world.hooks.get_endpoint(webhook_id) == mine.endpoint
    owner = mine.endpoint.project_id
    shown = await hooks.show_webhook(
        world.hooks, webhook_id, project_id=owner, phone_number_id="106540352242922"
    )
    assert shown.endpoint == mine.endpoint


async def test_a_webhook_of_an_unknown_number_is_refused(world: World) -> None:
    with pytest.raises(admin.NumberNotFound, match="999"):
        await world.create(phone_number_id="999")


async def test_a_test_event_is_queued_for_the_webhook_with_the_numbers_ids(world: World) -> None:
    created = await world.create()
    delivery_id = await hooks.send_test(
        world.memory.store, world.hooks, world.hooks, world.memory.clock, created.endpoint.id
    )
    assert delivery_id.startswith("evt_")
    page = await hooks.list_deliveries(world.hooks, world.hooks, created.endpoint.id)
    [delivery] = page.deliveries
    assert (delivery.id, delivery.type, delivery.state) == (delivery_id, TEST_EVENT, "pending")
    data = json.loads(delivery.data)
    assert data["phone_number_id"] == "106540352242922"
    assert data["test"] is True
    assert data["waba_id"] == "102290129340398"
    assert page.before is None
    inactive = await hooks.update_webhook(
        world.hooks, world.memory.clock, created.endpoint.id, active=False
    )
    with pytest.raises(admin.AdminError, match="inactive"):
        await hooks.send_test(
            world.memory.store, world.hooks, world.hooks, world.memory.clock, inactive.endpoint.id
        )


async def test_deliveries_page_newest_first_and_filter_dead_letters(world: World) -> None:
    webhook_id = (await world.create()).endpoint.id
    dead = await world.dead_letter(webhook_id)
    store, clock = world.memory.store, world.memory.clock
    pending = [
        await hooks.send_test(store, world.hooks, world.hooks, clock, webhook_id) for _ in range(3)
    ]
    first = await hooks.list_deliveries(world.hooks, world.hooks, webhook_id, limit=2)
    assert [d.id for d in first.deliveries] == pending[:0:-1]
    assert first.before is not None
    second = await hooks.list_deliveries(
        world.hooks, world.hooks, webhook_id, limit=2, before=first.before
    )
    assert [d.id for d in second.deliveries] == [pending[0], dead]
    letters = await hooks.list_deliveries(world.hooks, world.hooks, webhook_id, state="dead")
    assert [d.id for d in letters.deliveries] == [dead]
    [attempt] = await hooks.list_attempts(world.hooks, world.hooks, webhook_id)
    assert (attempt.delivery_id, attempt.status_code) == (dead, 500)
    with pytest.raises(admin.AdminError, match="state must be one of"):
        await hooks.list_deliveries(world.hooks, world.hooks, webhook_id, state="lost")
    for limit in (0, 101):
        with pytest.raises(admin.AdminError, match="limit"):
            await hooks.list_deliveries(world.hooks, world.hooks, webhook_id, limit=limit)


async def test_dead_letters_are_replayed_one_or_all(world: World) -> None:
    webhook_id = (await world.create()).endpoint.id
    first, second = await world.dead_letter(webhook_id), await world.dead_letter(webhook_id)
    clock = world.memory.clock
    assert await hooks.replay(world.hooks, world.hooks, clock, webhook_id, first) == 1
    with pytest.raises(admin.AdminError, match="no dead delivery"):
        await hooks.replay(world.hooks, world.hooks, clock, webhook_id, first)
    assert await hooks.replay(world.hooks, world.hooks, clock, webhook_id) == 1
    assert await hooks.replay(world.hooks, world.hooks, clock, webhook_id) == 0
    page = await hooks.list_deliveries(world.hooks, world.hooks, webhook_id)
    assert {(d.id, d.state, d.attempts) for d in page.deliveries} == {
        (first, "pending", 0),
        (second, "pending", 0),
    }


async def test_a_paused_webhook_resumes_with_its_failing_streak_forgiven(world: World) -> None:
    webhook_id = (await world.create()).endpoint.id
    await world.dead_letter(webhook_id)
    clock = world.memory.clock
    paused = await hooks.pause_webhook(world.hooks, world.hooks, clock, webhook_id)
    assert paused.endpoint.paused_at == int(clock.now() * 1000)
    assert paused.endpoint.failing_since is not None
    again = await hooks.pause_webhook(world.hooks, world.hooks, clock, webhook_id)
    assert again.endpoint.paused_at == paused.endpoint.paused_at
    # A test sent while paused waits for the resume.
    waiting = await hooks.send_test(world.memory.store, world.hooks, world.hooks, clock, webhook_id)
    clock.at += 60
    now_ms = int(clock.now() * 1000)
    assert (
        await world.hooks.claim_deliveries("u", now_ms, limit=9, per_endpoint=9, lease_ms=1) == []
    )
    resumed = await hooks.resume_webhook(world.hooks, clock, webhook_id)
    assert resumed.endpoint.paused_at is None
    assert resumed.endpoint.failing_since is None
    claimed = await world.hooks.claim_deliveries("u", now_ms, limit=9, per_endpoint=9, lease_ms=1)
    assert [c.id for c in claimed] == [waiting]
    assert (await hooks.resume_webhook(world.hooks, clock, webhook_id)) == resumed


async def test_a_removed_webhook_is_gone_with_its_deliveries(world: World) -> None:
    webhook_id = (await world.create()).endpoint.id
    await world.dead_letter(webhook_id)
    removed = await hooks.remove_webhook(world.hooks, webhook_id)
    assert removed.id == webhook_id
    assert world.memory.database.deliveries == {}
    with pytest.raises(hooks.WebhookNotFound):
        await hooks.remove_webhook(world.hooks, webhook_id)
