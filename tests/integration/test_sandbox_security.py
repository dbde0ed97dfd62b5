"""The sandbox and the secrets hold against hostile input: real processes, real HTTP, loopback.

Covers who may use the sandbox (access tokens per number and WABA, the admin
token of its operator routes, WAGATE_SANDBOX), that a body the embedded sandbox
signs cannot touch a real Meta number, and that secrets never lie in clear in
the database, a key file or a command's output.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests import loopback
from tests.support import (
    ADMIN,
    ADMIN_TOKEN,
    PG_HOST,
    WAGATE,
    GatewayProcess,
    ProcessGroup,
    Tenant,
    create_pg_database,
    database_url_for,
    drop_pg_database,
    free_port,
    make_tenant,
    require_postgres,
    run_cli,
    running_gateway,
    sql,
    wait_until,
)
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.tables import messages, phone_numbers, suppressions

pytestmark = pytest.mark.slow

MESSAGE = {
    "messaging_product": "whatsapp",
    "to": "447700900123",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}
NEW_TEMPLATE = {
    "name": "intruder_template",
    "language": "en_US",
    "category": "MARKETING",
    "components": [{"type": "BODY", "text": "Hello"}],
}


def bearer(token: str) -> dict[str, str]:
    """An Authorization header with this access token."""
    return {"Authorization": f"Bearer {token}"}


def stored_number(database_url: str, phone_number_id: str, **env: str) -> tuple[str, str]:
    """(the access token as stored, the token the store reads back)."""
    [row] = sql(
        database_url,
        select(phone_numbers.c.access_token).where(
            phone_numbers.c.phone_number_id == phone_number_id
        ),
    )

    async def read() -> str:
        store = SqlStore.from_url(database_url, secret_key=env.get("WAGATE_SECRET_KEY"))
        try:
            number = await store.get_phone_number(phone_number_id)
            assert number is not None
            return number.access_token
        finally:
            await store.close()

    return str(row[0]), asyncio.run(read())


def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database in `tmp_path` (a copy of the session's template)."""
    return database_url_for("sqlite", tmp_path)


def new_project(database_url: str, **env: str) -> str:
    """A project made with the CLI; its id."""
    created = run_cli("projects", "create", "p", "--json", database_url=database_url, env=env)
    return str(json.loads(created.stdout)["id"])


def sandbox_graph(gateway: GatewayProcess) -> str:
    """The embedded sandbox's Graph API base."""
    return f"{gateway.base_url}/sandbox/v23.0"


# ---- the embedded sandbox: each number and WABA takes only its own token -------------


def graph_calls(pnid: str, waba: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, body) of every Graph route the sandbox serves, for one number."""
    return [
        ("POST", f"/{pnid}/marketing_messages", MESSAGE),
        ("GET", f"/{waba}/message_templates", None),
        ("POST", f"/{waba}/message_templates", NEW_TEMPLATE),
        ("DELETE", f"/{waba}/message_templates?name=promo_template", None),
        ("GET", f"/{pnid}?fields=throughput", None),
    ]


def waba_of(database_url: str, phone_number_id: str) -> str:
    """The stored WABA of a number."""
    [row] = sql(
        database_url,
        select(phone_numbers.c.waba_id).where(phone_numbers.c.phone_number_id == phone_number_id),
    )
    return str(row[0])


@pytest.mark.parametrize(
    "which", ["no token", "wrong token", "another number's token", "the gateway API key"]
)
def test_every_sandbox_route_refuses_anything_but_the_numbers_own_token(
    gateway: GatewayProcess, tenant: Tenant, which: str
) -> None:
    other = make_tenant(gateway.database_url)
    headers = {
        "no token": {},
        "wrong token": bearer("sbx_" + secrets.token_urlsafe(32)),
        "another number's token": bearer(other.access_token),
        "the gateway API key": bearer(tenant.api_key),
    }[which]
    waba = waba_of(gateway.database_url, tenant.phone_number_id)

    for method, path, body in graph_calls(tenant.phone_number_id, waba):
        response = loopback.request(
            method, sandbox_graph(gateway) + path, json=body, headers=headers, timeout=10
        )
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == 190, (method, path)


def test_the_numbers_own_token_opens_every_sandbox_route(
    gateway: GatewayProcess, tenant: Tenant
) -> None:
    waba = waba_of(gateway.database_url, tenant.phone_number_id)
    for method, path, body in graph_calls(tenant.phone_number_id, waba):
        response = loopback.request(
            method,
            sandbox_graph(gateway) + path,
            json=body,
            headers=bearer(tenant.access_token),
            timeout=10,
        )
        assert response.status_code == 200, (method, path, response.text)


def test_operator_routes_need_the_admin_token(gateway: GatewayProcess, tenant: Tenant) -> None:
    stats = f"{gateway.base_url}/sandbox/_stats"
    for headers in ({}, bearer("not-the-admin-token"), bearer(tenant.access_token)):
        response = loopback.get(stats, headers=headers, timeout=10)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == 190
        refused = loopback.post(f"{gateway.base_url}/sandbox/_reset", headers=headers, timeout=10)
        assert refused.status_code == 401

    answer = loopback.get(stats, headers=ADMIN, timeout=10)
    assert answer.status_code == 200
    assert "requests" in answer.json()


def test_without_an_admin_token_the_operator_routes_are_off(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    make_tenant(url)
    with running_gateway(url, tmp_path / "gateway.log", WAGATE_ADMIN_TOKEN="") as gateway:
        for headers in ({}, ADMIN, bearer("x")):
            for method, route in (("GET", "_stats"), ("POST", "_reset"), ("POST", "_numbers")):
                response = loopback.request(
                    method, f"{gateway.base_url}/sandbox/{route}", headers=headers, timeout=10
                )
                assert response.status_code == 403, (route, response.text)
                assert response.json()["error"]["code"] == 10
                assert "WAGATE_ADMIN_TOKEN" in response.json()["error"]["error_data"]["details"]


# ---- when the embedded sandbox is served ---------------------------------------------


def test_with_the_sandbox_off_it_is_a_404_and_sandbox_numbers_are_refused(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    make_tenant(url)  # a sandbox number from before the switch
    off = {"WAGATE_SANDBOX": "0"}
    with running_gateway(url, tmp_path / "gateway.log", **off) as gateway:
        for path in ("/_stats", "/v23.0/1/message_templates", "/v23.0/1/marketing_messages"):
            response = loopback.post(f"{gateway.base_url}/sandbox{path}", headers=ADMIN, timeout=10)
            assert response.status_code == 404, path
    project = new_project(url)

    refused = run_cli(
        *("numbers", "add", "--project", project, "--phone-number-id", "5550001"),
        *("--upstream", "sandbox"),
        database_url=url,
        check=False,
        env=off,
    )
    assert refused.returncode == 1
    assert "WAGATE_SANDBOX=0" in refused.stderr
    assert "Traceback" not in refused.stderr
    demo = run_cli(
        "serve", "--demo", "--port", str(free_port()), database_url=url, check=False, env=off
    )
    assert demo.returncode == 1
    assert "WAGATE_SANDBOX=0" in demo.stderr


def test_the_sandbox_appears_once_a_sandbox_number_is_added(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with running_gateway(url, tmp_path / "gateway.log") as gateway:
        templates = f"{sandbox_graph(gateway)}/1/message_templates"
        assert loopback.get(templates, timeout=10).status_code == 404
        project = new_project(url)
        run_cli(
            *("numbers", "add", "--project", project, "--phone-number-id", "5550002"),
            database_url=url,
        )

        # The gateway looks for sandbox numbers again every few seconds.
        def served() -> int | None:
            status = loopback.get(templates, timeout=10).status_code
            return None if status == 404 else status

        assert wait_until(served, 8, interval=0.2, what="the sandbox being served") == 401


# ---- the standalone sandbox: a number belongs to the first token that uses it ---------


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`wagate sandbox` with an admin token, binding numbers on first use."""
    port = free_port()
    log = tmp_path_factory.mktemp("standalone") / "sandbox.log"
    env = {key: value for key, value in os.environ.items() if key != "WAGATE_ADMIN_TOKEN"}
    args = [WAGATE, "sandbox", "--port", str(port), "--admin-token", ADMIN_TOKEN]
    process = ProcessGroup(args, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_until_up(f"{url}/_stats", headers=ADMIN)
        yield url
    finally:
        process.stop()


def unique_id() -> str:
    """A phone number id (or WABA id) of its own."""
    return str(uuid.uuid4().int % 10**15)


def test_a_standalone_number_and_waba_keep_the_first_token(standalone: str) -> None:
    pnid = unique_id()
    first, second = bearer("first-token"), bearer("second-token")
    send = f"{standalone}/v23.0/{pnid}/marketing_messages"

    assert loopback.post(send, json=MESSAGE, headers=first, timeout=10).status_code == 200
    for method, path, body in graph_calls(pnid, pnid):
        response = loopback.request(
            method, f"{standalone}/v23.0{path}", json=body, headers=second, timeout=10
        )
        assert (response.status_code, response.json()["error"]["code"]) == (401, 190), path
    assert loopback.post(send, json=MESSAGE, headers={}, timeout=10).status_code == 401
    templates = f"{standalone}/v23.0/{pnid}/message_templates"
    assert loopback.get(templates, headers=first, timeout=10).status_code == 200


def test_the_standalone_operator_routes_need_its_admin_token(standalone: str) -> None:
    assert loopback.get(f"{standalone}/_stats", timeout=10).status_code == 401
    assert loopback.get(f"{standalone}/_stats", headers=bearer("x"), timeout=10).status_code == 401
    assert loopback.get(f"{standalone}/_stats", headers=ADMIN, timeout=10).status_code == 200


def test_a_standalone_sandbox_with_one_token_takes_no_other_and_no_admin(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "WAGATE_ADMIN_TOKEN"}
    process = ProcessGroup(
        [WAGATE, "sandbox", "--port", str(port), "--token", "the-only-token"],
        env,
        tmp_path / "sandbox.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_until_up(f"{url}/_stats", any_answer=True)
        send = f"{url}/v23.0/{unique_id()}/marketing_messages"
        assert (
            loopback.post(send, json=MESSAGE, headers=bearer("other"), timeout=10).status_code
            == 401
        )
        ok = loopback.post(send, json=MESSAGE, headers=bearer("the-only-token"), timeout=10)
        assert ok.status_code == 200
        stats = loopback.get(f"{url}/_stats", headers=bearer("the-only-token"), timeout=10)
        assert (stats.status_code, stats.json()["error"]["code"]) == (403, 10)
    finally:
        process.stop()


def test_the_sandbox_refuses_big_bodies_and_long_recipients(standalone: str) -> None:
    pnid = unique_id()
    send = f"{standalone}/v23.0/{pnid}/marketing_messages"
    token = bearer("big-body-token")

    huge = {**MESSAGE, "biz_opaque_callback_data": "x" * (65 * 1024)}
    response = loopback.post(send, json=huge, headers=token, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 100
    template = loopback.post(
        f"{standalone}/v23.0/{pnid}/message_templates",
        json={**NEW_TEMPLATE, "components": [{"type": "BODY", "text": "x" * (2 << 20)}]},
        headers=token,
        timeout=10,
    )
    assert template.status_code == 413
    assert template.json()["error"]["code"] == 100

    long_to = loopback.post(send, json={**MESSAGE, "to": "1" * 65}, headers=token, timeout=10)
    assert (long_to.status_code, long_to.json()["error"]["code"]) == (400, 131009)


# ---- webhooks the embedded sandbox signs touch only sandbox numbers --------------------


def sandbox_secret(database_url: str) -> str:
    """The installation's webhook secret, as the gateway reads it."""

    async def read() -> str:
        store = SqlStore.from_url(database_url)
        try:
            return await store.installation_secret()
        finally:
            await store.close()

    return asyncio.run(read())


def forwarded_message(gateway: GatewayProcess, tenant: Tenant) -> str:
    """A message accepted over HTTP and marked as handed upstream; its upstream wamid."""
    response = loopback.post(
        f"{gateway.base_url}/meta/whatsapp/v23.0/{tenant.phone_number_id}/marketing_messages",
        json={**MESSAGE, "to": f"4477009{secrets.randbelow(10**5):05d}"},
        headers={"X-API-Key": tenant.api_key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    message_id = response.json()["messages"][0]["id"]
    wamid = f"wamid.TEST{secrets.token_hex(8).upper()}"
    sql(
        gateway.database_url,
        update(messages)
        .where(messages.c.id == message_id)
        .values(state="forwarded", upstream_wamid=wamid),
    )
    return wamid


def status_of(database_url: str, wamid: str) -> str:
    """A message's status, by its upstream wamid."""
    [row] = sql(database_url, select(messages.c.status).where(messages.c.upstream_wamid == wamid))
    return str(row[0])


def signed_post(gateway: GatewayProcess, payload: dict[str, Any], secret: str) -> httpx.Response:
    """POST a webhook signed the way Meta (or the sandbox) signs it."""
    raw = json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return loopback.post(
        f"{gateway.base_url}/webhooks/meta",
        content=raw,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"},
        timeout=10,
    )


def webhook(waba: str, pnid: str, value: dict[str, Any]) -> dict[str, Any]:
    """Meta's envelope around one change of the `messages` field."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "1", "phone_number_id": pnid},
                            **value,
                        },
                    }
                ],
            }
        ],
    }


def delivered(wamid: str) -> dict[str, Any]:
    """A `delivered` status of a message."""
    return {
        "id": wamid,
        "status": "delivered",
        "timestamp": str(int(time.time())),
        "recipient_id": "447700900123",
    }


def test_a_sandbox_signed_webhook_cannot_move_a_meta_numbers_message(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    meta = make_tenant(url, upstream="meta", access_token="EAAG-meta-token")
    sandbox = make_tenant(url)
    with running_gateway(
        url, tmp_path / "gateway.log", WAGATE_WORKER="0", WAGATE_META_APP_SECRET="meta-secret"
    ) as gateway:
        secret = sandbox_secret(url)
        meta_wamid = forwarded_message(gateway, meta)
        sandbox_wamid = forwarded_message(gateway, sandbox)
        meta_waba = waba_of(url, meta.phone_number_id)

        for wamid, tenant in ((meta_wamid, meta), (sandbox_wamid, sandbox)):
            waba = waba_of(url, tenant.phone_number_id)
            payload = webhook(waba, tenant.phone_number_id, {"statuses": [delivered(wamid)]})
            assert signed_post(gateway, payload, secret).status_code == 200
        stop = {
            "contacts": [{"wa_id": "447700900123"}],
            "user_preferences": [
                {
                    "wa_id": "447700900123",
                    "category": "marketing_messages",
                    "value": "stop",
                    "timestamp": int(time.time()),
                }
            ],
        }
        stop_payload = webhook(meta_waba, meta.phone_number_id, stop)
        assert signed_post(gateway, stop_payload, secret).status_code == 200

        assert status_of(url, meta_wamid) == "pending"
        assert status_of(url, sandbox_wamid) == "delivered"
        assert sql(url, select(suppressions).where(suppressions.c.waba_id == meta_waba)) == []

        # Meta's own signature still moves the Meta number's message.
        payload = webhook(meta_waba, meta.phone_number_id, {"statuses": [delivered(meta_wamid)]})
        assert signed_post(gateway, payload, "meta-secret").status_code == 200
        assert status_of(url, meta_wamid) == "delivered"


# ---- secrets at rest -----------------------------------------------------------------


NO_ENV_KEY = {"WAGATE_SECRET_KEY": ""}


def database_bytes(db_path: Path) -> bytes:
    """Everything SQLite keeps on disk for a database: the file, its WAL and its journal."""
    found = b""
    for suffix in ("", "-wal", "-journal", "-shm"):
        part = Path(f"{db_path}{suffix}")
        if part.exists():
            found += part.read_bytes()
    return found


def test_tokens_never_lie_in_clear_in_the_sqlite_files_or_the_output(tmp_path: Path) -> None:
    db_path = tmp_path / "wagate.db"
    url = sqlite_url(tmp_path)
    project = new_project(url, **NO_ENV_KEY)
    meta_token = "EAAG" + secrets.token_hex(24)
    token_file = tmp_path / "token.txt"
    token_file.write_text(meta_token + "\n")

    added = run_cli(
        *("numbers", "add", "--project", project, "--phone-number-id", "6660001"),
        *("--upstream", "meta", "--waba-id", "6660009"),
        *("--access-token-file", str(token_file), "--json"),
        database_url=url,
        env=NO_ENV_KEY,
    )
    sandbox_added = run_cli(
        *("numbers", "add", "--project", project, "--phone-number-id", "6660002", "--json"),
        database_url=url,
        env=NO_ENV_KEY,
    )
    with running_gateway(url, tmp_path / "gateway.log", **NO_ENV_KEY, WAGATE_WORKER="0"):
        pass  # makes and stores the installation's webhook secret

    key_file = Path(f"{db_path}.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    stored, read_back = stored_number(url, "6660001", WAGATE_SECRET_KEY=key)
    assert read_back == meta_token
    assert stored.startswith("enc:v1:")
    sandbox_stored, sandbox_token = stored_number(url, "6660002", WAGATE_SECRET_KEY=key)
    assert sandbox_token.startswith("sbx_")
    assert sandbox_stored.startswith("enc:v1:")
    webhook_secret = sandbox_secret_with(url, key)

    on_disk = database_bytes(db_path)
    for secret in (meta_token, sandbox_token, webhook_secret, key):
        assert secret.encode() not in on_disk
    for output in (added, sandbox_added):
        assert meta_token not in output.stdout + output.stderr
        assert sandbox_token not in output.stdout + output.stderr
        assert "access_token" not in json.loads(output.stdout)
    connection = sqlite3.connect(db_path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    assert meta_token.encode() not in db_path.read_bytes()


def sandbox_secret_with(database_url: str, key: str) -> str:
    """The installation's webhook secret, opened with `key`."""

    async def read() -> str:
        store = SqlStore.from_url(database_url, secret_key=key)
        try:
            return await store.installation_secret()
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize("source", ["stdin", "file", "environment", "argument"])
def test_numbers_add_takes_the_token_from_stdin_a_file_or_the_environment(
    tmp_path: Path, source: str
) -> None:
    url = sqlite_url(tmp_path)
    project = new_project(url)
    token = "EAAG" + secrets.token_hex(16)
    args = ["numbers", "add", "--project", project, "--phone-number-id", "7770001"]
    args += ["--upstream", "meta", "--waba-id", "7770009"]
    stdin: str | None = None
    env: dict[str, str] = {}
    if source == "stdin":
        args += ["--access-token", "-"]
        stdin = token + "\n"
    elif source == "file":
        (tmp_path / "token").write_text(token)
        args += ["--access-token-file", str(tmp_path / "token")]
    elif source == "environment":
        env["WAGATE_ACCESS_TOKEN"] = token
    else:
        args += ["--access-token", token]

    run_cli(*args, database_url=url, input=stdin, env=env)

    stored, read_back = stored_number(url, "7770001")
    assert read_back == token
    assert token not in stored


def test_a_meta_number_without_any_token_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    project = new_project(url)
    refused = run_cli(
        *("numbers", "add", "--project", project, "--phone-number-id", "7770002"),
        *("--upstream", "meta", "--waba-id", "7770009"),
        database_url=url,
        check=False,
        env={"WAGATE_ACCESS_TOKEN": ""},
    )
    assert refused.returncode == 1
    assert "--access-token" in refused.stderr


def test_plaintext_tokens_from_before_are_sealed_and_still_work(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    tenant = make_tenant(url, upstream="meta", access_token="EAAG-before")
    sql(
        url,
        update(phone_numbers)
        .where(phone_numbers.c.phone_number_id == tenant.phone_number_id)
        .values(access_token="EAAG-plaintext-from-an-old-version"),
    )

    run_cli("projects", "list", database_url=url)

    stored, read_back = stored_number(url, tenant.phone_number_id)
    assert stored.startswith("enc:v1:")
    assert read_back == "EAAG-plaintext-from-an-old-version"


def test_a_wrong_secret_key_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    make_tenant(url, upstream="meta", access_token="EAAG-sealed")

    for command in (("projects", "list"), ("worker",)):
        wrong = run_cli(
            *command,
            database_url=url,
            check=False,
            env={"WAGATE_SECRET_KEY": "another-key-of-at-least-32-characters!!"},
        )
        assert wrong.returncode == 1, command
        assert "WAGATE_SECRET_KEY" in wrong.stderr
        assert "Traceback" not in wrong.stderr + wrong.stdout


# ---- PostgreSQL: a shared key is required; no command prints the password --------------


@pytest.fixture
def pg_with_password() -> Iterator[str]:
    """A fresh PostgreSQL database, reached by a URL that carries a password."""
    require_postgres()
    url = create_pg_database()
    try:
        yield url.replace(f"postgres@{PG_HOST}", f"postgres:s3cretpw@{PG_HOST}")
    finally:
        drop_pg_database(url)


@pytest.mark.postgres
def test_migrate_and_worker_print_the_database_url_without_its_password(
    pg_with_password: str, tmp_path: Path
) -> None:
    migrated = run_cli("migrate", database_url=pg_with_password)
    assert "s3cretpw" not in migrated.stdout + migrated.stderr
    assert "***" in migrated.stdout

    env = {**os.environ, "WAGATE_DATABASE_URL": pg_with_password, "PYTHONUNBUFFERED": "1"}
    worker = ProcessGroup([WAGATE, "worker"], env, tmp_path / "worker.log")
    try:
        wait_until(lambda: "worker " in worker.log_text(), 20, what="the worker's first log line")
    finally:
        worker.stop()
    log = worker.log_text()
    assert "worker " in log
    assert "s3cretpw" not in log
    assert "***" in log


@pytest.mark.postgres
def test_postgres_without_a_secret_key_refuses_to_work(pg_with_password: str) -> None:
    refused = run_cli(
        "projects", "list", database_url=pg_with_password, check=False, env=NO_ENV_KEY
    )
    assert refused.returncode == 1
    assert "WAGATE_SECRET_KEY" in refused.stderr
    assert "wagate secret-key" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "s3cretpw" not in refused.stderr + refused.stdout

    key = run_cli("secret-key", database_url=pg_with_password).stdout.strip()
    with_key = run_cli(
        "projects", "list", database_url=pg_with_password, env={"WAGATE_SECRET_KEY": key}
    )
    assert with_key.returncode == 0


def test_the_stored_token_is_not_the_token(tmp_path: Path) -> None:
    """The same token sealed twice is stored differently: nothing to match rows by."""
    url = sqlite_url(tmp_path)
    first = make_tenant(url, upstream="meta", access_token="EAAG-same")
    second = make_tenant(url, upstream="meta", access_token="EAAG-same")
    rows = sql(url, select(phone_numbers.c.access_token))
    assert len({row[0] for row in rows}) == 2
    assert stored_number(url, first.phone_number_id)[1] == "EAAG-same"
    assert stored_number(url, second.phone_number_id)[1] == "EAAG-same"
