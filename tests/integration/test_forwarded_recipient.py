"""What Meta receives: `to` as the E.164 digits the client was answered as `wa_id`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests import loopback
from tests.support import (
    database_url_for,
    dispose_database,
    free_port,
    make_tenant,
    running_gateway,
    wait_until,
)


class FakeMeta:
    """A Graph API on loopback that records every marketing_messages body it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []
        # The WABA's template list (None: answered 404, as a token without the permission
        # gets), and how long its listing takes.
        self.templates: list[dict[str, Any]] | None = None
        self.listing_delay_s = 0.0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _send(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        wamid = f"wamid.FAKE{len(self.bodies)}"
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    async def _templates(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.listing_delay_s)
        if self.templates is None:
            return web.json_response({"error": {"code": 100, "message": "no"}}, status=404)
        return web.json_response({"data": self.templates})

    async def _number(self, request: web.Request) -> web.Response:
        return web.json_response({"throughput": {"level": "STANDARD"}, "id": "1"})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{version}/{number}/marketing_messages", self._send)
        app.router.add_get("/{version}/{waba}/message_templates", self._templates)
        app.router.add_get("/{version}/{number}", self._number)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> FakeMeta:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = database_url_for("sqlite", tmp_path)
    yield url
    dispose_database(url)


def test_meta_is_sent_the_digits_we_answered_as_wa_id(sqlite_url: str, tmp_path: Path) -> None:
    tenant = make_tenant(sqlite_url, upstream="meta", access_token="token")
    typed = ["+44 7700 900123", "0044 7700 900123", "+1 (555) 123-4567"]
    with (
        FakeMeta() as meta,
        running_gateway(
            sqlite_url, tmp_path / "gateway.log", WAGATE_META_BASE_URL=meta.base_url
        ) as gateway,
    ):
        answered = []
        for to in typed:
            response = loopback.post(
                f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}"
                "/marketing_messages",
                json={
                    "messaging_product": "whatsapp",
                    "to": to,
                    "type": "template",
                    "template": {"name": "promo_template", "language": {"code": "en_US"}},
                },
                headers={"X-API-Key": tenant.api_key},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            answered.append(response.json()["contacts"][0]["wa_id"])
        wait_until(lambda: len(meta.bodies) >= len(typed), 15, what="every send reaching Meta")
    assert sorted(body["to"] for body in meta.bodies) == sorted(answered)
    assert sorted(answered) == ["15551234567", "447700900123", "447700900123"]
