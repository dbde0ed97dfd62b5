"""The sandbox behaves like Meta's Graph API: real server process, real webhooks, loopback only."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web

from wagate.adapters.sandbox import SandboxConfig, SandboxState, create_sandbox_app
from wagate.adapters.sandbox.templates import parse_create
from wagate.adapters.sandbox.webhooks import WebhookSender, signature
from wagate.domain.errors import GraphError

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOST = "127.0.0.1"
APP_SECRET = "sandbox-test-secret"
STATUS_DELAY = 0.05
APPROVAL_DELAY = 0.3
AUTH = {"Authorization": "Bearer test-token"}
ADMIN_TOKEN = "sandbox-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_numbers = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _phone_number_id() -> str:
    """A phone number of its own for each test, so limits and counters do not mix."""
    return f"10{os.getpid() % 1000:03d}{next(_numbers):06d}"


def _message(to: str | None = "+1 555 010 0001", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "type": "template",
        "template": {"name": "promo_template", "language": {"code": "en_US"}},
        **extra,
    }
    if to is not None:
        body["to"] = to
    return body


def _template(name: str, components: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {"name": name, "language": {"code": "en_US"}}
    if components is not None:
        template["components"] = components
    return template


# ---- the webhook receiver -----------------------------------------------------------


@dataclass
class Delivery:
    """One webhook POST as received."""

    raw: bytes
    signature: str
    body: dict[str, Any]


class Receiver:
    """Collects the sandbox's webhook POSTs."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signature = request.headers.get("X-Hub-Signature-256", "")
        async with self._arrived:
            self.deliveries.append(Delivery(raw, signature, msgspec.json.decode(raw)))
            self._arrived.notify_all()
        return web.Response(text="ok")

    def changes(self, field: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """(delivery index, change value) of every change of this field."""
        for index, delivery in enumerate(self.deliveries):
            for entry in delivery.body["entry"]:
                for change in entry["changes"]:
                    if change["field"] == field:
                        yield index, change["value"]

    def statuses(self, wamid: str) -> list[dict[str, Any]]:
        """Every status reported for a message, in arrival order."""
        return [
            status
            for _, value in self.changes("messages")
            for status in value.get("statuses", [])
            if status["id"] == wamid
        ]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait (up to 5 s) until `condition` holds."""
        async with asyncio.timeout(5), self._arrived:
            await self._arrived.wait_for(condition)


# ---- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def sandbox_url(hook_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A standalone sandbox process (default 80 msg/s) posting webhooks to `hook_port`."""
    port = _free_port()
    log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
    env = {
        **os.environ,
        "WAGATE_SANDBOX_STATUS_DELAY": str(STATUS_DELAY),
        "WAGATE_SANDBOX_APPROVAL_DELAY": str(APPROVAL_DELAY),
        "WAGATE_SANDBOX_WEBHOOK_BACKOFF": "0.1",
    }
    command = [
        sys.executable,
        "-m",
        "wagate.adapters.sandbox",
        "--host",
        HOST,
        "--port",
        str(port),
        "--webhook-url",
        f"http://{HOST}:{hook_port}/webhook",
        "--app-secret",
        APP_SECRET,
        "--admin-token",
        ADMIN_TOKEN,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sandbox exited: {log.read_text()}")
        try:
            request = urllib.request.Request(f"{url}/_stats", headers=ADMIN)
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError(f"sandbox did not start: {log.read_text()}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def receiver(hook_port: int) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, HOST, hook_port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Sandbox:
    """A client of the running sandbox, with the receiver of its webhooks."""

    url: str
    http: aiohttp.ClientSession
    hooks: Receiver

    async def send(
        self, phone_number_id: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            f"{self.url}/v24.0/{phone_number_id}/marketing_messages",
            json=body,
            headers=AUTH if headers is None else headers,
        ) as response:
            return response.status, await response.json()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        auth: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        url = path if path.startswith("http") else f"{self.url}{path}"
        if headers is None:
            headers = AUTH if auth else {}
        async with self.http.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def stats(self) -> dict[str, Any]:
        return (await self.call("GET", "/_stats", headers=ADMIN))[1]


@pytest_asyncio.fixture(loop_scope="module")
async def sandbox(sandbox_url: str, http: aiohttp.ClientSession, receiver: Receiver) -> Sandbox:
    return Sandbox(sandbox_url, http, receiver)


def _error_code(body: dict[str, Any]) -> int:
    code: int = body["error"]["code"]
    return code


# ---- sends and status webhooks -------------------------------------------------------


async def test_a_send_is_accepted_and_reported_sent_delivered_read_in_signed_webhooks(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()
    status, body = await sandbox.send(
        pnid, _message("+1 (555) 010-0001", biz_opaque_callback_data="campaign-7")
    )

    assert status == 200
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+1 (555) 010-0001", "wa_id": "15550100001"}]
    wamid = body["messages"][0]["id"]
    assert wamid.startswith("wamid.")
    assert body["messages"][0]["message_status"] == "accepted"

    await sandbox.hooks.wait_for(lambda: len(sandbox.hooks.statuses(wamid)) == 3)
    statuses = sandbox.hooks.statuses(wamid)
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    for s in statuses:
        assert s["recipient_id"] == "15550100001"
        assert s["biz_opaque_callback_data"] == "campaign-7"
        assert s["pricing"]["category"] == "marketing_lite"
        assert s["pricing"]["pricing_model"] == "PMP"
        assert s["timestamp"].isdigit()
    for delivery in sandbox.hooks.deliveries:
        expected = hmac.new(APP_SECRET.encode(), delivery.raw, hashlib.sha256).hexdigest()
        assert delivery.signature == f"sha256={expected}"
    index, value = next(
        (i, v)
        for i, v in sandbox.hooks.changes("messages")
        if any(s["id"] == wamid for s in v.get("statuses", []))
    )
    assert value["metadata"]["phone_number_id"] == pnid
    assert sandbox.hooks.deliveries[index].body["object"] == "whatsapp_business_account"
    assert sandbox.hooks.deliveries[index].body["entry"][0]["id"] == pnid


async def test_a_bsuid_send_answers_user_id_and_reports_recipient_user_id(
    sandbox: Sandbox,
) -> None:
    bsuid = "US.13491208655302741918"
    status, body = await sandbox.send(_phone_number_id(), _message(None, recipient=bsuid))

    assert status == 200
    assert body["contacts"] == [{"input": bsuid, "user_id": bsuid}]
    wamid = body["messages"][0]["id"]
    await sandbox.hooks.wait_for(lambda: len(sandbox.hooks.statuses(wamid)) == 3)
    for s in sandbox.hooks.statuses(wamid):
        assert s["recipient_user_id"] == bsuid
        assert s["recipient_id"] == ""


@pytest.mark.parametrize(
    ("to", "code"),
    [("+1 555 010 9026", 131026), ("+1 555 010 9049", 131049), ("+1 555 010 9050", 131050)],
)
async def test_undeliverable_recipients_get_only_a_failed_status(
    sandbox: Sandbox, to: str, code: int
) -> None:
    status, body = await sandbox.send(
        _phone_number_id(), _message(to, biz_opaque_callback_data="x")
    )
    assert status == 200
    wamid = body["messages"][0]["id"]

    await sandbox.hooks.wait_for(lambda: bool(sandbox.hooks.statuses(wamid)))
    await asyncio.sleep(4 * STATUS_DELAY)
    [failed] = sandbox.hooks.statuses(wamid)
    assert failed["status"] == "failed"
    assert failed["biz_opaque_callback_data"] == "x"
    [error] = failed["errors"]
    assert error["code"] == code
    assert error["title"]
    assert error["error_data"]["details"]
    assert "pricing" not in failed


async def test_a_recipient_who_stopped_marketing_sends_a_user_preferences_stop(
    sandbox: Sandbox,
) -> None:
    status, _ = await sandbox.send(_phone_number_id(), _message("+44 7700 909050"))
    assert status == 200

    def stops() -> list[dict[str, Any]]:
        return [
            preference
            for _, value in sandbox.hooks.changes("user_preferences")
            for preference in value["user_preferences"]
            if preference.get("wa_id") == "447700909050"
        ]

    await sandbox.hooks.wait_for(lambda: bool(stops()))
    [stop] = stops()
    assert stop["category"] == "marketing_messages"
    assert stop["value"] == "stop"


async def test_a_flaky_recipient_fails_twice_with_131000_then_is_accepted(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()
    message = _message("+1 555 010 9500")

    answers = [await sandbox.send(pnid, message) for _ in range(3)]

    assert [status for status, _ in answers] == [500, 500, 200]
    assert [_error_code(body) for _, body in answers[:2]] == [131000, 131000]
    assert answers[2][1]["messages"][0]["id"].startswith("wamid.")


async def test_a_clicking_recipient_is_read_then_clicks(sandbox: Sandbox) -> None:
    status, body = await sandbox.send(_phone_number_id(), _message("+1 555 010 9001"))
    assert status == 200
    wamid = body["messages"][0]["id"]

    def clicks() -> list[dict[str, Any]]:
        return [
            action
            for _, value in sandbox.hooks.changes("messages")
            for action in value.get("user_actions", [])
            if action["marketing_messages_link_click_data"]["tracking_token"] == wamid
        ]

    await sandbox.hooks.wait_for(lambda: bool(clicks()))
    assert [s["status"] for s in sandbox.hooks.statuses(wamid)] == ["sent", "delivered", "read"]
    [click] = clicks()
    assert click["action_type"] == "marketing_messages_link_click"
    assert click["marketing_messages_link_click_data"]["click_component"] == "cta"


# ---- Meta's checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "code", "http_status"),
    [
        ("no_such_template", 132001, 404),
        ("paused_promo", 132015, 400),
        ("draft_promo", 132001, 404),
        ("order_update", 134100, 400),
    ],
)
async def test_templates_that_cannot_be_sent_are_refused(
    sandbox: Sandbox, template: str, code: int, http_status: int
) -> None:
    status, body = await sandbox.send(_phone_number_id(), _message(template=_template(template)))

    assert status == http_status
    assert _error_code(body) == code
    assert body["error"]["message"].startswith(f"(#{code}) ")
    assert body["error"]["type"] == "OAuthException"
    assert body["error"]["error_data"]["messaging_product"] == "whatsapp"
    assert body["error"]["fbtrace_id"]


SEASONAL: list[dict[str, Any]] = [
    {"type": "header", "parameters": [{"type": "text", "text": "Summer"}]},
    {
        "type": "body",
        "parameters": [
            {"type": "text", "text": "Ana"},
            {"type": "text", "text": "25%"},
            {"type": "text", "text": "Sunday"},
        ],
    },
    {
        "type": "button",
        "sub_type": "url",
        "index": 0,
        "parameters": [{"type": "text", "text": "s"}],
    },
    {
        "type": "button",
        "sub_type": "copy_code",
        "index": "1",
        "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}],
    },
]
NAMED: list[dict[str, Any]] = [
    {
        "type": "body",
        "parameters": [
            {"type": "text", "parameter_name": "first_name", "text": "Ana"},
            {"type": "text", "parameter_name": "discount", "text": "15%"},
        ],
    }
]


@pytest.mark.parametrize(
    ("template", "status_code", "code"),
    [
        (_template("seasonal_promo", SEASONAL), 200, None),
        (_template("seasonal_promo", SEASONAL[1:]), 400, 132000),
        (_template("seasonal_promo", SEASONAL[:3]), 400, 131008),
        (_template("named_offer", NAMED), 200, None),
        (
            _template(
                "named_offer", [{"type": "body", "parameters": [{"type": "text", "text": "A"}]}]
            ),
            400,
            132012,
        ),
        (_template("promo_template", NAMED), 400, 132012),
    ],
)
async def test_parameters_must_match_the_template(
    sandbox: Sandbox, template: dict[str, Any], status_code: int, code: int | None
) -> None:
    status, body = await sandbox.send(_phone_number_id(), _message(template=template))

    assert status == status_code, body
    if code is not None:
        assert _error_code(body) == code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (_message(None), 131008),
        ({**_message(), "type": "text"}, 100),
        ({**_message(), "surprise": 1}, 100),
    ],
)
async def test_malformed_requests_get_meta_codes(
    sandbox: Sandbox, message: dict[str, Any], code: int
) -> None:
    status, body = await sandbox.send(_phone_number_id(), message)

    assert status == 400
    assert _error_code(body) == code


async def test_a_send_without_a_bearer_token_is_refused_with_190(sandbox: Sandbox) -> None:
    status, body = await sandbox.send(_phone_number_id(), _message(), headers={})
    assert (status, _error_code(body)) == (401, 190)

    status, body = await sandbox.call("GET", "/v24.0/1/message_templates", auth=False)
    assert (status, _error_code(body)) == (401, 190)


async def test_bursting_far_above_the_throughput_is_refused_with_130429(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()
    started = time.monotonic()
    answers = await asyncio.gather(
        *(sandbox.send(pnid, _message(f"+1 555 02{i:05d}")) for i in range(400))
    )
    elapsed = time.monotonic() - started

    accepted = [body for status, body in answers if status == 200]
    refused = [body for status, body in answers if status != 200]
    assert refused
    assert {(_error_code(body)) for body in refused} == {130429}
    # A one-second bucket: 80 at once, then 80/s.
    assert 80 <= len(accepted) <= 80 + 80 * elapsed + 1


async def test_the_46th_rapid_send_to_one_user_hits_the_pair_rate_limit(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()
    answers = [await sandbox.send(pnid, _message("+1 555 030 0000")) for _ in range(46)]

    assert [status for status, _ in answers[:45]] == [200] * 45
    assert answers[45][0] == 400
    assert _error_code(answers[45][1]) == 131056


async def test_the_throughput_level_follows_the_configured_rate(sandbox: Sandbox) -> None:
    status, body = await sandbox.call("GET", "/v24.0/123456?fields=throughput")

    assert status == 200
    assert body == {"throughput": {"level": "STANDARD", "mps": 80.0}, "id": "123456"}


async def test_a_number_registered_with_its_own_mps_is_limited_and_tiered_by_it(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()
    registration = {"phone_number_id": pnid, "waba_id": pnid, "mps": 2}
    status, _ = await sandbox.call("POST", "/_numbers", registration, headers=ADMIN)
    assert status == 200

    _, tier = await sandbox.call("GET", f"/v24.0/{pnid}?fields=throughput")
    answers = [await sandbox.send(pnid, _message(f"+1 555 11{i:05d}")) for i in range(3)]

    assert tier["throughput"] == {"level": "STANDARD", "mps": 2.0}
    # A one-second bucket of its own 2 msg/s: two at once, the third refused.
    assert [status for status, _ in answers] == [200, 200, 400]
    assert _error_code(answers[2][1]) == 130429
    assert "2 messages/s" in str(answers[2][1])


async def test_an_unusable_mps_is_refused_with_code_100(sandbox: Sandbox) -> None:
    pnid = _phone_number_id()
    for mps in (0, -1, "fast"):
        registration = {"phone_number_id": pnid, "waba_id": pnid, "mps": mps}
        status, body = await sandbox.call("POST", "/_numbers", registration, headers=ADMIN)
        assert (status, _error_code(body)) == (400, 100), body


async def test_sends_lists_each_accepted_send_with_its_time_for_the_operator_only(
    sandbox: Sandbox,
) -> None:
    pnid, other = _phone_number_id(), _phone_number_id()
    before = time.time()
    await sandbox.send(pnid, _message("+1 555 120 0001"))
    await sandbox.send(other, _message("+1 555 120 0002"))
    await sandbox.send(pnid, _message(template=_template("no_such_template")))
    await sandbox.send(pnid, _message("+1 555 120 0003"))

    status, listed = await sandbox.call("GET", f"/_sends?phone_number_id={pnid}", headers=ADMIN)
    refused, _ = await sandbox.call("GET", "/_sends")

    assert status == 200
    assert [(s["phone_number_id"], s["to"]) for s in listed["data"]] == [
        (pnid, "15551200001"),
        (pnid, "15551200003"),
    ]
    first, second = (s["at"] for s in listed["data"])
    assert before <= first <= second <= time.time()
    assert refused == 401


# ---- templates ----------------------------------------------------------------------

SEEDED = [
    "promo_template",
    "seasonal_promo",
    "named_offer",
    "order_update",
    "paused_promo",
    "draft_promo",
    "image_promo",
    "carousel_promo",
    "long_promo",
    "named_header_offer",
]


async def test_template_list_pages_with_cursors_and_filters(sandbox: Sandbox) -> None:
    waba = _phone_number_id()
    templates = f"/v24.0/{waba}/message_templates"
    names: list[str] = []
    url: str | None = f"{templates}?limit=4"
    while url is not None:
        status, page = await sandbox.call("GET", url)
        assert status == 200
        names += [t["name"] for t in page["data"]]
        url = page["paging"].get("next")
    assert names == SEEDED

    _, first = await sandbox.call("GET", f"{templates}?limit=2")
    _, second = await sandbox.call(
        "GET", f"{templates}?limit=2&after={first['paging']['cursors']['after']}"
    )
    assert [t["name"] for t in second["data"]] == SEEDED[2:4]
    _, back = await sandbox.call(
        "GET", f"{templates}?limit=2&before={second['paging']['cursors']['before']}"
    )
    assert [t["name"] for t in back["data"]] == SEEDED[:2]

    _, paused = await sandbox.call("GET", f"{templates}?status=PAUSED")
    assert [t["name"] for t in paused["data"]] == ["paused_promo"]
    _, utility = await sandbox.call("GET", f"{templates}?category=UTILITY")
    assert [t["name"] for t in utility["data"]] == ["order_update"]
    _, named = await sandbox.call("GET", f"{templates}?name=named_offer")
    [offer] = named["data"]
    assert offer["parameter_format"] == "NAMED"
    assert {"id", "name", "language", "status", "category", "components"} <= offer.keys()


async def test_a_created_template_is_pending_then_approved_then_deleted(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()
    templates = f"/v24.0/{pnid}/message_templates"
    new = {
        "name": "flash_sale",
        "language": "en_US",
        "category": "MARKETING",
        "components": [{"type": "BODY", "text": "Flash sale today only."}],
    }

    status, created = await sandbox.call("POST", templates, new)
    assert status == 200
    assert created["status"] == "PENDING"
    assert created["category"] == "MARKETING"
    send = _message(template=_template("flash_sale"))
    assert _error_code((await sandbox.send(pnid, send))[1]) == 132001
    assert _error_code((await sandbox.call("POST", templates, new))[1]) == 100

    deadline = time.monotonic() + APPROVAL_DELAY + 10
    while True:
        _, listed = await sandbox.call("GET", f"{templates}?name=flash_sale")
        if listed["data"][0]["status"] != "PENDING" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert [(t["id"], t["status"]) for t in listed["data"]] == [(created["id"], "APPROVED")]
    assert (await sandbox.send(pnid, send))[0] == 200

    status, deleted = await sandbox.call("DELETE", f"{templates}?name=flash_sale")
    assert (status, deleted) == (200, {"success": True})
    _, listed = await sandbox.call("GET", f"{templates}?name=flash_sale")
    assert listed["data"] == []
    status, body = await sandbox.call("DELETE", f"{templates}?name=flash_sale")
    assert (status, _error_code(body)) == (400, 100)


# ---- the template checks of issue 10 (wagate.domain.templates) ----------------------


def _image(kind: str = "image") -> dict[str, Any]:
    return {"type": kind, kind: {"link": f"https://cdn.example/spring.{kind}"}}


def _card(index: int, header: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "card_index": index,
        "components": [
            {"type": "header", "parameters": [header or _image()]},
            {"type": "body", "parameters": [{"type": "text", "text": "$49"}]},
            {
                "type": "button",
                "sub_type": "url",
                "index": 1,
                "parameters": [{"type": "text", "text": "sneakers"}],
            },
        ],
    }


def _text(value: str, name: str | None = None) -> dict[str, Any]:
    parameter: dict[str, Any] = {"type": "text", "text": value}
    if name is not None:
        parameter["parameter_name"] = name
    return parameter


IMAGE_BODY = {"type": "body", "parameters": [_text("Ana")]}
NAMED_HEADER_BODY = {
    "type": "body",
    "parameters": [_text("Ana", "first_name"), _text("15%", "discount")],
}


@pytest.mark.parametrize(
    ("template", "components"),
    [
        ("image_promo", [{"type": "header", "parameters": [_image()]}, IMAGE_BODY]),
        ("carousel_promo", [{"type": "carousel", "cards": [_card(0), _card(1)]}]),
        ("long_promo", [{"type": "body", "parameters": [_text("x" * 24)]}]),
        (
            "named_header_offer",
            [{"type": "header", "parameters": [_text("Acme", "brand")]}, NAMED_HEADER_BODY],
        ),
    ],
)
async def test_each_new_seed_accepts_a_send_that_fits_it(
    sandbox: Sandbox, template: str, components: list[dict[str, Any]]
) -> None:
    status, body = await sandbox.send(
        _phone_number_id(), _message(template=_template(template, components))
    )

    assert status == 200, body


@pytest.mark.parametrize(
    ("template", "components", "code", "details"),
    [
        (
            "seasonal_promo",
            [SEASONAL[0], {"type": "body", "parameters": SEASONAL[1]["parameters"][:2]}],
            132000,
            "body expects 3 parameters, got 2",
        ),
        (
            "image_promo",
            [{"type": "header", "parameters": [_image("video")]}, IMAGE_BODY],
            132012,
            "header is IMAGE, got a video parameter",
        ),
        ("image_promo", [IMAGE_BODY], 132012, "header is IMAGE, got no image parameter"),
        (
            "named_header_offer",
            [{"type": "header", "parameters": [_text("Acme")]}, NAMED_HEADER_BODY],
            132012,
            "header takes named parameters (parameter_name), got a positional one",
        ),
        (
            "named_header_offer",
            [{"type": "header", "parameters": [_text("x" * 56, "brand")]}, NAMED_HEADER_BODY],
            132005,
            "header text with its parameters is 61 characters, more than 60",
        ),
        (
            "long_promo",
            [{"type": "body", "parameters": [_text("x" * 25)]}],
            132005,
            "body text with its parameters is 1,025 characters, more than 1,024",
        ),
        (
            "carousel_promo",
            [{"type": "carousel", "cards": [_card(0)]}],
            132000,
            "carousel expects 2 cards, got 1",
        ),
        (
            "carousel_promo",
            [{"type": "carousel", "cards": [_card(0), _card(1, _image("video"))]}],
            132012,
            "card 1: header is IMAGE, got a video parameter",
        ),
        (
            "carousel_promo",
            [{"type": "carousel", "cards": [_card(0), _card(0)]}],
            131009,
            "card_index 0 is given twice",
        ),
        (
            "seasonal_promo",
            [*SEASONAL, {"type": "button", "sub_type": "quick_reply", "index": 2}],
            131009,
            "template has no button at index 2 (it has 2)",
        ),
        ("seasonal_promo", SEASONAL[:3], 131008, "button 1 (copy_code) needs a parameter"),
    ],
)
async def test_the_sandbox_refuses_a_send_that_does_not_fit_with_metas_code_and_detail(
    sandbox: Sandbox, template: str, components: list[dict[str, Any]], code: int, details: str
) -> None:
    pnid = _phone_number_id()
    status, body = await sandbox.send(pnid, _message(template=_template(template, components)))

    assert (status, _error_code(body)) == (400, code), body
    assert body["error"]["error_data"]["details"] == details
    assert (await sandbox.stats())["numbers"][pnid]["errors"] == {str(code): 1}


async def test_the_new_seeds_are_listed_with_their_media_headers_and_carousel(
    sandbox: Sandbox,
) -> None:
    _, listed = await sandbox.call("GET", f"/v24.0/{_phone_number_id()}/message_templates")
    seeds = {t["name"]: t for t in listed["data"]}

    assert seeds["image_promo"]["components"][0] == {
        "type": "HEADER",
        "format": "IMAGE",
        "example": {"header_handle": ["https://shop.example/spring.jpg"]},
    }
    [carousel] = [c for c in seeds["carousel_promo"]["components"] if c["type"] == "CAROUSEL"]
    assert len(carousel["cards"]) == 2
    assert seeds["named_header_offer"]["parameter_format"] == "NAMED"
    assert all(seeds[n]["status"] == "APPROVED" for n in SEEDED[-4:])
    assert all(seeds[n]["category"] == "MARKETING" for n in SEEDED[-4:])


# ---- template status changes and their webhook ---------------------------------------


def _template_updates(hooks: Receiver, template_id: str) -> list[tuple[int, dict[str, Any]]]:
    """(delivery index, value) of every template status update of this template."""
    return [
        (index, value)
        for index, value in hooks.changes("message_template_status_update")
        if str(value["message_template_id"]) == template_id
    ]


async def _set_status(
    sandbox: Sandbox, waba: str, status: str, name: str = "image_promo", **extra: Any
) -> tuple[int, dict[str, Any]]:
    change = {"name": name, "language": "en_US", "status": status, **extra}
    return await sandbox.call("POST", f"/_templates/{waba}", change, headers=ADMIN)


async def test_an_operator_pauses_unpauses_and_disables_a_template_and_each_change_is_signed(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()  # a number unregistered is a WABA of its own
    send = _message(
        template=_template(
            "image_promo", [{"type": "header", "parameters": [_image()]}, IMAGE_BODY]
        )
    )
    _, listed = await sandbox.call("GET", f"/v24.0/{pnid}/message_templates?name=image_promo")
    template_id = listed["data"][0]["id"]

    status, paused = await _set_status(sandbox, pnid, "PAUSED")
    assert (status, paused) == (
        200,
        {"success": True, "id": template_id, "status": "PAUSED", "event": "PAUSED"},
    )
    status, body = await sandbox.send(pnid, send)
    assert (status, _error_code(body)) == (400, 132015)
    await sandbox.hooks.wait_for(lambda: len(_template_updates(sandbox.hooks, template_id)) == 1)

    await _set_status(sandbox, pnid, "APPROVED")
    assert (await sandbox.send(pnid, send))[0] == 200
    await _set_status(sandbox, pnid, "PAUSED")
    await _set_status(sandbox, pnid, "DISABLED", reason="NONE")
    status, body = await sandbox.send(pnid, send)
    assert (status, _error_code(body)) == (400, 132016)
    await sandbox.hooks.wait_for(lambda: len(_template_updates(sandbox.hooks, template_id)) == 4)

    updates = _template_updates(sandbox.hooks, template_id)
    events = [(v["event"], v.get("other_info", {}).get("title")) for _, v in updates]
    assert events == [
        ("PAUSED", "FIRST_PAUSE"),
        ("APPROVED", "UNPAUSE"),
        ("PAUSED", "SECOND_PAUSE"),
        ("DISABLED", "DISABLED"),
    ]
    index, first = updates[0]
    assert first == {
        "event": "PAUSED",
        "message_template_id": int(template_id),
        "message_template_name": "image_promo",
        "message_template_language": "en_US",
        "reason": "NONE",
        "message_template_category": "MARKETING",
        "other_info": {
            "title": "FIRST_PAUSE",
            "description": "Your WhatsApp message template has been paused for 3 hours because"
            " it had issues.",
        },
    }
    assert isinstance(updates[3][1]["disable_info"]["disable_date"], int)
    delivery = sandbox.hooks.deliveries[index]
    assert delivery.body["object"] == "whatsapp_business_account"
    [entry] = delivery.body["entry"]
    assert entry["id"] == pnid
    assert isinstance(entry["time"], int)
    for i, _ in updates:
        raw = sandbox.hooks.deliveries[i].raw
        expected = hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert sandbox.hooks.deliveries[i].signature == f"sha256={expected}"


async def test_a_rejected_template_is_132001_and_its_webhook_names_the_reason(
    sandbox: Sandbox,
) -> None:
    waba = _phone_number_id()
    status, rejected = await _set_status(
        sandbox, waba, "REJECTED", name="promo_template", reason="INCORRECT_CATEGORY"
    )
    assert (status, rejected["event"]) == (200, "REJECTED")

    status, body = await sandbox.send(waba, _message())
    assert (status, _error_code(body)) == (404, 132001)
    await sandbox.hooks.wait_for(lambda: bool(_template_updates(sandbox.hooks, rejected["id"])))
    [(_, value)] = _template_updates(sandbox.hooks, rejected["id"])
    assert (value["event"], value["reason"]) == ("REJECTED", "INCORRECT_CATEGORY")
    assert "other_info" not in value

    again = await _set_status(sandbox, waba, "REJECTED", name="promo_template")
    assert again == (200, {**rejected, "event": None})  # no change, no webhook


@pytest.mark.parametrize(
    ("change", "headers", "status_code", "code"),
    [
        ({"name": "no_such", "language": "en_US", "status": "PAUSED"}, ADMIN, 404, 132001),
        ({"name": "image_promo", "language": "pt_BR", "status": "PAUSED"}, ADMIN, 404, 132001),
        ({"name": "image_promo", "language": "en_US", "status": "PENDING"}, ADMIN, 400, 100),
        ({"name": "image_promo", "language": "en_US", "status": "PAUSED"}, AUTH, 401, 190),
    ],
)
async def test_a_template_status_change_needs_the_admin_token_a_known_template_and_status(
    sandbox: Sandbox, change: dict[str, Any], headers: dict[str, str], status_code: int, code: int
) -> None:
    status, body = await sandbox.call(
        "POST", f"/v24.0/_templates/{_phone_number_id()}", change, headers=headers
    )

    assert (status, _error_code(body)) == (status_code, code), body
    assert body["error"]["fbtrace_id"]


async def test_a_created_template_is_approved_on_time_and_reported_without_a_read(
    sandbox: Sandbox,
) -> None:
    waba = _phone_number_id()
    new = {
        "name": "unread_sale",
        "language": "en_US",
        "category": "MARKETING",
        "components": [{"type": "BODY", "text": "A sale nobody polls for."}],
    }
    status, created = await sandbox.call("POST", f"/v24.0/{waba}/message_templates", new)
    assert (status, created["status"]) == (200, "PENDING")

    await sandbox.hooks.wait_for(lambda: bool(_template_updates(sandbox.hooks, created["id"])))

    [(index, value)] = _template_updates(sandbox.hooks, created["id"])
    assert value["event"] == "APPROVED"
    assert value["reason"] == "NONE"
    assert value["message_template_name"] == "unread_sale"
    assert sandbox.hooks.deliveries[index].body["entry"][0]["id"] == waba
    _, listed = await sandbox.call("GET", f"/v24.0/{waba}/message_templates?name=unread_sale")
    assert listed["data"][0]["status"] == "APPROVED"


# ---- stats and reset ----------------------------------------------------------------


async def test_stats_count_requests_accepts_errors_and_duplicate_sends(
    sandbox: Sandbox,
) -> None:
    pnid = _phone_number_id()
    message = _message("+1 555 040 0000")
    await sandbox.send(pnid, message)
    await sandbox.send(pnid, message)
    await sandbox.send(pnid, _message("+1 555 040 0001"))
    await sandbox.send(pnid, _message(template=_template("no_such_template")))

    stats = await sandbox.stats()

    assert stats["numbers"][pnid] == {
        "requests": 4,
        "accepted": 3,
        "errors": {"132001": 1},
        "duplicate_sends": 1,
    }
    assert stats["requests"] >= 4
    assert stats["accepted"] >= 3
    assert stats["duplicate_sends"] >= 1


async def test_reset_clears_counters(sandbox: Sandbox) -> None:
    await sandbox.send(_phone_number_id(), _message())

    status, body = await sandbox.call("POST", "/_reset", headers=ADMIN)

    assert (status, body) == (200, {"success": True})
    stats = await sandbox.stats()
    assert (stats["requests"], stats["accepted"], stats["numbers"]) == (0, 0, {})


# ---- the state with a fake clock (no sleeping) ---------------------------------------


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


def _body(to: str, template: str = "promo_template") -> bytes:
    return msgspec.json.encode(_message(to, template=_template(template)))


async def test_a_sender_pacing_at_exactly_the_rate_never_trips_the_throughput_limit() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(mps=80), clock)

    for i in range(80 * 30):
        state.send("1", _body(f"+1 555 05{i:05d}"), authorized=True)
        clock.at += 1 / 80

    assert state.totals.errors == {}


async def test_one_second_of_burst_then_130429() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(mps=80), clock)
    for i in range(80):
        state.send("1", _body(f"+1 555 06{i:05d}"), authorized=True)

    with pytest.raises(GraphError) as refused:
        state.send("1", _body("+1 555 0700000"), authorized=True)

    assert refused.value.code == 130429
    clock.at += 1 / 80
    state.send("1", _body("+1 555 0700001"), authorized=True)


async def test_a_numbers_own_mps_refills_at_its_rate_and_a_reset_forgets_it() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(mps=80), clock)
    state.register_number("1", "w", mps=1)
    # At least two messages of burst, so that jitter around 1 msg/s is no 130429...
    state.send("1", _body("+1 555 1300000"), authorized=True)
    state.send("1", _body("+1 555 1300001"), authorized=True)
    with pytest.raises(GraphError) as refused:
        state.send("1", _body("+1 555 1300002"), authorized=True)
    assert refused.value.code == 130429
    # ...and then one a second.
    clock.at += 1.0
    state.send("1", _body("+1 555 1300002"), authorized=True)
    with pytest.raises(GraphError):
        state.send("1", _body("+1 555 1300003"), authorized=True)
    state.attach("1", "another-waba")  # re-attached: its own rate stays
    assert state.mps_of("1") == 1

    state.reset()

    assert state.mps_of("1") == 80
    assert list(state.sends) == []


async def test_the_pair_limit_refills_one_message_per_interval() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(mps=1000), clock)
    for _ in range(45):
        state.send("1", _body("+1 555 0800000"), authorized=True)
    with pytest.raises(GraphError) as refused:
        state.send("1", _body("+1 555 0800000"), authorized=True)
    assert refused.value.code == 131056

    clock.at += 6.0
    state.send("1", _body("+1 555 0800000"), authorized=True)


async def test_the_pair_rule_is_configurable_and_refused_in_metas_words() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(mps=1000, pair_burst=3, pair_interval=0.5), clock)
    for _ in range(3):
        state.send("1", _body("+1 555 0800001"), authorized=True)
    with pytest.raises(GraphError) as refused:
        state.send("1", _body("+1 555 0800001"), authorized=True)
    assert refused.value.message == (
        "(#131056) (Business Account, Consumer Account) pair rate limit hit"
    )
    assert refused.value.details == (
        "Too many messages sent from the sender phone number to the same recipient phone"
        " number in a short period of time."
    )
    state.send("1", _body("+1 555 0800002"), authorized=True)  # another user: not limited
    clock.at += 0.5
    state.send("1", _body("+1 555 0800001"), authorized=True)


async def test_a_created_template_is_approved_after_the_delay_and_disabled_is_132016() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(approval_delay=5.0), clock)
    create = msgspec.json.encode(
        {
            "name": "later",
            "language": "en_US",
            "category": "MARKETING",
            "components": [{"type": "BODY", "text": "Hi"}],
        }
    )
    template = state.templates.create("1", parse_create(create), clock.at)
    clock.at += 4.9
    with pytest.raises(GraphError) as pending:
        state.send("1", _body("+1 555 0900000", "later"), authorized=True)
    assert pending.value.code == 132001
    clock.at += 0.1
    state.send("1", _body("+1 555 0900000", "later"), authorized=True)

    template.status = "DISABLED"
    with pytest.raises(GraphError) as disabled:
        state.send("1", _body("+1 555 0900001", "later"), authorized=True)
    assert disabled.value.code == 132016


async def test_the_flush_approves_a_created_template_on_time_and_hands_its_webhook_in_process() -> (
    None
):
    # The embedded sandbox's sender hands each signed body to the gateway's ingest.
    clock = FakeClock()
    config = SandboxConfig(
        webhook_url="in-process", app_secret=APP_SECRET, approval_delay=5.0, status_delay=0.0
    )
    state = SandboxState(config, clock)
    create = msgspec.json.encode(
        {
            "name": "later",
            "language": "en_US",
            "category": "MARKETING",
            "components": [{"type": "BODY", "text": "Hi"}],
        }
    )
    template = state.templates.create("waba-1", parse_create(create), clock.at)
    sender = WebhookSender(state, "in-process")
    handed: list[tuple[bytes, str]] = []

    async def ingest(body: bytes, signed: str) -> None:
        handed.append((body, signed))

    sender.deliver = ingest
    sender.start()
    try:
        clock.at += 4.9
        await sender.flush()
        assert handed == []
        clock.at += 0.1
        await sender.flush()
        await sender.flush()  # reported once
    finally:
        await sender.aclose()

    assert template.status == "APPROVED"
    [(body, signed)] = handed
    assert signed == signature(body, APP_SECRET)
    assert msgspec.json.decode(body) == {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "waba-1",
                "time": int(clock.at),
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {
                            "event": "APPROVED",
                            "message_template_id": int(template.id),
                            "message_template_name": "later",
                            "message_template_language": "en_US",
                            "reason": "NONE",
                            "message_template_category": "MARKETING",
                        },
                    }
                ],
            }
        ],
    }
    assert state.webhook_counters.posts == 1


async def test_without_a_webhook_url_templates_still_approve_when_read_and_keep_no_events() -> None:
    clock = FakeClock()
    state = SandboxState(SandboxConfig(approval_delay=1.0), clock)
    create = parse_create(
        msgspec.json.encode(
            {
                "name": "quiet",
                "language": "en_US",
                "category": "MARKETING",
                "components": [{"type": "BODY", "text": "Hi"}],
            }
        )
    )
    state.templates.create("w", create, clock.at)
    clock.at += 1.0

    [quiet] = [t for t in state.templates.list("w", clock.at) if t.name == "quiet"]

    assert quiet.status == "APPROVED"
    assert state.templates.take_events() == ()


@pytest.mark.parametrize(
    ("components", "problem"),
    [
        ([{"type": "BODY", "text": "Hi {{name}}, {{1}}"}], "mixes named ({{name}}) and positional"),
        ([{"type": "BODY", "text": "Hi"}, {"type": "CAROUSEL", "cards": []}], "CAROUSEL needs"),
    ],
)
async def test_a_template_meta_would_not_accept_is_not_created(
    components: list[dict[str, Any]], problem: str
) -> None:
    state = SandboxState(SandboxConfig(), FakeClock())
    create = {"name": "odd", "language": "en_US", "category": "MARKETING", "components": components}

    with pytest.raises(GraphError) as refused:
        state.templates.create("1", parse_create(msgspec.json.encode(create)), 0.0)

    assert refused.value.code == 100
    assert problem in refused.value.details
    assert [t.name for t in state.templates.list("1", 0.0) if t.name == "odd"] == []


# ---- mounted under a prefix, in process ---------------------------------------------


async def test_under_a_prefix_every_route_lives_below_it() -> None:
    app = create_sandbox_app(SandboxConfig(admin_token=ADMIN_TOKEN), prefix="/sandbox")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        sent = await client.post(
            "/sandbox/v24.0/77/marketing_messages", json=_message(), headers=AUTH
        )
        page = await client.get("/sandbox/v24.0/77/message_templates?limit=1", headers=AUTH)
        stats = await client.get("/sandbox/_stats", headers=ADMIN)

    assert sent.status_code == 200
    assert page.json()["paging"]["next"].startswith(
        "http://sandbox.test/sandbox/v24.0/77/message_templates?"
    )
    assert stats.json()["numbers"]["77"]["accepted"] == 1


@pytest.mark.parametrize(
    ("version", "served"),
    [("/v24.0", True), ("/v24", True), ("", True), ("/v24.0.1", False), ("/24.0", False)],
)
async def test_a_path_may_carry_a_graph_version_with_or_without_a_minor_or_none(
    version: str, served: bool
) -> None:
    app = create_sandbox_app(SandboxConfig())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        sent = await client.post(f"{version}/77/marketing_messages", json=_message(), headers=AUTH)

    assert (sent.status_code == 200) is served, sent.text


async def test_a_send_body_over_the_limit_is_413_code_100() -> None:
    app = create_sandbox_app(SandboxConfig())
    transport = httpx.ASGITransport(app=app)
    large = _message(biz_opaque_callback_data="x" * 70_000)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        sent = await client.post("/v24.0/77/marketing_messages", json=large, headers=AUTH)

    assert sent.status_code == 413
    assert sent.json()["error"]["code"] == 100


async def test_a_failed_webhook_post_is_retried_with_the_same_signed_body() -> None:
    bodies: list[bytes] = []
    retried = asyncio.Event()

    async def flaky(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        if len(bodies) > 1 and bodies[-1] == bodies[0]:
            retried.set()
        return web.Response(status=500 if len(bodies) == 1 else 200)

    app = web.Application()
    app.router.add_post("/webhook", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, HOST, port).start()
    url = f"http://{HOST}:{port}/webhook"
    config = SandboxConfig(
        webhook_url=url, status_delay=0.01, flush_interval=0.01, webhook_backoff=0.05
    )
    state = SandboxState(config)
    sender = WebhookSender(state, url)
    sender.start()
    try:
        state.send("1", _body("+1 555 0900002"), authorized=True)
        async with asyncio.timeout(5):
            await retried.wait()
    finally:
        await sender.aclose()
        await runner.cleanup()

    assert state.webhook_counters.retries == 1
    assert state.webhook_counters.failed_posts == 0
    assert b'"status":"sent"' in bodies[0]
