"""`wagate templates` as an operator uses it: real processes, a real gateway and its sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import GatewayProcess, database_url_for, dispose_database, make_tenant, run_cli

pytestmark = pytest.mark.slow


def test_an_operator_syncs_lists_and_shows_a_wabas_templates(tmp_path: Path) -> None:
    url = database_url_for("sqlite", tmp_path)
    gateway = GatewayProcess(url, tmp_path / "gateway.log")
    gateway.env["WAGATE_PUBLIC_URL"] = gateway.base_url
    gateway.start()
    try:
        pnid = make_tenant(url).phone_number_id
        env = {"WAGATE_PUBLIC_URL": gateway.base_url}
        never = run_cli("templates", "list", pnid, database_url=url, env=env)
        assert "never listed" in never.stdout
        synced = run_cli("templates", "sync", pnid, "--json", database_url=url, env=env)
        assert json.loads(synced.stdout)["templates"] >= 6
        listed = json.loads(
            run_cli("templates", "list", pnid, "--json", database_url=url, env=env).stdout
        )
        names = {t["name"] for t in listed}
        assert {"promo_template", "seasonal_promo", "paused_promo"} <= names
        paused = run_cli(
            "templates", "list", pnid, "--status", "paused", "--json", database_url=url
        )
        assert [t["name"] for t in json.loads(paused.stdout)] == ["paused_promo"]
        table = run_cli("templates", "list", pnid, database_url=url)
        assert "seasonal_promo" in table.stdout
        assert "listed from the upstream at" in table.stdout
        [shown] = json.loads(
            run_cli("templates", "show", pnid, "seasonal_promo", database_url=url).stdout
        )
        assert shown["components"][1]["text"].startswith("Hi {{1}}")
        missing = run_cli("templates", "show", pnid, "nope", database_url=url, check=False)
        assert missing.returncode == 1
        assert "no template 'nope'" in missing.stderr
        assert "Traceback" not in missing.stderr
        unknown = run_cli("templates", "sync", "999", database_url=url, check=False)
        assert unknown.returncode == 1
        assert "no phone number '999'" in unknown.stderr
    finally:
        gateway.stop()
        dispose_database(url)


def test_a_sync_whose_upstream_is_down_says_so_in_one_line(tmp_path: Path) -> None:
    url = database_url_for("sqlite", tmp_path)
    try:
        pnid = make_tenant(url).phone_number_id
        failed = run_cli(
            "templates",
            "sync",
            pnid,
            database_url=url,
            env={"WAGATE_PUBLIC_URL": "http://127.0.0.1:9"},
            check=False,
        )
        assert failed.returncode == 1
        assert "did not list the templates" in failed.stderr
        assert "running gateway" in failed.stderr
        assert "Traceback" not in failed.stderr
    finally:
        dispose_database(url)
