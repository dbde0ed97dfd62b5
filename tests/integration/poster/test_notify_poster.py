"""The webhook poster against real receivers on loopback: answers, failures, redirects, and
the address policy applied to the address actually connected to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from aiohttp import web

from wagate.adapters.notify.poster import HttpPoster, retry_after_seconds
from wagate.domain.ssrf import AddressPolicy, parse_allow_cidrs
from wagate.ports import WebhookPoster

HOST = "127.0.0.1"
BODY = b'{"phone_number_id":"106540352242922"}'
HEADERS = {"Content-Type": "application/json", "X-Idempotency-Key": "dlv_1"}


@dataclass
class Receiver:
    """A customer's webhook server on loopback that records what reached it."""

    port: int
    hits: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def paths_hit(self) -> list[str]:
        return [path for path, _, _ in self.hits]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver(port=0)

    async def record(request: web.Request) -> None:
        found.hits.append((request.path, await request.read(), dict(request.headers)))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="ok")

    async def broken(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=500, text="database\x00 down\r\n" + "x" * 5000)

    async def busy(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=503, headers={"Retry-After": "7"})

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await found.release.wait()
        return web.Response(text="late")

    async def moved(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(location="/target")

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/broken", broken)
    app.router.add_post("/busy", busy)
    app.router.add_post("/slow", slow)
    app.router.add_post("/moved", moved)
    app.router.add_post("/target", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    assert runner.addresses
    found.port = runner.addresses[0][1]
    yield found
    found.release.set()
    await runner.cleanup()


@pytest.fixture
async def poster() -> AsyncIterator[HttpPoster]:
    """A poster that may reach loopback, as a test receiver needs."""
    made = HttpPoster(AddressPolicy(allow_private=True))
    yield made
    await made.close()


@pytest.fixture
async def strict_poster() -> AsyncIterator[HttpPoster]:
    """A poster under the default policy: public addresses only."""
    made = HttpPoster(AddressPolicy())
    yield made
    await made.close()


def test_the_poster_is_a_webhook_poster() -> None:
    poster: WebhookPoster = HttpPoster(AddressPolicy())
    assert poster is not None


async def test_a_200_is_a_success_and_the_body_arrives_as_signed(
    poster: HttpPoster, receiver: Receiver
) -> None:
    result = await poster.post(receiver.url("/ok"), BODY, HEADERS, 5)
    assert (result.status_code, result.error, result.retry_after_s) == (200, None, None)
    assert result.latency_ms >= 0
    ((path, body, headers),) = receiver.hits
    assert (path, body) == ("/ok", BODY)
    assert headers["X-Idempotency-Key"] == "dlv_1"
    assert headers["Content-Type"] == "application/json"


async def test_a_500_comes_back_with_the_receivers_text_cut_short(
    poster: HttpPoster, receiver: Receiver
) -> None:
    result = await poster.post(receiver.url("/broken"), BODY, HEADERS, 5)
    assert result.status_code == 500
    assert result.error is not None
    assert result.error.startswith("HTTP 500: database down x")
    assert "\x00" not in result.error
    assert len(result.error) < 1100


async def test_a_slow_receiver_times_out_without_raising(
    poster: HttpPoster, receiver: Receiver
) -> None:
    result = await poster.post(receiver.url("/slow"), BODY, HEADERS, 0.3)
    assert result.status_code is None
    assert result.error == "no answer within 0.3 s"
    assert 250 <= result.latency_ms < 3000


async def test_a_redirect_is_a_failure_and_is_not_followed(
    poster: HttpPoster, receiver: Receiver
) -> None:
    result = await poster.post(receiver.url("/moved"), BODY, HEADERS, 5)
    assert result.status_code == 302
    assert result.error is not None
    assert "redirects are not followed" in result.error
    assert "/target" in result.error
    assert receiver.paths_hit() == ["/moved"]


async def test_retry_after_in_seconds_is_read(poster: HttpPoster, receiver: Receiver) -> None:
    result = await poster.post(receiver.url("/busy"), BODY, HEADERS, 5)
    assert (result.status_code, result.retry_after_s) == (503, 7.0)


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2026, 3, 1, 12, 2, 0, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(later, now.timestamp()) == 120.0
    assert retry_after_seconds("Sun, 01 Mar 2026 11:00:00 GMT", now.timestamp()) == 0.0
    assert retry_after_seconds("soon", now.timestamp()) is None
    assert retry_after_seconds("-5", now.timestamp()) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_loopback_is_refused_by_default_before_any_connection(
    strict_poster: HttpPoster, receiver: Receiver, host: str
) -> None:
    result = await strict_poster.post(receiver.url("/ok", host), BODY, HEADERS, 5)
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("refused address")
    assert receiver.hits == []


async def test_a_hostname_that_resolves_to_loopback_names_the_address(
    strict_poster: HttpPoster, receiver: Receiver
) -> None:
    result = await strict_poster.post(receiver.url("/ok", "localhost"), BODY, HEADERS, 5)
    assert result.error is not None
    assert "localhost resolves to" in result.error
    assert "127.0.0.1" in result.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_reached_when_private_addresses_are_allowed(
    poster: HttpPoster, receiver: Receiver, host: str
) -> None:
    result = await poster.post(receiver.url("/ok", host), BODY, HEADERS, 5)
    assert result.status_code == 200
    assert receiver.paths_hit() == ["/ok"]


async def test_an_allowed_cidr_opens_only_its_addresses(receiver: Receiver) -> None:
    listed = HttpPoster(AddressPolicy(allow_cidrs=parse_allow_cidrs("127.0.0.1/32")))
    try:
        reached = await listed.post(receiver.url("/ok"), BODY, HEADERS, 5)
        other = await listed.post(receiver.url("/ok", "127.0.0.2"), BODY, HEADERS, 5)
    finally:
        await listed.close()
    assert reached.status_code == 200
    assert other.error is not None
    assert other.error.startswith("refused address")


async def test_a_refused_connection_is_an_error_not_an_exception(poster: HttpPoster) -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        closed_port = probe.getsockname()[1]
    result = await poster.post(f"http://{HOST}:{closed_port}/hook", BODY, HEADERS, 5)
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith(f"cannot connect to {HOST}:{closed_port}")


async def test_a_header_that_cannot_be_sent_is_an_error_not_an_exception(
    poster: HttpPoster, receiver: Receiver
) -> None:
    bad = {**HEADERS, "X-Tenant": "acme\r\nX-Injected: 1"}
    result = await poster.post(receiver.url("/ok"), BODY, bad, 5)
    assert result.status_code is None
    assert result.error is not None
    assert all("X-Injected" not in headers for _, _, headers in receiver.hits)


async def test_the_poster_works_again_after_close(poster: HttpPoster, receiver: Receiver) -> None:
    assert (await poster.post(receiver.url("/ok"), BODY, HEADERS, 5)).status_code == 200
    await poster.close()
    assert (await poster.post(receiver.url("/ok"), BODY, HEADERS, 5)).status_code == 200
