"""`wagate webhooks` as an operator uses it: real processes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import as_json, refused, run_all
from tests.support import database_url_for, dispose_database, fail_for_good, make_tenant, run_cli
from wagate.adapters.store.notify import SqlNotifications
from wagate.adapters.store.sql import SqlStore
from wagate.domain.notifications import WebhookEndpoint
from wagate.domain.notify_formats import mask_secret

pytestmark = pytest.mark.slow

URL = "https://hooks.example.com/wagate"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated SQLite file. The commands run the same store code on PostgreSQL,
    which tests/integration/test_notify_store.py and test_webhooks_api.py cover there;
    each `wagate` process costs ~0.5 s, so the CLI's own paths run once."""
    url = database_url_for("sqlite", tmp_path)
    yield url
    dispose_database(url)


def stored(database_url: str, webhook_id: str) -> WebhookEndpoint | None:
    """A webhook as the store opens it."""

    async def work() -> WebhookEndpoint | None:
        store = SqlStore.from_url(database_url)
        try:
            return await SqlNotifications(store.engine, store.secrets).get_endpoint(webhook_id)
        finally:
            await store.close()

    return asyncio.run(work())


def test_an_operator_adds_lists_updates_and_removes_a_webhook(database_url: str) -> None:
    tenant = make_tenant(database_url)
    pnid = tenant.phone_number_id
    added = run_cli(
        *("webhooks", "add", pnid, URL, "--event", "whatsapp.message.read"),
        *("--header", "X-Source=wagate"),
        database_url=database_url,
    )
    [webhook_id] = [word for word in added.stdout.split() if word.startswith("whk_")][:1]
    endpoint = stored(database_url, webhook_id)
    assert endpoint is not None
    assert endpoint.events == ("whatsapp.message.read",)
    assert endpoint.headers == {"X-Source": "wagate"}
    assert f"signing secret (shown once): {endpoint.secret}" in added.stdout

    listed, shown, table = run_all(
        [
            ["webhooks", "list", pnid, "--json"],
            ["webhooks", "show", webhook_id, "--json"],
            ["webhooks", "list", pnid],
        ],
        database_url,
    )
    [row] = as_json(listed)
    assert row == as_json(shown)
    assert row["secret_key"] == mask_secret(endpoint.secret)
    assert (row["url"], row["kind"], row["active"], row["paused"]) == (URL, "kapso", True, False)
    for output in (listed.stdout, shown.stdout, table.stdout):
        assert endpoint.secret not in output
    assert webhook_id in table.stdout
    assert "{" not in table.stdout, "a table, not a Python dict"

    updated = as_json(
        run_cli(
            *("webhooks", "update", webhook_id, "--kind", "standard", "--secret", "-"),
            *("--inactive", "--no-headers", "--json"),
            database_url=database_url,
            input=STANDARD_SECRET + "\n",
        )
    )
    assert updated["kind"] == "standard"
    assert updated["active"] is False
    assert updated["headers"] == {}
    assert updated["secret_key"] == STANDARD_SECRET
    rotated = run_cli(
        "webhooks", "update", webhook_id, "--rotate-secret", database_url=database_url
    )
    after = stored(database_url, webhook_id)
    assert after is not None
    assert after.previous_secret == STANDARD_SECRET
    assert f"signing secret (shown once): {after.secret}" in rotated.stdout

    run_cli("webhooks", "remove", webhook_id, database_url=database_url)
    assert stored(database_url, webhook_id) is None
    assert as_json(run_cli("webhooks", "list", pnid, "--json", database_url=database_url)) == []
    refused(
        run_cli("webhooks", "show", webhook_id, database_url=database_url, check=False), webhook_id
    )


def test_an_operator_tests_a_webhook_and_replays_its_dead_letters(database_url: str) -> None:
    tenant = make_tenant(database_url)
    created = as_json(
        run_cli("webhooks", "add", tenant.phone_number_id, URL, "--json", database_url=database_url)
    )
    webhook_id = created["id"]
    assert created["secret_key"] == stored(database_url, webhook_id).secret  # type: ignore[union-attr]
    queued = as_json(run_cli("webhooks", "test", webhook_id, "--json", database_url=database_url))
    assert fail_for_good(database_url, webhook_id) == [queued["delivery_id"]]

    dead, attempts, table = run_all(
        [
            ["webhooks", "deliveries", webhook_id, "--state", "dead", "--json"],
            ["webhooks", "attempts", webhook_id, "--json"],
            ["webhooks", "deliveries", webhook_id],
        ],
        database_url,
    )
    [letter] = as_json(dead)
    assert (letter["id"], letter["state"], letter["event"]) == (
        queued["delivery_id"],
        "dead",
        "whatsapp.webhook.test",
    )
    assert letter["data"]["phone_number_id"] == tenant.phone_number_id
    [attempt] = as_json(attempts)
    assert (attempt["status_code"], attempt["error"]) == (503, "HTTP 503")
    assert queued["delivery_id"] in table.stdout
    assert "dead" in table.stdout

    neither, both, unknown = run_all(
        [
            ["webhooks", "replay", webhook_id],
            ["webhooks", "replay", webhook_id, "--all", "--delivery", "evt_x"],
            ["webhooks", "replay", webhook_id, "--delivery", "evt_missing"],
        ],
        database_url,
    )
    refused(neither, "--all")
    refused(both, "--all")
    refused(unknown, "no dead delivery")
    replayed = run_cli(
        "webhooks", "replay", webhook_id, "--all", "--json", database_url=database_url
    )
    assert as_json(replayed) == {"webhook_id": webhook_id, "replayed": 1}

    paused = as_json(run_cli("webhooks", "pause", webhook_id, "--json", database_url=database_url))
    assert paused["paused"] is True
    assert fail_for_good(database_url, webhook_id) == []
    resumed = as_json(
        run_cli("webhooks", "resume", webhook_id, "--json", database_url=database_url)
    )
    assert resumed["paused"] is False
    assert fail_for_good(database_url, webhook_id) == [queued["delivery_id"]]


def test_webhooks_refuses_what_an_operator_must_correct(database_url: str) -> None:
    tenant = make_tenant(database_url)
    pnid = tenant.phone_number_id
    results = run_all(
        [
            ["webhooks", "add", pnid, "ftp://hooks.example.com/"],
            ["webhooks", "add", pnid, URL, "--kind", "svix"],
            ["webhooks", "add", pnid, URL, "--event", "whatsapp.message.bounced"],
            ["webhooks", "add", pnid, URL, "--header", "Content-Type=text/plain"],
            ["webhooks", "add", pnid, URL, "--header", "no-equals-sign"],
            ["webhooks", "add", pnid, URL, "--kind", "standard", "--secret", "x" * 20],
            ["webhooks", "add", "999", URL],
            ["webhooks", "update", "whk_missing", "--url", URL],
            ["webhooks", "deliveries", "whk_missing"],
        ],
        database_url,
    )
    expected = [
        "http:// or https://",
        "svix",
        "bounced",
        "set by wagate",
        "NAME=VALUE",
        "whsec_",
        "999",
        "whk_missing",
        "whk_missing",
    ]
    for result, words in zip(results, expected, strict=True):
        refused(result, words)
    assert as_json(run_cli("webhooks", "list", pnid, "--json", database_url=database_url)) == []


def test_webhook_commands_refuse_a_malformed_number_before_the_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    for result in run_all([["webhooks", "add", "abc", URL], ["webhooks", "list", "12a"]], url):
        refused(result, "digits only")
    assert not (tmp_path / "unused.db").exists()
