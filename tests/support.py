"""Test support: loopback ports, PostgreSQL databases, and real gateway processes."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import Executable, Row

from tests import loopback
from wagate.adapters.store.engine import create_engine
from wagate.adapters.store.migrate import migrate
from wagate.adapters.store.notify import SqlNotifications
from wagate.adapters.store.sql import SqlStore
from wagate.core import admin
from wagate.domain.model import Upstream
from wagate.domain.notifications import AttemptRecord
from wagate.ports import SystemClock

# Every process a test starts shares these: PostgreSQL installations need a secret
# key (SQLite ones make their own when WAGATE_SECRET_KEY is empty), and the
# sandbox's operator routes need an admin token.
TEST_SECRET_KEY = "wagate-test-secret-key-0123456789abcdef"
os.environ.setdefault("WAGATE_SECRET_KEY", TEST_SECRET_KEY)
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

PG_HOST = "127.0.0.1"
PG_ADMIN_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:5432/test"
WAGATE = str(Path(sys.executable).with_name("wagate"))
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Fails at the deadline with the last value seen: a test waits on the condition it
    needs, never on a fixed `sleep()` that is too long when idle and too short when loaded.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or 'condition'} not true within {timeout} s: {value!r}")
        time.sleep(interval)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_available() -> bool:
    """Whether the PostgreSQL server answers on 127.0.0.1:5432."""
    try:
        with socket.create_connection((PG_HOST, 5432), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL; under CI a missing PostgreSQL is a failure."""
    if postgres_available():
        return
    if os.environ.get("CI"):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (required in CI)")
    pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")


async def _admin_sql(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(host=PG_HOST, port=5432, user="postgres", database="test")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _pg_url(name: str) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{name}"


# Migrated once per test session, then copied: a PostgreSQL template database and a
# checkpointed SQLite file (running every migration for every test cost ~0.7 s and
# ~0.2 s a database).
_templates: dict[str, str] = {}


def _pg_template() -> str:
    name = _templates.get("postgres")
    if name is None:
        name = f"wagate_template_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
        migrate(_pg_url(name))
        atexit.register(drop_pg_database, _pg_url(name))
        _templates["postgres"] = name
    return name


def _sqlite_template() -> Path:
    path = _templates.get("sqlite")
    if path is None:
        folder = Path(tempfile.mkdtemp(prefix="wagate-template-"))
        atexit.register(shutil.rmtree, folder, True)
        path = str(folder / "wagate.db")
        migrate(f"sqlite+aiosqlite:///{path}")
        # Everything into the main file, so copying that one file copies the database.
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _templates["sqlite"] = path
    return Path(path)


def create_pg_database() -> str:
    """A new, migrated PostgreSQL database (a copy of the session's template); its URL."""
    name = f"wagate_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_template()}"'))
    return _pg_url(name)


def drop_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database."""
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sql(database_url: str, statement: Executable) -> list[Row[Any]]:
    """Run one statement on a database (committed); the rows it returns."""

    async def work() -> list[Row[Any]]:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(statement)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(work())


def database_url_for(backend: str, tmp_dir: Path) -> str:
    """A fresh, migrated database of the given backend."""
    if backend == "postgres":
        require_postgres()
        return create_pg_database()
    path = tmp_dir / "wagate.db"
    shutil.copyfile(_sqlite_template(), path)
    return f"sqlite+aiosqlite:///{path}"


def dispose_database(url: str) -> None:
    """Drop a PostgreSQL test database (SQLite files go with their tmp dir)."""
    if url.startswith("postgresql"):
        drop_pg_database(url)


@dataclass(frozen=True)
class Tenant:
    """A project with a key and a sandbox phone number, made for one test."""

    project_id: str
    api_key: str
    phone_number_id: str
    # The number's access token (a sandbox number's generated one, or the one given).
    access_token: str = ""


def make_tenant(
    database_url: str,
    *,
    mps: int = 80,
    upstream: Upstream = "sandbox",
    access_token: str = "",
    rate_limit: int | None = None,
) -> Tenant:
    """Create a project (`rate_limit` requests a minute), key and phone number in the store."""

    async def work() -> Tenant:
        store = SqlStore.from_url(database_url)
        try:
            clock = SystemClock()
            project, key = await admin.create_project(store, clock, "test", rate_limit=rate_limit)
            number = await admin.add_number(
                store,
                clock,
                project_id=project.id,
                phone_number_id=str(uuid.uuid4().int % 10**15),
                # A WABA of its own, as `numbers add` made one up before meta numbers needed it.
                waba_id=str(uuid.uuid4().int % 10**15) if upstream == "meta" else None,
                upstream=upstream,
                access_token=access_token,
                mps=mps,
            )
            return Tenant(project.id, key.secret, number.phone_number_id, number.access_token)
        finally:
            await store.close()

    return asyncio.run(work())


class ProcessGroup:
    """A command in its own process group, logging to a file; stopped as a whole."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        """The process id (a worker's lease owner name contains it)."""
        return self.process.pid

    def wait_until_up(
        self,
        url: str,
        timeout: float = 30.0,
        *,
        any_answer: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Wait until `url` answers 200 (or anything); raise with the log's tail if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.log_path.name}: exited\n{self.log_text()[-2000:]}")
            try:
                if loopback.get(url, headers=headers, timeout=1).status_code == 200 or any_answer:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{url} did not come up\n{self.log_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown hooks, no flushing."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left of the group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def log_text(self) -> str:
        """What the process has logged so far."""
        return self.log_path.read_text(errors="replace")


class GatewayProcess:
    """A real `wagate serve` process on loopback, in its own process group."""

    def __init__(self, database_url: str, log_path: Path, **env: str) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "WAGATE_DATABASE_URL": database_url,
            "WAGATE_AUTH_CACHE_SECONDS": "0",
            "WAGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            # The embedded sandbox reports sent/delivered/read quickly in tests.
            "WAGATE_SANDBOX_STATUS_DELAY": "0.05",
            **env,
        }
        self.group: ProcessGroup | None = None

    def start(self) -> GatewayProcess:
        """Start and wait until /healthz answers."""
        args = [WAGATE, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.group = ProcessGroup(args, self.env, self.log_path)
        self.group.wait_until_up(f"{self.base_url}/healthz")
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hooks, no flushing."""
        if self.group is not None:
            self.group.kill()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then make sure the group is gone."""
        if self.group is not None:
            self.group.stop()

    def log_text(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace")


class GatewayPool:
    """Gateways that run for the whole test session, one per backend and environment.

    A parametrized session fixture keeps one parameter alive at a time: each module that
    used `gateway` stopped the SQLite gateway to start the PostgreSQL one and back again
    (~2 s a start, ~40 starts a run). The pool keeps each gateway it starts until the end.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self._running: dict[tuple[str, tuple[tuple[str, str], ...]], GatewayProcess] = {}

    def get(self, backend: str, **env: str) -> GatewayProcess:
        """The session's gateway on `backend` with this environment, started on first use."""
        key = (backend, tuple(sorted(env.items())))
        gateway = self._running.get(key)
        if gateway is None:
            tmp = self._tmp_path_factory.mktemp(f"gateway-{backend}")
            url = database_url_for(backend, tmp)
            try:
                gateway = GatewayProcess(url, tmp / "gateway.log", **env).start()
            except BaseException:
                dispose_database(url)
                raise
            self._running[key] = gateway
        return gateway

    def close(self) -> None:
        """Stop every gateway (side by side: each waits for its own shutdown), drop its database."""

        def stop(gateway: GatewayProcess) -> None:
            gateway.stop()
            dispose_database(gateway.database_url)

        with ThreadPoolExecutor() as pool:
            list(pool.map(stop, self._running.values()))
        self._running.clear()


@contextmanager
def running_gateway(database_url: str, log_path: Path, **env: str) -> Iterator[GatewayProcess]:
    """A gateway for the length of a `with` block."""
    gateway = GatewayProcess(database_url, log_path, **env).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def sandbox_stats(sandbox_url: str) -> dict[str, Any]:
    """A sandbox's `_stats` document: `sandbox_url` is a standalone sandbox's base URL,
    or `<gateway>/sandbox` for the embedded one (both answer ADMIN_TOKEN)."""
    response = loopback.get(f"{sandbox_url}/_stats", headers=ADMIN, timeout=10)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def run_cli(
    *args: str,
    database_url: str,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `wagate` CLI (`input` on its stdin, `env` over the test's environment)."""
    result = subprocess.run(
        [WAGATE, *args],
        env={**os.environ, "WAGATE_DATABASE_URL": database_url, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"wagate {' '.join(args)} failed: {result.stderr}{result.stdout}")
    return result


def fail_for_good(database_url: str, webhook_id: str) -> list[str]:
    """Fail every due delivery of a webhook for the last time, as a notifier does after
    its last retry: they become dead letters. Their ids."""

    async def work() -> list[str]:
        store = SqlStore.from_url(database_url)
        notifications = SqlNotifications(store.engine, store.secrets)
        try:
            now = int(time.time() * 1000) + 1000
            claimed = await notifications.claim_deliveries(
                "test", now, limit=100, per_endpoint=100, lease_ms=60_000
            )
            mine = [c for c in claimed if c.endpoint.id == webhook_id]
            await notifications.record_attempts(
                [
                    AttemptRecord(c.seq, webhook_id, "test", now, 7, 503, "HTTP 503", "dead")
                    for c in mine
                ]
            )
            return [c.id for c in mine]
        finally:
            await store.close()

    return asyncio.run(work())
