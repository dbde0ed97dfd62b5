"""`paging.next` behind a TLS reverse proxy on the same machine is the URL the client used."""

from __future__ import annotations

from pathlib import Path

from tests import loopback
from tests.integration.test_send_endpoint import SEED_BODY, send
from tests.support import GatewayProcess, Tenant, free_port, run_cli


def test_paging_links_use_the_forwarded_scheme_and_host(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    for _ in range(2):
        assert send(gateway, tenant, SEED_BODY).status_code == 200
    listing = f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages"
    key = {"X-API-Key": tenant.api_key}
    proxied = loopback.get(
        listing,
        params={"limit": 1},
        headers={**key, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "wa.example.com"},
        timeout=10,
    )
    assert proxied.status_code == 200, proxied.text
    link = proxied.json()["paging"]["next"]
    path = f"/meta/whatsapp/v24.0/{tenant.phone_number_id}/messages?"
    assert link.startswith(f"https://wa.example.com{path}"), link
    # The proxy maps the public URL back to the gateway: the link reads the next page.
    following = loopback.get(link.replace("https://wa.example.com", gateway.base_url), headers=key)
    assert following.status_code == 200
    assert len(following.json()["data"]) == 1
    direct = loopback.get(listing, params={"limit": 1}, headers=key, timeout=10)
    assert direct.json()["paging"]["next"].startswith(f"{gateway.base_url}{path}")


def test_a_bad_trusted_proxy_stops_serve_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--port",
        str(free_port()),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'wagate.db'}",
        env={"WAGATE_TRUSTED_PROXIES": "127.0.0.1,proxy.lan"},
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "WAGATE_TRUSTED_PROXIES: 'proxy.lan'" in lines[0]
    assert not (tmp_path / "wagate.db").exists()
