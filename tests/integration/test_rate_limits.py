"""Per-project rate limits over real HTTP, felt by the next send; set and changed with the real CLI.

Only the test of the CLI itself pays for `wagate` processes; the others make their
limited project in the store directly.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.support import GatewayProcess, Tenant, make_tenant, run_cli

SEED_BODY: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "recipient": "US.13491208655302741918",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}


def limited_tenant(gateway: GatewayProcess, rate_limit: int) -> Tenant:
    """A project made by `wagate projects create --rate-limit`, with a sandbox number."""
    made = json.loads(
        run_cli(
            "projects",
            "create",
            "limited",
            "--rate-limit",
            str(rate_limit),
            "--json",
            database_url=gateway.database_url,
        ).stdout
    )
    assert made["rate_limit"] == rate_limit
    number = json.loads(
        run_cli(
            "numbers",
            "add",
            "--project",
            made["id"],
            "--phone-number-id",
            f"77{abs(hash(made['id'])) % 10**12}",
            "--json",
            database_url=gateway.database_url,
        ).stdout
    )
    return Tenant(made["id"], made["api_key"], number["phone_number_id"])


def send(gateway: GatewayProcess, tenant: Tenant) -> httpx.Response:
    return loopback.post(
        f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages",
        json=SEED_BODY,
        headers={"X-API-Key": tenant.api_key},
        timeout=10,
    )


def test_a_project_over_its_limit_gets_429_code_4_with_retry_after(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url, rate_limit=3)
    answers = [send(gateway, tenant) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-limit"] for a in answers] == ["3"] * 4
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    refused = answers[3]
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    error = refused.json()["error"]
    assert error["code"] == 4
    assert error["message"] == "(#4) Application request limit reached"
    assert error["is_transient"] is True
    assert error["fbtrace_id"] == refused.headers["x-fb-trace-id"]


def test_a_limited_project_does_not_slow_another(gateway: GatewayProcess, tenant: Tenant) -> None:
    limited = make_tenant(gateway.database_url, rate_limit=1)
    assert send(gateway, limited).status_code == 200
    assert send(gateway, limited).status_code == 429
    free = send(gateway, tenant)
    assert free.status_code == 200
    assert "x-ratelimit-limit" not in free.headers


# The CLI on SQLite only: setting and clearing a limit is the same store code on PostgreSQL,
# which tests/conformance/test_store_behaviour.py runs on both (and the 429s above do too).
@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
def test_the_limit_can_be_changed_and_cleared_with_the_cli(gateway: GatewayProcess) -> None:
    tenant = limited_tenant(gateway, 1)
    assert send(gateway, tenant).status_code == 200
    assert send(gateway, tenant).status_code == 429

    updated = run_cli(
        "projects",
        "update",
        tenant.project_id,
        "--no-rate-limit",
        "--json",
        database_url=gateway.database_url,
    )
    assert json.loads(updated.stdout)["rate_limit"] is None
    cleared = send(gateway, tenant)  # the gateway's auth cache is off in tests
    assert cleared.status_code == 200
    assert "x-ratelimit-limit" not in cleared.headers

    run_cli(
        "projects",
        "update",
        tenant.project_id,
        "--rate-limit",
        "60",
        database_url=gateway.database_url,
    )
    assert send(gateway, tenant).headers["x-ratelimit-limit"] == "60"
    listed = json.loads(
        run_cli("projects", "list", "--json", database_url=gateway.database_url).stdout
    )
    assert {p["id"]: p["rate_limit"] for p in listed}[tenant.project_id] == 60


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
def test_update_needs_exactly_one_of_its_options(gateway: GatewayProcess, tenant: Tenant) -> None:
    result = run_cli(
        "projects", "update", tenant.project_id, database_url=gateway.database_url, check=False
    )
    assert result.returncode != 0
    unknown = run_cli(
        "projects",
        "update",
        "prj_nothing",
        "--rate-limit",
        "5",
        database_url=gateway.database_url,
        check=False,
    )
    assert unknown.returncode == 1
    assert "no project" in unknown.stderr
