"""The Graph client against the sandbox on loopback: sends, errors and the throughput tier."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from tests.integration.test_send_endpoint import body, send
from tests.support import (
    GatewayProcess,
    Tenant,
    database_url_for,
    free_port,
    make_tenant,
    running_gateway,
    sandbox_stats,
    sql,
    wait_until,
)
from wagate.adapters.sandbox import SandboxConfig, create_sandbox_app
from wagate.adapters.store.tables import messages
from wagate.adapters.upstream.embedded import EmbeddedSandboxUpstream
from wagate.adapters.upstream.graph import GraphClient
from wagate.domain.delivery import UpstreamResult

PAYLOAD: dict[str, object] = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "to": "447700900123",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}


async def test_the_tier_of_a_standard_number_is_80(gateway: GatewayProcess, tenant: Tenant) -> None:
    client = GraphClient(timeout_s=5)
    try:
        tier = await client.throughput(
            f"{gateway.base_url}/sandbox", "v23.0", tenant.phone_number_id, tenant.access_token
        )
    finally:
        await client.close()
    assert tier == 80


async def test_an_unreachable_upstream_has_no_tier_and_a_transient_network_error() -> None:
    client = GraphClient(timeout_s=2)
    try:
        tier = await client.throughput("http://127.0.0.1:9", "v23.0", "1", "token")
        result = await client.send(
            "http://127.0.0.1:9", "v23.0", "1", "token", json.dumps(PAYLOAD).encode()
        )
    finally:
        await client.close()
    assert tier is None
    assert result.error_code == -1
    assert not result.ok


async def test_a_send_comes_back_with_metas_wamid(gateway: GatewayProcess, tenant: Tenant) -> None:
    client = GraphClient(timeout_s=5)
    try:
        result = await client.send(
            f"{gateway.base_url}/sandbox",
            "v23.0",
            tenant.phone_number_id,
            tenant.access_token,
            json.dumps(PAYLOAD).encode(),
        )
    finally:
        await client.close()
    assert result.ok
    assert result.wamid is not None
    assert result.wamid.startswith("wamid.")
    assert result.message_status == "accepted"


async def test_a_graph_error_keeps_metas_code(gateway: GatewayProcess, tenant: Tenant) -> None:
    client = GraphClient(timeout_s=5)
    body = {**PAYLOAD, "template": {"name": "paused_promo", "language": {"code": "en_US"}}}
    try:
        result = await client.send(
            f"{gateway.base_url}/sandbox",
            "v23.0",
            tenant.phone_number_id,
            tenant.access_token,
            json.dumps(body).encode(),
        )
    finally:
        await client.close()
    assert (result.error_code, result.http_status) == (132015, 400)
    assert result.error_details


# ---- the embedded sandbox, called in process -------------------------------------------

# (a name, what is sent): each answered in process as over HTTP, error codes included.
CASES: list[tuple[str, dict[str, object] | bytes]] = [
    ("a good send", PAYLOAD),
    (
        "a paused template",
        {**PAYLOAD, "template": {"name": "paused_promo", "language": {"code": "en_US"}}},
    ),
    (
        "no such template",
        {**PAYLOAD, "template": {"name": "no_such", "language": {"code": "en_US"}}},
    ),
    ("no recipient", {k: v for k, v in PAYLOAD.items() if k != "to"}),
    ("not JSON", b"{not json"),
    ("a body over 64 KB", json.dumps({**PAYLOAD, "pad": "x" * 70_000}).encode()),
]


def _essentials(result: UpstreamResult) -> tuple[object, ...]:
    return (result.ok, result.error_code, result.http_status, result.message_status)


async def test_the_embedded_sandbox_answers_in_process_as_it_answers_over_http(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    # Over HTTP: the gateway's embedded sandbox. In process: a sandbox of the same
    # defaults in this process, reached through the wrapper, at an address where
    # nothing listens (an HTTP send there could only fail with a network error).
    sandbox = create_sandbox_app(SandboxConfig(), prefix="/sandbox")
    closed = f"http://127.0.0.1:{free_port()}/sandbox"

    async def served() -> bool:
        return True

    client = GraphClient(timeout_s=5)
    embedded = EmbeddedSandboxUpstream(GraphClient(timeout_s=5), closed, sandbox, served)
    try:
        for name, case in CASES:
            payload = case if isinstance(case, bytes) else json.dumps(case).encode()
            over_http = await client.send(
                f"{gateway.base_url}/sandbox",
                "v23.0",
                tenant.phone_number_id,
                tenant.access_token,
                payload,
            )
            in_process = await embedded.send(
                closed, "v23.0", tenant.phone_number_id, "in-process-token", payload
            )
            assert _essentials(in_process) == _essentials(over_http), name
            assert bool(in_process.wamid) == bool(over_http.wamid), name
            assert (in_process.error_details is None) == (over_http.error_details is None), name
        # A token other than the number's owner is refused in process as over HTTP (190).
        refused = await embedded.send(
            closed, "v23.0", tenant.phone_number_id, "another-token", json.dumps(PAYLOAD).encode()
        )
        assert (refused.error_code, refused.http_status) == (190, 401)
        # Every send reached the in-process sandbox and was counted there, but the body
        # over 64 KB (refused unread, as over HTTP); the refused token's send is counted.
        assert sandbox.state.totals.requests == len(CASES) - 1 + 1
    finally:
        await client.close()
        await embedded.close()
        await sandbox.aclose()


async def test_another_address_is_sent_over_http() -> None:
    sandbox = create_sandbox_app(SandboxConfig(), prefix="/sandbox")

    async def served() -> bool:
        return True

    embedded = EmbeddedSandboxUpstream(
        GraphClient(timeout_s=2), "http://127.0.0.1:9/sandbox", sandbox, served
    )
    try:
        result = await embedded.send(
            "http://127.0.0.1:9/other", "v23.0", "1", "token", json.dumps(PAYLOAD).encode()
        )
    finally:
        await embedded.close()
    assert result.error_code == -1  # the network error of an HTTP send to a closed port
    assert sandbox.state.totals.requests == 0


async def test_a_sandbox_not_served_is_not_called_in_process() -> None:
    sandbox = create_sandbox_app(SandboxConfig(), prefix="/sandbox")

    async def not_served() -> bool:
        return False

    closed = f"http://127.0.0.1:{free_port()}/sandbox"
    embedded = EmbeddedSandboxUpstream(GraphClient(timeout_s=2), closed, sandbox, not_served)
    try:
        result = await embedded.send(closed, "v23.0", "1", "token", json.dumps(PAYLOAD).encode())
    finally:
        await embedded.close()
    assert result.error_code == -1
    assert sandbox.state.totals.requests == 0


def test_wagate_serve_and_its_own_sandbox_talk_without_http(tmp_path: Path) -> None:
    # The public URL names a port where nothing listens: the worker's sends to the
    # embedded sandbox, and the sandbox's status webhooks back, can only arrive if
    # they are handed over in process.
    url = database_url_for("sqlite", tmp_path)
    closed = f"http://127.0.0.1:{free_port()}"
    with running_gateway(url, tmp_path / "gateway.log", WAGATE_PUBLIC_URL=closed) as gateway:
        tenant = make_tenant(url)
        response = send(gateway, tenant, body())
        assert response.status_code == 200, response.text
        message_id = response.json()["messages"][0]["id"]

        def forwarded() -> str | None:
            [row] = sql(url, select(messages.c.upstream_wamid).where(messages.c.id == message_id))
            return str(row.upstream_wamid) if row.upstream_wamid else None

        assert wait_until(forwarded, 10).startswith("wamid.")

        def read() -> str | None:
            [row] = sql(url, select(messages.c.status).where(messages.c.id == message_id))
            return str(row.status) if row.status == "read" else None

        assert wait_until(read, 10) == "read"  # sent, delivered, read: signed and ingested
        stats = sandbox_stats(f"{gateway.base_url}/sandbox")
        assert stats["numbers"][tenant.phone_number_id]["accepted"] == 1
        assert stats["webhooks"]["failed_posts"] == stats["webhooks"]["retries"] == 0
    assert "UPSTREAM UNREACHABLE" not in gateway.log_text()
    assert "webhook POST" not in gateway.log_text()
