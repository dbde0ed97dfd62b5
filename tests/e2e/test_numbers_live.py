"""Managing a number while its messages flow: a real `wagate serve` (API, worker, embedded
sandbox that checks each number's token) and the real CLI beside it."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests import loopback
from tests.support import (
    WAGATE,
    ProcessGroup,
    Tenant,
    database_url_for,
    free_port,
    make_tenant,
    run_cli,
    running_gateway,
    sql,
    wait_until,
)
from tests.unit.test_body_rules import SEED
from wagate.adapters.store.tables import messages

pytestmark = pytest.mark.slow

GRACE_S = 2.0
_recipients = itertools.count(1)


def body() -> dict[str, Any]:
    """A send to a recipient of its own (no pair pacing between them)."""
    return {**SEED, "recipient": f"US.{next(_recipients):020d}"}


def statuses(database_url: str, phone_number_id: str) -> dict[str, int]:
    """How many of a number's messages are in each status."""
    rows = sql(
        database_url,
        select(messages.c.status, func.count())
        .where(messages.c.phone_number_id == phone_number_id)
        .group_by(messages.c.status),
    )
    found: list[Any] = list(rows)
    return {str(row[0]): int(row[1]) for row in found}


class Sender(threading.Thread):
    """Sends one message every `every` seconds until stopped; keeps every answer's status."""

    def __init__(self, base_url: str, tenant: Tenant, every: float = 0.03) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/meta/whatsapp/v24.0/{tenant.phone_number_id}/marketing_messages"
        self.key = tenant.api_key
        self.every = every
        self.answers: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(headers={"X-API-Key": self.key}, timeout=10) as client:
            while not self.halt.is_set():
                self.answers.append(client.post(self.url, json=body()).status_code)
                time.sleep(self.every)

    def stop(self) -> list[int]:
        self.halt.set()
        self.join(10)
        return self.answers


def sandbox_send(base_url: str, phone_number_id: str, token: str) -> httpx.Response:
    """A send straight to the embedded sandbox, as the worker makes it, with `token`."""
    return loopback.post(
        f"{base_url}/sandbox/v23.0/{phone_number_id}/marketing_messages",
        json={**{k: v for k, v in SEED.items() if k != "recipient"}, "to": "447700900123"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_a_token_rotated_while_messages_flow_loses_none_and_is_used_afterwards(
    tmp_path: Path,
) -> None:
    url = database_url_for("sqlite", tmp_path)
    tenant = make_tenant(url)
    old_token, new_token = tenant.access_token, "sbx_rotated_" + "x" * 32
    token_file = tmp_path / "new-token.txt"
    token_file.write_text(new_token + "\n")
    pnid = tenant.phone_number_id
    env = {"WAGATE_SANDBOX_TOKEN_GRACE": str(GRACE_S)}
    with running_gateway(url, tmp_path / "gateway.log", **env) as gateway:
        sender = Sender(gateway.base_url, tenant)
        sender.start()
        wait_until(lambda: statuses(url, pnid).get("delivered"), what="deliveries under way")
        rotated = run_cli(
            *("numbers", "update", pnid, "--access-token-file", str(token_file)),
            *("--mps", "40", "--json"),
            database_url=url,
        )
        rotated_at = time.monotonic()
        time.sleep(1.0)  # keep sending across the rotation
        answers = sender.stop()
        assert set(answers) == {200}, answers
        assert new_token not in rotated.stdout
        assert '"mps": 40' in rotated.stdout

        def all_delivered() -> dict[str, int] | None:
            counts = statuses(url, pnid)
            return counts if set(counts) <= {"delivered", "read"} else None

        counts = wait_until(all_delivered, timeout=20, what="every message delivered")
        assert sum(counts.values()) == len(answers)

        # Past the grace, the sandbox takes only the new token ...
        time.sleep(max(0.0, GRACE_S - (time.monotonic() - rotated_at)))
        wait_until(
            lambda: sandbox_send(gateway.base_url, pnid, old_token).status_code == 401,
            what="the old token refused",
        )
        assert sandbox_send(gateway.base_url, pnid, new_token).status_code == 200
        # ... and what is sent now is still delivered: the worker sends with it.
        more = Sender(gateway.base_url, tenant)
        more.start()
        time.sleep(0.5)
        assert set(more.stop()) == {200}
        counts = wait_until(all_delivered, timeout=20, what="later messages delivered")
        assert sum(counts.values()) > len(answers)
    assert "Traceback" not in gateway.log_text()


def test_a_number_with_queued_messages_is_removed_only_with_force_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    url = database_url_for("sqlite", tmp_path)
    busy, neighbour = make_tenant(url, mps=1), make_tenant(url)
    with running_gateway(url, tmp_path / "gateway.log") as gateway:
        sender = Sender(gateway.base_url, busy, every=0.01)
        sender.start()
        # One a second leaves a queue behind.
        wait_until(lambda: statuses(url, busy.phone_number_id).get("pending", 0) >= 10)
        refused = run_cli("numbers", "remove", busy.phone_number_id, database_url=url, check=False)
        assert refused.returncode == 1
        assert "--force" in refused.stderr
        assert "Traceback" not in refused.stderr
        forced = run_cli("numbers", "remove", busy.phone_number_id, "--force", database_url=url)
        assert "deleted unsent" in forced.stdout
        answers = sender.stop()
        # Sends after the removal are refused as for any unknown number, never a 5xx.
        assert set(answers) <= {200, 400}, answers
        assert statuses(url, busy.phone_number_id) == {}

        # The worker lives on: another number's messages are delivered.
        other = Sender(gateway.base_url, neighbour)
        other.start()
        time.sleep(0.3)
        assert set(other.stop()) == {200}
        wait_until(
            lambda: set(statuses(url, neighbour.phone_number_id)) <= {"delivered", "read"},
            timeout=20,
        )
        assert loopback.get(f"{gateway.base_url}/healthz", timeout=5).status_code == 200
    log = gateway.log_text()
    assert "Traceback" not in log
    assert "claim round failed" not in log


def test_the_demo_key_keeps_working_across_restarts_and_is_printed_once(tmp_path: Path) -> None:
    url = database_url_for("sqlite", tmp_path)
    first = demo_start(url, tmp_path / "first.log")
    [secret] = set(re.findall(r"wg_[A-Za-z0-9_-]{40,}", first))  # the key, and in the curl
    second = demo_start(url, tmp_path / "second.log", send_with=secret)
    assert secret not in second
    assert secret[:10] + "…" in second
    assert "wagate keys create --project prj_" in second


def demo_start(url: str, log: Path, send_with: str | None = None) -> str:
    """Start `wagate serve --demo`, optionally send with a key once it is up; what it printed."""
    port = free_port()
    group = ProcessGroup(
        [WAGATE, "serve", "--demo", "--port", str(port)],
        {**os.environ, "WAGATE_DATABASE_URL": url, "WAGATE_AUTH_CACHE_SECONDS": "0"},
        log,
    )
    try:
        group.wait_until_up(f"http://127.0.0.1:{port}/healthz")
        if send_with is not None:
            sent = loopback.post(
                f"http://127.0.0.1:{port}/meta/whatsapp/v24.0/100000000000001/marketing_messages",
                json=body(),
                headers={"X-API-Key": send_with},
                timeout=10,
            )
            assert sent.status_code == 200, sent.text
    finally:
        group.stop()
    return group.log_text()
