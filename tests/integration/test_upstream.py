"""The Graph client against the sandbox on loopback: sends, errors and the throughput tier."""

from __future__ import annotations

import json

from tests.support import GatewayProcess, Tenant
from wagate.adapters.upstream.graph import GraphClient

PAYLOAD = {
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
