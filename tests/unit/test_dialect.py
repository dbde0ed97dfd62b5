"""The dialect profile: what differs between SQLite and PostgreSQL is decided in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_mock_engine
from sqlalchemy.sql import ClauseElement

from wagate.adapters.store.engine import DRIVERS, POSTGRESQL, SQLITE, Dialect
from wagate.adapters.store.queries import queue, statuses

STORE = Path(__file__).parents[2] / "src" / "wagate" / "adapters" / "store"


def _sql(statement: ClauseElement, dialect: Dialect) -> str:
    """The statement as the async driver wagate runs on that database receives it."""

    def nowhere(*_: Any) -> None: ...

    url = f"{dialect.name}+{DRIVERS[dialect.name]}://"
    return str(statement.compile(dialect=create_mock_engine(url, nowhere).dialect))


def test_only_postgresql_claims_with_skip_locked() -> None:
    assert "FOR UPDATE SKIP LOCKED" in _sql(queue.claimable(POSTGRESQL), POSTGRESQL)
    assert "FOR UPDATE" not in _sql(queue.claimable(SQLITE), SQLITE)


def test_sqlite_commits_one_batch_at_a_time_and_postgresql_several() -> None:
    assert SQLITE.writers(at_most=4) == 1
    assert POSTGRESQL.writers(at_most=4) == 4


def test_a_repeated_status_or_click_is_skipped_on_both_databases() -> None:
    for dialect in (SQLITE, POSTGRESQL):
        assert "ON CONFLICT DO NOTHING" in _sql(statuses.insert_statuses(dialect), dialect)
        assert "ON CONFLICT DO NOTHING" in _sql(statuses.insert_events(dialect), dialect)


def test_an_older_preference_does_not_overwrite_a_newer_one() -> None:
    for dialect in (SQLITE, POSTGRESQL):
        sql = _sql(statuses.upsert_preferences(dialect), dialect)
        assert "ON CONFLICT (waba_id, recipient) DO UPDATE" in sql
        assert "WHERE suppressions.timestamp <= excluded.timestamp" in sql


def test_no_module_but_the_engine_asks_which_database_it_is() -> None:
    asking = [
        path.relative_to(STORE).as_posix()
        for path in STORE.rglob("*.py")
        if path.name != "engine.py" and "dialect.name" in path.read_text()
    ]
    assert asking == []
