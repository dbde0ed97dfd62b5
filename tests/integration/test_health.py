"""Health of real processes: /readyz of `wagate serve` and of `wagate worker --health-port`,
and the refusal to start on a schema that is not this wagate's."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from tests import loopback
from tests.support import (
    PG_ADMIN_URL,
    WAGATE,
    ProcessGroup,
    database_url_for,
    dispose_database,
    free_port,
    make_tenant,
    run_cli,
    running_gateway,
    sql,
    wait_until,
)
from wagate.adapters.store.engine import create_engine
from wagate.adapters.store.migrate import HEAD
from wagate.adapters.store.tables import message_statuses, messages

# Readiness caches its database check for a second; a few seconds covers a loaded machine.
DEADLINE_S = 10.0


def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    response = loopback.get(f"{base_url}/readyz", timeout=10)
    return response.status_code, response.json()


def becomes(base_url: str, status: int) -> dict[str, Any]:
    """The /readyz body once it answers `status`."""

    def answer() -> dict[str, Any] | None:
        code, body = readyz(base_url)
        return body if code == status else None

    return wait_until(answer, DEADLINE_S, interval=0.1, what=f"/readyz {status}")


async def _admin(statement: str) -> None:
    engine = create_engine(PG_ADMIN_URL)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def set_revision(url: str, revision: str) -> None:
    sql(url, text(f"UPDATE alembic_version SET version_num = '{revision}'"))


def add_settled_message(url: str, message_id: str, status: str, days_ago: int) -> None:
    """A message Meta reported `status` of that many days ago, with that status stored."""
    tenant = make_tenant(url)
    at = int(time.time() * 1000) - days_ago * 86_400_000
    wamid = f"wamid.{message_id}"
    sql(
        url,
        insert(messages).values(
            id=message_id, project_id=tenant.project_id, phone_number_id=tenant.phone_number_id,
            recipient_input="+447700900123", recipient="447700900123", recipient_kind="phone",
            request="{}", template_name="promo", template_language="en", status=status,
            state="forwarded", created_at=at, updated_at=at, due_at=at, expires_at=at,
            upstream_wamid=wamid,
        ),
    )  # fmt: skip
    status_row = {"upstream_wamid": wamid, "status": status, "timestamp": at, "received_at": at}
    sql(url, insert(message_statuses).values(**status_row))


def stored_wamids(url: str) -> set[str]:
    """The wamids of the stored messages and of the stored statuses."""
    found = {row[0] for row in sql(url, select(messages.c.upstream_wamid))}
    return found | {row[0] for row in sql(url, select(message_statuses.c.upstream_wamid))}


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_gateway_prunes_old_final_messages_and_its_readyz_fails_while_the_database_is_down(
    backend: str, tmp_path: Path
) -> None:
    url = database_url_for(backend, tmp_path)
    # The gateway's worker prunes at start what retention (90 days) lets go, and only that.
    add_settled_message(url, "old-read", "read", days_ago=91)
    add_settled_message(url, "young-read", "read", days_ago=89)
    add_settled_message(url, "old-delivered", "delivered", days_ago=91)
    try:
        with running_gateway(url, tmp_path / "gateway.log") as gateway:
            wait_until(
                lambda: "wamid.old-read" not in stored_wamids(url), DEADLINE_S, what="pruning"
            )
            assert stored_wamids(url) == {"wamid.young-read", "wamid.old-delivered"}
            body = becomes(gateway.base_url, 200)  # no key needed
            assert body == {
                "status": "ready",
                "checks": {"database": "ok", "schema": "ok", "worker": "ok"},
                "failed": [],
            }
            if backend == "sqlite":
                path = Path(url.split("///", 1)[1])
                path.rename(path.with_suffix(".away"))
                down = becomes(gateway.base_url, 503)
                path.with_suffix(".away").rename(path)
            else:
                name = url.rsplit("/", 1)[1]
                asyncio.run(_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                asyncio.run(
                    _admin(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    )
                )
                down = becomes(gateway.base_url, 503)
                asyncio.run(_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            assert down["status"] == "unavailable"
            assert "database" in down["failed"]
            assert "postgres" not in str(down)
            assert str(tmp_path) not in str(down)
            becomes(gateway.base_url, 200)

            set_revision(url, "0005")  # as if it were behind this wagate (restored from a backup)
            behind = becomes(gateway.base_url, 503)
            assert behind["failed"] == ["schema"]
            assert "wagate migrate" in behind["checks"]["schema"]
            set_revision(url, HEAD)
            becomes(gateway.base_url, 200)
    finally:
        dispose_database(url)


def test_a_standalone_worker_serves_its_health_and_its_port_is_its_own(tmp_path: Path) -> None:
    url = database_url_for("sqlite", tmp_path)
    port = free_port()
    env = {**os.environ, "WAGATE_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    worker = ProcessGroup(
        [WAGATE, "worker", "--health-port", str(port)], env, tmp_path / "worker.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        worker.wait_until_up(f"{base}/healthz")
        assert loopback.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        body = becomes(base, 200)
        assert body["checks"] == {"database": "ok", "schema": "ok", "worker": "ok"}
        assert f"health: http://127.0.0.1:{port}" in worker.log_text()

        second = run_cli(
            "worker", database_url=url, check=False, env={"WAGATE_WORKER_HEALTH_PORT": str(port)}
        )
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert str(port) in lines[0]
        assert "in use" in lines[0]
        assert "error: error" not in lines[0]
    finally:
        worker.stop()
    assert worker.process.returncode == 0, worker.log_text()[-2000:]


@pytest.mark.parametrize(
    ("command", "revision"),
    [(["worker"], "0005"), (["serve", "--port", "0"], "0999"), (["projects", "list"], "0999")],
)
def test_a_process_refuses_to_start_on_a_schema_it_does_not_know(
    tmp_path: Path, command: list[str], revision: str
) -> None:
    url = database_url_for("sqlite", tmp_path)
    set_revision(url, revision)  # 0005: behind (the previous release); 0999: a newer one's
    refused = run_cli(*command, database_url=url, check=False)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert revision in lines[0]
    assert "wagate migrate" in lines[0]
