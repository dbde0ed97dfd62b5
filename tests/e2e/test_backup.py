"""`wagate backup`: a whole, consistent copy of a SQLite gateway taken while it accepts messages."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from tests.integration.test_send_endpoint import SEED_BODY
from tests.support import database_url_for, make_tenant, run_cli, running_gateway, wait_until

pytestmark = pytest.mark.slow


def test_a_backup_taken_while_the_gateway_writes_holds_every_message_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    url = database_url_for("sqlite", tmp_path)
    tenant = make_tenant(url)
    acknowledged: list[str] = []
    stop = threading.Event()
    with running_gateway(url, tmp_path / "gateway.log", WAGATE_WORKER="0") as gateway:
        send_url = (
            f"{gateway.base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages"
        )

        def keep_sending() -> None:
            with httpx.Client(headers={"X-API-Key": tenant.api_key}, timeout=10) as client:
                while not stop.is_set():
                    answer = client.post(send_url, json=SEED_BODY)
                    assert answer.status_code == 200, answer.text
                    acknowledged.append(answer.json()["messages"][0]["id"])

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            wait_until(lambda: len(acknowledged) >= 20, timeout=20, what="20 sends")
            before = list(acknowledged)
            result = run_cli("backup", str(tmp_path / "copy.db"), database_url=url)
            after = len(acknowledged)
        finally:
            stop.set()
            sender.join(20)
    assert after > len(before), "the gateway kept accepting during the backup"
    assert "integrity ok" in result.stdout
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in copy.execute("SELECT id FROM messages")}
    finally:
        copy.close()
    assert set(before) <= stored
    assert stored <= set(acknowledged)


def test_a_backup_does_not_overwrite_without_force_nor_invent_a_database(tmp_path: Path) -> None:
    url = database_url_for("sqlite", tmp_path)
    target = tmp_path / "copy.db"
    target.write_text("precious")
    refused = run_cli("backup", str(target), database_url=url, check=False)
    assert refused.returncode == 1
    assert "exists already" in refused.stderr
    assert target.read_text() == "precious"
    # An installation without WAGATE_SECRET_KEY keeps a generated key beside its database:
    # it goes with the copy, since without it the copy's access tokens are unreadable.
    Path(f"{url.split('///', 1)[1]}.key").write_text("generated-key\n")
    done = run_cli("backup", str(target), "--force", database_url=url)
    assert "copy.db.key" in done.stdout
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    key = tmp_path / "copy.db.key"
    assert key.read_text() == "generated-key\n"
    assert key.stat().st_mode & 0o777 == 0o600
    missing = tmp_path / "nowhere" / "wagate.db"
    absent = run_cli(
        "backup",
        str(tmp_path / "other.db"),
        database_url=f"sqlite+aiosqlite:///{missing}",
        check=False,
    )
    assert absent.returncode == 1
    assert "there is no database" in absent.stderr
    assert "Traceback" not in absent.stderr
    assert not missing.exists()
    assert not (tmp_path / "other.db").exists()


def test_on_postgresql_backup_points_to_pg_dump_in_one_line() -> None:
    result = run_cli(
        "backup",
        "/tmp/never-written.db",
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pg_dump" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not Path("/tmp/never-written.db").exists()
