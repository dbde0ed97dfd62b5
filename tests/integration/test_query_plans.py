"""Every queue statement reads only the rows it returns or changes: its plan, on both databases.

A statement that regresses to reading the backlog (a scan of `messages`, or a walk
through an index that does not match it, such as the number's whole history) fails
here, long before a million queued messages show it in production.

SQLite is asked as it runs in production (no ANALYZE statistics); PostgreSQL on a
table with realistic proportions, ANALYZEd, with sequential scans discouraged and
the *generic* plan of a prepared statement forced: asyncpg prepares every statement
and PostgreSQL switches to the generic plan after five runs, and a generic plan
cannot see a bound value (say, a bound `state`) to prove that a partial index fits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from sqlalchemy import ClauseElement, Dialect, Executable, insert
from sqlalchemy.sql.compiler import SQLCompiler

from tests.support import database_url_for, dispose_database
from wagate.adapters.store.engine import POSTGRESQL, SQLITE, create_engine
from wagate.adapters.store.queries import notify as w
from wagate.adapters.store.queries import queue as q
from wagate.adapters.store.queries import retention as r
from wagate.adapters.store.queries import statuses as s
from wagate.adapters.store.tables import (
    message_events,
    message_statuses,
    messages,
    phone_numbers,
    projects,
    suppressions,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)

pytestmark = pytest.mark.postgres

NOW = 1_800_000_000_000
NUMBERS = 5
MESSAGES = 4000
# Tables whose every access must go through an index that fits the statement.
WATCHED = (
    "messages",
    "message_statuses",
    "message_events",
    "phone_numbers",
    "pair_pacing",
    "suppressions",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "recipient_limits",
    "recipient_sends",
)
# Sample values of every parameter the statements bind.
PARAMETERS: dict[str, Any] = {
    "b_phone_number_id": "1000000000001",
    "b_now": NOW,
    "b_limit": 50,
    "b_seq": 7,
    "b_owner": "worker-a",
    "b_lease": NOW + 60_000,
    "b_tat": 0,
    "b_factor": 0.5,
    "b_throttled_at": 0,
    "b_recipient": "447700900007",
    "b_until": NOW + 4_000,
    "b_code": 131000,
    "b_title": "title",
    "b_details": "details",
    "b_at": NOW,
    "b_failing_before": NOW,
    "b_window": 256,
    "b_wamid": "wamid.UP7",
    "b_upstream_status": "accepted",
    "b_due": NOW + 2_000,
    "b_after": 0,
    "b_wamids": ["wamid.UP7", "wamid.UP8"],
    "b_status": "delivered",
    "b_recipients": ["447700900007", "447700900008"],
    "b_reserved": 0,
    "b_now_us": NOW * 1000,
    "b_before": NOW - 3_000,
    "b_seqs": [7, 8],
    # Customer webhooks.
    "b_endpoint_id": "whe_1",
    "b_numbers": ["1000000000001", "1000000000002"],
    "b_waba_ids": ["102290129340398"],
    "b_state": "dead",
    "b_delivery_id": "evt_7",
    "b_next": NOW + 10_000,
    "b_delivered_at": NOW,
    "b_status_code": 200,
    "b_error": None,
    "b_project_id": "prj_plans",
    "b_url": "https://example.com/hook",
    "b_kind": "standard",
    "b_events": "[]",
    "b_active": True,
    "b_secret": "s",
    "b_previous_secret": None,
    "b_previous_secret_until": None,
    "b_headers": "{}",
    "b_failing_since": None,
    "b_outage_since": NOW,
    "b_paused_at": None,
    "b_updated_at": NOW,
}


@dataclass(frozen=True)
class Case:
    """A statement and the indexes it may read through (by name, primary keys as pk_<table>)."""

    statement: Executable
    indexes: frozenset[str]
    # Indexes it may walk from one end without a condition (it stops at the first row).
    walks: frozenset[str] = field(default_factory=frozenset)
    # Tables it reads whole by design (webhook_endpoints: one row per customer URL).
    scans: frozenset[str] = field(default_factory=frozenset)


def case(
    statement: Executable, *indexes: str, walks: tuple[str, ...] = (), scans: tuple[str, ...] = ()
) -> Case:
    return Case(statement, frozenset(indexes), frozenset(walks), frozenset(scans))


QUEUE_CASES: dict[str, Case] = {
    # It starts at the first queued number and joins the numbers found (the planner may
    # hash the numbers table: its size is the numbers', never the backlog's).
    "WAITING": case(
        q.WAITING,
        "ix_messages_queue",
        "pk_phone_numbers",
        walks=("ix_messages_queue", "pk_phone_numbers"),
    ),
    "ANY_DUE": case(q.ANY_DUE, "ix_messages_queue"),
    "claimable": case(q.claimable(SQLITE), "ix_messages_queue"),
    "claimable(postgresql)": case(q.claimable(POSTGRESQL), "ix_messages_queue"),
    "LOCK_NUMBER": case(q.LOCK_NUMBER, "pk_phone_numbers"),
    "LEASE": case(q.LEASE, "pk_messages"),
    "SET_PACING_TAT": case(q.SET_PACING_TAT, "pk_phone_numbers"),
    "SET_THROTTLE": case(q.SET_THROTTLE, "pk_phone_numbers"),
    # Per-recipient pacing: a put-off message, its pair's state, and the sweep of old pairs.
    "DEFER": case(q.DEFER, "pk_messages"),
    "PAIRS": case(q.PAIRS, "pk_pair_pacing"),
    "FORGET_PAIRS": case(q.FORGET_PAIRS, "ix_pair_pacing_reserved_tat"),
    "FORGET_LIMITS": case(q.FORGET_LIMITS, "ix_recipient_limits_updated_at"),
    "FORGET_SENDS": case(q.FORGET_SENDS, "ix_recipient_sends_updated_at"),
    "ABANDON_ENDED_LEASES": case(q.ABANDON_ENDED_LEASES, "ix_messages_leases"),
    "REQUEUE_ENDED_LEASES": case(q.REQUEUE_ENDED_LEASES, "ix_messages_leases"),
    "EXPIRE": case(q.EXPIRE, "ix_messages_expiry"),
    "FORWARDED": case(q.FORWARDED, "pk_messages"),
    "FAILED": case(q.FAILED, "pk_messages"),
    "RETRY": case(q.RETRY, "pk_messages"),
    "FAILED_HERE": case(q.FAILED_HERE, "pk_messages"),
    "FAILED_ONE": case(q.FAILED_ONE, "pk_messages"),
    "FAILED_HERE_ONE": case(q.FAILED_HERE_ONE, "pk_messages"),
}
# Statistics for tests and benchmarks, never run by a worker or a request.
NOT_ON_ANY_PATH = {"COUNT_BY_STATE"}
# The worker's reconciliation of early statuses (and the outcome's, when it records a wamid).
RECONCILE_CASES: dict[str, Case] = {
    "UNMATCHED": case(s.UNMATCHED, "ix_message_statuses_unmatched"),
    # With whether the message's number has a customer webhook endpoint, and where the
    # number sends (by its key).
    "MESSAGES_BY_WAMID": case(
        s.MESSAGES_BY_WAMID,
        "ix_messages_upstream_wamid",
        "ix_webhook_endpoints_phone_number_id",
        "pk_phone_numbers",
        walks=("ix_webhook_endpoints_phone_number_id",),
    ),
    "STORED_STATUSES": case(s.STORED_STATUSES, "uq_message_statuses_wamid_status"),
    "MARK_MATCHED": case(
        s.MARK_MATCHED, "uq_message_statuses_wamid_status", "ix_message_statuses_unmatched"
    ),
    "GIVE_UP": case(s.GIVE_UP, "uq_message_statuses_wamid_status"),
    "MOVE": case(s.MOVE, "pk_messages"),
}
# The worker's retention: old final messages by age, then their rows by key.
RETENTION_CASES: dict[str, Case] = {
    "prunable": case(r.prunable(SQLITE), "ix_messages_final"),
    "prunable(postgresql)": case(r.prunable(POSTGRESQL), "ix_messages_final"),
    "DELETE_STATUSES": case(r.DELETE_STATUSES, "uq_message_statuses_wamid_status"),
    "DELETE_EVENTS": case(r.DELETE_EVENTS, "ix_message_events_upstream_wamid"),
    "DELETE_MESSAGES": case(r.DELETE_MESSAGES, "pk_messages"),
}
_ENDPOINTS_BY_NUMBER = "ix_webhook_endpoints_phone_number_id"
_SERVING = ("webhook_endpoints",)
# PostgreSQL may read a number's endpoints by walking their (tiny) index into a hash.
_ENDPOINTS_WALKED = (_ENDPOINTS_BY_NUMBER,)
# Customer webhooks: the moving transactions' reads (the hot path's), claims, attempts,
# the API's listings and the housekeeping. No statement reads the deliveries backlog.
NOTIFY_CASES: dict[str, Case] = {
    "MESSAGE_FACTS": case(
        w.MESSAGE_FACTS,
        "pk_messages",
        "pk_phone_numbers",
        _ENDPOINTS_BY_NUMBER,
        walks=_ENDPOINTS_WALKED,
    ),
    "NUMBERS_OF_WABAS": case(
        w.NUMBERS_OF_WABAS,
        "ix_phone_numbers_waba_id",
        _ENDPOINTS_BY_NUMBER,
        walks=_ENDPOINTS_WALKED,
    ),
    "PREFERENCES_OF": case(w.PREFERENCES_OF, "pk_suppressions"),
    "ANY_ENDPOINT": case(w.ANY_ENDPOINT, scans=_SERVING),
    "ENDPOINTS_FOR_FAN_OUT": case(w.ENDPOINTS_FOR_FAN_OUT, _ENDPOINTS_BY_NUMBER),
    "ENDPOINT": case(w.ENDPOINT, "pk_webhook_endpoints"),
    "ENDPOINTS_OF_NUMBER": case(w.ENDPOINTS_OF_NUMBER, _ENDPOINTS_BY_NUMBER),
    "UPDATE_ENDPOINT": case(w.UPDATE_ENDPOINT, "pk_webhook_endpoints"),
    "PAUSE_ENDPOINT": case(w.PAUSE_ENDPOINT, "pk_webhook_endpoints"),
    "PAUSE_FAILING_ENDPOINT": case(w.PAUSE_FAILING_ENDPOINT, "pk_webhook_endpoints"),
    "RESUME_DELIVERIES": case(w.RESUME_DELIVERIES, "ix_webhook_deliveries_due"),
    "DELETE_ENDPOINT_ATTEMPTS": case(
        w.DELETE_ENDPOINT_ATTEMPTS, "ix_webhook_attempts_endpoint_id_seq"
    ),
    "DELETE_ENDPOINT_DELIVERIES": case(
        w.DELETE_ENDPOINT_DELIVERIES, "ix_webhook_deliveries_listing", "ix_webhook_deliveries_state"
    ),
    "DELETE_ENDPOINT": case(w.DELETE_ENDPOINT, "pk_webhook_endpoints"),
    "DELETE_NUMBER_ATTEMPTS": case(
        w.DELETE_NUMBER_ATTEMPTS, _ENDPOINTS_BY_NUMBER, "ix_webhook_attempts_endpoint_id_seq"
    ),
    "DELETE_NUMBER_DELIVERIES": case(
        w.DELETE_NUMBER_DELIVERIES,
        _ENDPOINTS_BY_NUMBER,
        "ix_webhook_deliveries_listing",
        "ix_webhook_deliveries_state",
    ),
    "DELETE_NUMBER_ENDPOINTS": case(w.DELETE_NUMBER_ENDPOINTS, _ENDPOINTS_BY_NUMBER),
    "ANY_DUE": case(w.ANY_DUE, "ix_webhook_deliveries_due", scans=_SERVING),
    "serving_endpoints": case(w.serving_endpoints(SQLITE), scans=_SERVING),
    "serving_endpoints(postgresql)": case(w.serving_endpoints(POSTGRESQL), scans=_SERVING),
    "LIVE_LEASES": case(w.LIVE_LEASES, "ix_webhook_deliveries_leases"),
    "due_deliveries": case(
        w.due_deliveries(SQLITE), "ix_webhook_deliveries_due", "ix_webhook_deliveries_order"
    ),
    "due_deliveries(postgresql)": case(
        w.due_deliveries(POSTGRESQL), "ix_webhook_deliveries_due", "ix_webhook_deliveries_order"
    ),
    # The due rows of the endpoint, each probed for an earlier one of its key (and for
    # the retry time of that one); the rows moved by seq.
    "defer_blocked": case(
        w.defer_blocked(SQLITE),
        "ix_webhook_deliveries_due",
        "ix_webhook_deliveries_order",
        "pk_webhook_deliveries",
    ),
    "defer_blocked(postgresql)": case(
        w.defer_blocked(POSTGRESQL),
        "ix_webhook_deliveries_due",
        "ix_webhook_deliveries_order",
        "pk_webhook_deliveries",
    ),
    "LEASE_DELIVERIES": case(w.LEASE_DELIVERIES, "pk_webhook_deliveries"),
    "lease_holders": case(w.lease_holders(SQLITE), "pk_webhook_deliveries"),
    "lease_holders(postgresql)": case(w.lease_holders(POSTGRESQL), "pk_webhook_deliveries"),
    "RECORD_DELIVERY": case(w.RECORD_DELIVERY, "pk_webhook_deliveries"),
    "ENDPOINT_SUCCEEDED": case(w.ENDPOINT_SUCCEEDED, "pk_webhook_endpoints"),
    "ENDPOINT_RECOVERED": case(w.ENDPOINT_RECOVERED, "pk_webhook_endpoints"),
    "ENDPOINT_FAILED": case(w.ENDPOINT_FAILED, "pk_webhook_endpoints"),
    "LIST_DELIVERIES": case(w.LIST_DELIVERIES, "ix_webhook_deliveries_listing"),
    "LIST_DELIVERIES_IN_STATE": case(w.LIST_DELIVERIES_IN_STATE, "ix_webhook_deliveries_state"),
    "LIST_ATTEMPTS": case(w.LIST_ATTEMPTS, "ix_webhook_attempts_endpoint_id_seq"),
    # SQLite names a UNIQUE constraint's index sqlite_autoindex_*, read here as pk_<table>;
    # or it reads the endpoint's dead ones (an API call, rare).
    "REPLAY_ONE": case(
        w.REPLAY_ONE,
        "uq_webhook_deliveries_id",
        "pk_webhook_deliveries",
        "ix_webhook_deliveries_state",
    ),
    "REPLAY_DEAD": case(w.REPLAY_DEAD, "ix_webhook_deliveries_state"),
    "REAP_DELIVERIES": case(w.REAP_DELIVERIES, "ix_webhook_deliveries_leases"),
    "PRUNE_ATTEMPTS": case(w.PRUNE_ATTEMPTS, "ix_webhook_attempts_at", "pk_webhook_attempts"),
    "PRUNE_DELIVERIES": case(
        w.PRUNE_DELIVERIES, "ix_webhook_deliveries_delivered", "pk_webhook_deliveries"
    ),
}
# Inserts read nothing.
NOTIFY_INSERTS = {"INSERT_ENDPOINT", "INSERT_DELIVERY", "INSERT_ATTEMPT"}
CASES = {**QUEUE_CASES, **RECONCILE_CASES, **RETENTION_CASES, **NOTIFY_CASES}


def test_every_named_queue_statement_has_its_plan_checked() -> None:
    named = {
        name
        for name, value in vars(q).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, ClauseElement)
    }
    named |= {"claimable"}  # built per dialect
    assert named - NOT_ON_ANY_PATH == {name for name in QUEUE_CASES if "(" not in name}


def test_every_retention_statement_has_its_plan_checked() -> None:
    named = {
        name
        for name, value in vars(r).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, ClauseElement)
    }
    named |= {"prunable"}  # built per dialect
    assert named == {name for name in RETENTION_CASES if "(" not in name}


def test_every_notify_statement_has_its_plan_checked() -> None:
    named = {
        name
        for name, value in vars(w).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, ClauseElement)
    }
    # built per dialect
    named |= {"serving_endpoints", "due_deliveries", "lease_holders", "defer_blocked"}
    assert named - NOTIFY_INSERTS == {name for name in NOTIFY_CASES if "(" not in name}


# ---- a database with realistic proportions: mostly history, a little queue ------------------


def rows() -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row) of a few numbers with mostly finished messages and a few queued ones."""
    yield "projects", {"id": "prj_plans", "name": "plans", "created_at": NOW}
    for n in range(NUMBERS):
        yield (
            "phone_numbers",
            {
                "phone_number_id": f"100000000000{n}",
                "waba_id": "102290129340398",
                "project_id": "prj_plans",
                "upstream": "sandbox",
                "mps": 80,
                "created_at": NOW,
            },
        )
    for i in range(MESSAGES):
        state = "queued" if i % 4 == 0 else "sending" if i % 50 == 1 else "forwarded"
        # History: most forwarded messages were read; a few are still only delivered.
        final = "read" if i % 3 else "delivered"
        yield (
            "messages",
            {
                "id": f"wamid.gateway{i}",
                "project_id": "prj_plans",
                "phone_number_id": f"100000000000{i % NUMBERS}",
                "recipient_input": f"+4477009{i:05d}",
                "recipient": f"4477009{i:05d}",
                "recipient_kind": "phone",
                "request": json.dumps({"i": i}),
                "template_name": "promo",
                "template_language": "en_US",
                "status": "pending" if state != "forwarded" else final,
                "state": state,
                "created_at": NOW - i,
                "updated_at": NOW - i,
                "due_at": NOW - i,
                "expires_at": NOW + 86_400_000,
                "lease_owner": "worker-a" if state == "sending" else None,
                "lease_expires_at": NOW + 60_000 if state == "sending" else None,
                "upstream_wamid": f"wamid.UP{i}" if state == "forwarded" else None,
            },
        )
        if state == "forwarded":
            yield (
                "message_statuses",
                {
                    "upstream_wamid": f"wamid.UP{i}",
                    "status": "delivered",
                    "timestamp": NOW,
                    "received_at": NOW,
                    "matched": i % 100 != 2,
                },
            )
            yield (
                "message_events",
                {
                    "upstream_wamid": f"wamid.UP{i}",
                    "kind": "click",
                    "payload": "{}",
                    "timestamp": NOW,
                    "received_at": NOW,
                },
            )


ENDPOINTS = 2 * NUMBERS
DELIVERIES = 4000


def webhook_rows() -> Iterator[tuple[str, dict[str, Any]]]:
    """Two endpoints a number (one paused, one inactive) and a history of deliveries: mostly
    delivered, a few pending, out or dead, each with an attempt."""
    for i in range(ENDPOINTS):
        yield (
            "webhook_endpoints",
            {
                "id": f"whe_{i}",
                "project_id": "prj_plans",
                "phone_number_id": f"100000000000{i % NUMBERS}",
                "url": "https://example.com/hook",
                "kind": "standard",
                "events": "[]",
                "active": i != 3,
                "secret": "s",
                "headers": "{}",
                "paused_at": NOW if i == 4 else None,
                "created_at": NOW,
                "updated_at": NOW,
            },
        )
    for i in range(DELIVERIES):
        state = (
            "pending"
            if i % 20 == 0
            else "delivering"
            if i % 50 == 1
            else "dead"
            if i % 100 == 3
            else "delivered"
        )
        yield (
            "webhook_deliveries",
            {
                "id": f"evt_{i}",
                "endpoint_id": f"whe_{i % ENDPOINTS}",
                "order_key": f"wamid.gateway{i // 3}",
                "event_type": "whatsapp.message.sent",
                "data": "{}",
                "occurred_at": NOW - i,
                "created_at": NOW - i,
                "state": state,
                "attempts": 1,
                "next_attempt_at": NOW - i if state == "pending" else None,
                "lease_owner": "notifier-a" if state == "delivering" else None,
                "lease_expires_at": NOW + 30_000 if state == "delivering" else None,
                "delivered_at": NOW - i if state == "delivered" else None,
            },
        )
        yield (
            "webhook_attempts",
            {
                "delivery_id": f"evt_{i}",
                "endpoint_id": f"whe_{i % ENDPOINTS}",
                "at": NOW - i,
                "latency_ms": 10,
                "status_code": 200,
            },
        )
    for i in range(200):
        yield (
            "suppressions",
            {
                "waba_id": "102290129340398",
                "recipient": f"4477009{i:05d}",
                "value": "stop",
                "timestamp": NOW,
                "updated_at": NOW,
            },
        )


async def populate(url: str) -> None:
    tables = {
        t.name: t
        for t in (
            projects,
            phone_numbers,
            messages,
            message_statuses,
            message_events,
            webhook_endpoints,
            webhook_deliveries,
            webhook_attempts,
            suppressions,
        )
    }
    by_table: dict[str, list[dict[str, Any]]] = {}
    for table, row in itertools.chain(rows(), webhook_rows()):
        by_table.setdefault(table, []).append(row)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for name, batch in by_table.items():
                await connection.execute(insert(tables[name]), batch)
        if not url.startswith("sqlite"):
            # Production's autovacuum keeps statistics; SQLite runs without (as in production).
            async with engine.connect() as connection:
                await connection.exec_driver_sql("ANALYZE")
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, populated database of each backend, shared by this module."""
    url = database_url_for(request.param, tmp_path_factory.mktemp(f"plans-{request.param}"))
    asyncio.run(populate(url))
    yield url
    dispose_database(url)


# ---- plans ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One read of a table in a plan: through which index, and whether by a condition."""

    table: str
    index: str | None
    by_condition: bool


def compiled(statement: Executable, dialect: Dialect) -> tuple[str, list[Any]]:
    """The SQL and positional values of a statement, IN lists expanded."""
    assert isinstance(statement, ClauseElement)
    sql = statement.compile(dialect=dialect)
    assert isinstance(sql, SQLCompiler)
    expanded = sql.construct_expanded_state(
        {name: PARAMETERS[name] for name in sql.params if name.startswith("b_")}
    )
    return expanded.statement, list(expanded.positional_parameters)


_SQLITE_ACCESS = re.compile(
    r"^(SCAN|SEARCH) (\w+)(?: AS \w+)?"
    r"(?: USING (?:COVERING )?INDEX (\w+)| USING INTEGER PRIMARY KEY)?"
)


def sqlite_plan(path: str, statement: Executable) -> tuple[list[Access], str]:
    """The table reads of SQLite's EXPLAIN QUERY PLAN, and the plan as text."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    sql, values = compiled(statement, engine.dialect)
    with sqlite3.connect(path) as connection:
        details = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", values)]
    accesses = []
    for detail in details:
        match = _SQLITE_ACCESS.match(detail)
        if match is None:
            continue
        kind, table, index = match.groups()
        if index is None and "PRIMARY KEY" in detail:
            index = f"pk_{table}"
        elif index is not None and index.startswith("sqlite_autoindex_"):
            index = f"pk_{table}"  # a TEXT primary key's index
        accesses.append(Access(table, index, kind == "SEARCH"))
    return accesses, "\n".join(details)


async def postgres_plan(url: str, statement: Executable) -> tuple[list[Access], str]:
    """The table reads of PostgreSQL's generic plan of the prepared statement, and the plan."""
    engine = create_engine(url)
    sql, values = compiled(statement, engine.dialect)
    await engine.dispose()
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        index_tables = dict(await connection.fetch("SELECT indexname, tablename FROM pg_indexes"))
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute("SET enable_seqscan = off")
        await connection.execute(f"PREPARE checked AS {sql}")
        arguments = ", ".join(_literal(value) for value in values)
        execute = f"EXECUTE checked({arguments})" if values else "EXECUTE checked"
        [plan] = json.loads(await connection.fetchval(f"EXPLAIN (FORMAT JSON) {execute}"))
    finally:
        await connection.close()
    accesses: list[Access] = []
    _walk(plan["Plan"], index_tables, accesses)
    return accesses, json.dumps(plan["Plan"], indent=1)


def _walk(node: dict[str, Any], index_tables: dict[str, str], into: list[Access]) -> None:
    kind = node["Node Type"]
    if kind == "Seq Scan":
        into.append(Access(node["Relation Name"], None, False))
    elif kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"):
        index = node["Index Name"]
        if index == f"{index_tables[index]}_pkey":
            index = f"pk_{index_tables[index]}"
        into.append(Access(index_tables[node["Index Name"]], index, "Index Cond" in node))
    for child in node.get("Plans", []):
        _walk(child, index_tables, into)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_queue_statement_reads_only_through_an_index_that_fits_it(
    database: str, name: str
) -> None:
    checked = CASES[name]
    if database.startswith("sqlite"):
        if name.endswith("(postgresql)"):
            pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's")
        accesses, plan = sqlite_plan(database.split("///", 1)[1], checked.statement)
    else:
        accesses, plan = asyncio.run(postgres_plan(database, checked.statement))
    watched = [a for a in accesses if a.table in WATCHED]
    assert watched, f"{name} reads no table?\n{plan}"
    for access in watched:
        if access.table in checked.scans:
            continue
        assert access.index is not None, f"{name} scans all of {access.table}:\n{plan}"
        assert access.index in checked.indexes, (
            f"{name} reads {access.table} through {access.index}, not {set(checked.indexes)}:"
            f"\n{plan}"
        )
        assert access.by_condition or access.index in checked.walks, (
            f"{name} walks all of {access.index}:\n{plan}"
        )
