"""The fast path of `migrate` must know the newest migration."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from wagate.adapters.store.migrate import HEAD, alembic_config


def test_head_is_the_newest_migration() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused.db"))
    assert script.get_current_head() == HEAD
