"""The `wagate` command line as an operator uses it: real processes (migrate on SQLite and
PostgreSQL, the rest on SQLite)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.integration.test_send_endpoint import SEED_BODY
from tests.support import (
    PG_HOST,
    _admin_sql,
    database_url_for,
    dispose_database,
    make_tenant,
    require_postgres,
    run_cli,
    running_gateway,
)
from wagate.adapters.store.sql import SqlStore

pytestmark = pytest.mark.slow


def run_all(commands: list[list[str]], database_url: str) -> list[subprocess.CompletedProcess[str]]:
    """Run independent CLI commands side by side (each process costs about a second)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(run_cli, *command, database_url=database_url, check=False)
            for command in commands
        ]
        return [future.result() for future in futures]


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a successful `--json` command printed."""
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Assert a command failed cleanly, saying `words`; return what it printed."""
    output = result.stderr + result.stdout
    assert result.returncode != 0, output
    assert "Traceback" not in output
    for word in words:
        assert word in output, output
    return output


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated SQLite file. What these commands store (projects, keys, numbers)
    is the same store code on PostgreSQL, which tests/conformance/test_store_behaviour.py
    runs on both; `migrate` below still runs on both, and each `wagate` process costs
    ~0.5 s, so the CLI's own paths run once."""
    url = database_url_for("sqlite", tmp_path)
    yield url
    dispose_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet: a new SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    require_postgres()
    name = f"wagate_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{name}"
    yield url
    dispose_database(url)


def projects_in(database_url: str) -> list[str]:
    """Project names straight from the store."""

    async def work() -> list[str]:
        store = SqlStore.from_url(database_url)
        try:
            return [project.name for project in await store.list_projects()]
        finally:
            await store.close()

    return asyncio.run(work())


# ---- help and argument errors (no database needed) ---------------------------------


def test_the_installed_wagate_prints_help_without_touching_the_database(tmp_path: Path) -> None:
    """The console script itself, as an operator types it (every command's help is checked
    in process by tests/unit/test_cli_help.py)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    top, leaf = run_all([["--help"], ["numbers", "add", "--help"]], url)
    for result in (top, leaf):
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout
        assert "Traceback" not in result.stdout + result.stderr
        assert "wagate " in result.stdout.split("Example", 1)[1]
    assert "numbers" in top.stdout
    assert "--phone-number-id" in leaf.stdout
    assert not (tmp_path / "unused.db").exists(), "help must not touch the database"


def test_a_phone_number_id_that_is_not_digits_is_refused_before_the_database(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    results = run_all(
        [
            ["numbers", "add", "--project", "prj_x", "--phone-number-id", "abc"],
            ["numbers", "show", "12a"],
            ["numbers", "update", "abc", "--mps", "2"],
            ["numbers", "remove", "x"],
        ],
        url,
    )
    for result in results:
        refused(result, "digits only")
    assert not (tmp_path / "unused.db").exists()


def test_an_unknown_upstream_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    result = run_cli(
        *("numbers", "add", "--project", "prj_x", "--phone-number-id", "1"),
        *("--upstream", "other"),
        database_url=url,
        check=False,
    )
    refused(result, "--upstream", "other")


# ---- migrate -----------------------------------------------------------------------


def test_migrate_prepares_an_empty_database_and_can_run_again(empty_database_url: str) -> None:
    first = run_cli("migrate", database_url=empty_database_url)
    assert "migrated" in first.stdout
    assert projects_in(empty_database_url) == []
    make_tenant(empty_database_url)
    run_cli("migrate", database_url=empty_database_url)
    assert projects_in(empty_database_url) == ["test"]


# ---- projects, keys and numbers ----------------------------------------------------


def test_an_operator_sets_up_a_project_and_its_keys_work_until_revoked(
    database_url: str, tmp_path: Path
) -> None:
    project = as_json(
        run_cli("projects", "create", "Acme Shoes", "--json", database_url=database_url)
    )
    assert set(project) == {"id", "name", "api_key", "rate_limit"}
    assert project["rate_limit"] is None  # no limit unless asked for
    assert project["name"] == "Acme Shoes"
    first_key = project["api_key"]

    phone_number_id = str(uuid.uuid4().int % 10**15)
    added, created = run_all(
        [
            [
                *("numbers", "add", "--project", project["id"], "--phone-number-id"),
                *(phone_number_id, "--waba-id", "555000111", "--upstream", "sandbox"),
                *("--mps", "20", "--json"),
            ],
            ["keys", "create", "--project", project["id"], "--json"],
        ],
        database_url,
    )
    assert as_json(added) == {
        "phone_number_id": phone_number_id,
        "waba_id": "555000111",
        "project_id": project["id"],
        "upstream": "sandbox",
        "mps": 20,
    }
    second = as_json(created)
    assert second["api_key"].startswith("wg_")
    assert second["api_key"] != first_key

    send_url = f"/meta/whatsapp/v24.0/{phone_number_id}/marketing_messages"
    with running_gateway(database_url, tmp_path / "gateway.log") as gateway:

        def send_with(key: str) -> httpx.Response:
            return loopback.post(
                f"{gateway.base_url}{send_url}", json=SEED_BODY, headers={"X-API-Key": key}
            )

        assert send_with(first_key).status_code == 200
        assert send_with(second["api_key"]).status_code == 200

        run_cli("keys", "revoke", second["id"], database_url=database_url)
        revoked = send_with(second["api_key"])
        assert revoked.status_code == 401
        assert revoked.json()["error"]["code"] == 190
        assert send_with(first_key).status_code == 200

    listed_json, listed_table, again = run_all(
        [
            ["keys", "list", "--project", project["id"], "--json"],
            ["keys", "list", "--project", project["id"]],
            ["keys", "revoke", second["id"]],
        ],
        database_url,
    )
    keys = {row["id"]: row for row in as_json(listed_json)}
    assert len(keys) == 2
    assert second["id"] in keys
    assert keys[second["id"]]["revoked_at"] is not None
    assert [row["revoked_at"] for row in keys.values()].count(None) == 1
    for row in keys.values():
        assert set(row) == {"id", "prefix", "label", "created_at", "revoked_at"}
        assert first_key.startswith(row["prefix"]) or second["api_key"].startswith(row["prefix"])
        assert len(row["prefix"]) < len(first_key) // 2
    for output in (listed_json.stdout, listed_table.stdout):
        assert first_key not in output
        assert second["api_key"] not in output
    [revoked_line] = [line for line in listed_table.stdout.splitlines() if second["id"] in line]
    assert "yes" in revoked_line
    refused(again, second["id"])


def test_numbers_add_refuses_what_an_operator_must_correct(database_url: str) -> None:
    tenant = make_tenant(database_url)
    add = ["numbers", "add", "--project", tenant.project_id, "--phone-number-id"]
    meta_args = ("--upstream", "meta", "--waba-id", "44", "--access-token", "EAAG-x")
    unknown_project, duplicate, meta_without_token, zero_mps, meta = run_all(
        [
            ["numbers", "add", "--project", "prj_nope", "--phone-number-id", "1"],
            [*add, tenant.phone_number_id],
            [*add, "2", "--upstream", "meta"],
            [*add, "3", "--mps", "0"],
            [*add, "4", *meta_args, "--json"],
        ],
        database_url,
    )
    refused(unknown_project, "prj_nope")
    refused(duplicate, tenant.phone_number_id)
    refused(meta_without_token, "--access-token")
    refused(zero_mps, "--mps")
    added = as_json(meta)
    assert set(added) == {"phone_number_id", "waba_id", "project_id", "upstream", "mps"}
    assert added["upstream"] == "meta"
    assert "EAAG-x" not in meta.stdout


def test_an_operator_lists_shows_updates_and_removes_numbers(database_url: str) -> None:
    tenant = make_tenant(database_url)
    pnid = tenant.phone_number_id
    added, listed, shown = run_all(
        [
            ["numbers", "add", "--project", tenant.project_id, "--phone-number-id", "5550100"],
            ["numbers", "list", "--project", tenant.project_id, "--json"],
            ["numbers", "show", pnid],
        ],
        database_url,
    )
    assert added.returncode == 0, added.stderr
    assert "5550100" in added.stdout
    assert "{" not in added.stdout, "a table, not a Python dict"
    # The listing may run before or after the add: the tenant's number is there either way.
    assert pnid in {n["phone_number_id"] for n in as_json(listed)}
    assert pnid in shown.stdout
    assert "mps" in shown.stdout

    updated = as_json(
        run_cli(
            *("numbers", "update", pnid, "--mps", "20", "--access-token", "-", "--json"),
            database_url=database_url,
            input="sbx_rotated\n",
        )
    )
    assert updated["mps"] == 20
    assert "sbx_rotated" not in json.dumps(updated)
    nothing, gone = run_all(
        [["numbers", "update", pnid], ["numbers", "show", "999999"]], database_url
    )
    refused(nothing, "nothing to change")
    refused(gone, "999999")

    run_cli("numbers", "remove", "5550100", database_url=database_url)
    left = as_json(run_cli("numbers", "list", "--json", database_url=database_url))
    assert "5550100" not in {n["phone_number_id"] for n in left}
