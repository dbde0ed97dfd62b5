"""Starting and running wagate as an operator does: real processes, real ports, real databases.

A mistake at start (a URL, a database that is down or missing, a bad setting, a data
directory that cannot be written, a port taken) is one line and a non-zero exit, with
the traceback only under --debug; the default database is found by an absolute path;
a standalone worker says what it does with each send.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_delivery import accept, read_message, unique_phone
from tests.support import (
    PG_HOST,
    WAGATE,
    GatewayProcess,
    ProcessGroup,
    database_url_for,
    free_port,
    make_tenant,
    require_postgres,
    wait_until,
)

pytestmark = pytest.mark.slow

# The variables a test's own environment may carry that would change what is tested.
CLEARED = ("WAGATE_DATABASE_URL", "WAGATE_DATA_DIR", "WAGATE_DEBUG", "WAGATE_PUBLIC_URL")


def wagate(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in `cwd`, with `env` over a test environment that names no database."""
    base = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return subprocess.run(
        [WAGATE, *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Assert a clean refusal: non-zero, exactly one line on stderr naming `words`."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    [line] = lines
    assert line.startswith("error: "), line
    for word in words:
        assert word in line, line
    return line


def run_side_by_side(
    runs: list[tuple[list[str], dict[str, str]]], cwd: Path
) -> list[subprocess.CompletedProcess[str]]:
    """Independent CLI runs at once (each process costs about a second)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(wagate, *args, cwd=cwd, env=env) for args, env in runs]
        return [future.result() for future in futures]


# ---- a port already in use -----------------------------------------------------------


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port listened on the way granian listens (SO_REUSEPORT): without a check,
    a second server would bind beside it and take half its connections."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize("command", ["serve", "sandbox"])
def test_a_server_on_a_port_in_use_exits_with_one_line_naming_the_port(
    command: str, tmp_path: Path
) -> None:
    with taken_port() as port:
        result = wagate(
            command,
            "--port",
            str(port),
            cwd=tmp_path,
            env={"WAGATE_DATA_DIR": str(tmp_path / "data")},
        )
    one_line_error(result, str(port), "already in use", "--port")
    assert not (tmp_path / "data").exists(), "refused before touching the database"


# ---- the data directory ------------------------------------------------------------------


def test_the_default_database_is_found_by_its_absolute_path_not_made_anew_elsewhere(
    tmp_path: Path,
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    migrated = wagate("migrate", cwd=home)
    assert migrated.returncode == 0, migrated.stderr
    database = home / "data" / "wagate.db"
    assert f"sqlite+aiosqlite:///{database}" in migrated.stdout  # absolute, and printed
    created = wagate("projects", "create", "Acme", "--json", cwd=home)
    assert created.returncode == 0, created.stderr

    lost = wagate("projects", "list", cwd=elsewhere)
    one_line_error(lost, str(elsewhere / "data" / "wagate.db"), "WAGATE_DATA_DIR")
    assert not (elsewhere / "data").exists(), "no new, empty database"

    # A relative WAGATE_DATA_DIR is taken from where the command runs.
    found = wagate("projects", "list", cwd=elsewhere, env={"WAGATE_DATA_DIR": "../home/data"})
    assert found.returncode == 0, found.stderr
    assert "Acme" in found.stdout


# ---- startup and configuration mistakes ------------------------------------------------


def pg_url(database: str, *, port: int = 5432, driver: str = "+asyncpg") -> str:
    """A PostgreSQL URL on the test server (or on `port`)."""
    return f"postgresql{driver}://postgres@{PG_HOST}:{port}/{database}"


def mistakes(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str], tuple[str, ...]]]:
    """Each mistake: the command that meets it, its environment, what its line must say."""
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    missing_db = f"wagate_missing_{uuid.uuid4().hex[:8]}"
    return {
        "migrate before the PostgreSQL database exists": (
            ["migrate"],
            {"WAGATE_DATABASE_URL": pg_url(missing_db)},
            (missing_db, "does not exist", "wagate migrate"),
        ),
        "postgresql:// without +asyncpg": (
            ["projects", "list"],
            {"WAGATE_DATABASE_URL": pg_url(missing_db, driver="")},
            (missing_db, "does not exist"),
        ),
        "a scheme wagate does not know": (
            ["worker"],
            {"WAGATE_DATABASE_URL": "mysql://root@127.0.0.1/wagate"},
            ("mysql", "postgresql+asyncpg://"),
        ),
        "not a URL": (
            ["keys", "list", "--project", "prj_x"],
            {"WAGATE_DATABASE_URL": "wagate.db"},
            ("WAGATE_DATABASE_URL",),
        ),
        "the database down": (
            ["serve", "--port", str(free_port())],
            {"WAGATE_DATABASE_URL": pg_url("test", port=free_port())},
            ("cannot reach the database", "is it running"),
        ),
        "WAGATE_SQLITE_SYNCHRONOUS=bogus": (
            ["numbers", "add", "--project", "prj_x", "--phone-number-id", "1"],
            {"WAGATE_SQLITE_SYNCHRONOUS": "bogus", "WAGATE_DATA_DIR": str(tmp_path / "d1")},
            ("WAGATE_SQLITE_SYNCHRONOUS", "bogus", "FULL"),
        ),
        "a number setting that is not a number": (
            ["worker"],
            {"WAGATE_LEASE_SECONDS": "a minute", "WAGATE_DATA_DIR": str(tmp_path / "d2")},
            ("WAGATE_LEASE_SECONDS", "a minute"),
        ),
        "a sandbox setting that is not a number": (
            ["sandbox", "--port", str(free_port())],
            {"WAGATE_SANDBOX_MPS": "fast"},
            ("WAGATE_SANDBOX_MPS", "fast"),
        ),
        "a data directory that cannot be made": (
            ["serve", "--port", str(free_port())],
            {"WAGATE_DATA_DIR": str(not_a_dir / "data")},
            ("data directory", str(not_a_dir / "data"), "WAGATE_DATA_DIR"),
        ),
    }


def test_each_startup_mistake_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    require_postgres()
    cases = mistakes(tmp_path)
    results = run_side_by_side([(args, env) for args, env, _ in cases.values()], tmp_path)
    for (name, (_, _, words)), result in zip(cases.items(), results, strict=True):
        try:
            one_line_error(result, *words)
        except AssertionError as failure:
            raise AssertionError(f"{name}: {failure}") from None
    assert not (tmp_path / "d1").exists()


def test_debug_shows_the_traceback_of_a_startup_mistake(tmp_path: Path) -> None:
    require_postgres()
    missing = pg_url(f"wagate_missing_{uuid.uuid4().hex[:8]}")
    flag, variable, setting = run_side_by_side(
        [
            (["--debug", "migrate"], {"WAGATE_DATABASE_URL": missing}),
            (["projects", "list"], {"WAGATE_DATABASE_URL": missing, "WAGATE_DEBUG": "1"}),
            (["--debug", "migrate"], {"WAGATE_SQLITE_SYNCHRONOUS": "bogus"}),
        ],
        tmp_path,
    )
    for result in (flag, variable, setting):
        assert result.returncode == 1, result.stderr
        assert "Traceback (most recent call last)" in result.stderr
        # The one line still ends the output: the traceback is extra, not instead.
        assert result.stderr.splitlines()[-1].startswith("error: "), result.stderr
    assert "does not exist" in flag.stderr.splitlines()[-1]


# ---- a standalone worker says what happened ----------------------------------------------


def test_a_standalone_worker_logs_its_start_each_retry_a_dead_upstream_and_its_stop(
    tmp_path: Path,
) -> None:
    url = database_url_for("sqlite", tmp_path)
    tenant = make_tenant(url)
    # The gateway accepts; only the standalone workers below deliver.
    gateway = GatewayProcess(url, tmp_path / "gateway.log", WAGATE_WORKER="0").start()
    try:
        # The sandbox refuses a message to a number ending 9500 twice, then accepts it.
        message_id = accept(gateway, tenant, to=unique_phone("9500"))
        worker_env = {
            **{k: v for k, v in os.environ.items() if k not in CLEARED},
            "WAGATE_DATABASE_URL": url,
            "WAGATE_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }

        # First beside a wrong address: nothing listens there.
        dead = f"http://127.0.0.1:{free_port()}/sandbox"
        lost = ProcessGroup(
            [WAGATE, "worker"], {**worker_env, "WAGATE_SANDBOX_URL": dead}, tmp_path / "lost.log"
        )
        try:
            wait_until(lambda: "retry in" in lost.log_text(), 20, what="the lost worker's retry")
        finally:
            lost.stop()
        log = lost.log_text()
        assert "started: role=worker" in log
        assert f"sandbox_upstream={dead}" in log
        [warning] = [line for line in log.splitlines() if "UPSTREAM UNREACHABLE" in line]
        assert " WARNING " in warning
        assert dead in warning
        assert "WAGATE_SANDBOX_URL" in warning
        assert f"{message_id} " in log
        assert "stopped: role=worker" in log
        assert read_message(gateway, tenant, message_id)["status"] == "pending"

        # Then at the gateway's sandbox: two refusals, each retried, then sent.
        found = ProcessGroup(
            [WAGATE, "worker"],
            {**worker_env, "WAGATE_SANDBOX_URL": f"{gateway.base_url}/sandbox"},
            tmp_path / "found.log",
        )
        try:
            wait_until(
                lambda: read_message(gateway, tenant, message_id)["status"] != "pending",
                20,
                what="the message sent after its retries",
            )
        finally:
            found.stop()
        log = found.log_text()
        retries = [
            line
            for line in log.splitlines()
            if message_id in line and "retry in" in line and " INFO " in line
        ]
        assert len(retries) == 2, log
        assert all("131000" in line and "transient failure" in line for line in retries)
        assert any(
            message_id in line and "accepted upstream as" in line for line in log.splitlines()
        )
        assert "UPSTREAM UNREACHABLE" not in log
        assert "started: role=worker" in log
        assert "stopped: role=worker" in log.splitlines()[-1]
    finally:
        gateway.stop()
