"""Settings read from the environment: where the default database lives, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from wagate.adapters.startup import one_line
from wagate.adapters.store.engine import DatabaseUrlError, database_url
from wagate.settings import Settings


def test_the_default_database_is_an_absolute_path_under_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"WAGATE_DATA_DIR": "state"})
    assert settings.data_dir == str(tmp_path / "state")
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'wagate.db'}"
    assert settings.database_is_default
    assert Settings.from_env({}).database_url.endswith(f"{tmp_path}/data/wagate.db")


def test_a_database_url_given_is_kept_as_given(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://wagate@db:5432/wagate"
    settings = Settings.from_env({"WAGATE_DATABASE_URL": url, "WAGATE_DATA_DIR": "/srv"})
    assert settings.database_url == url
    assert not settings.database_is_default


@pytest.mark.parametrize("value", ["bogus", "fast", "2"])
def test_an_unknown_sqlite_synchronous_level_stops_at_once(value: str) -> None:
    with pytest.raises(SystemExit, match="WAGATE_SQLITE_SYNCHRONOUS"):
        Settings.from_env({"WAGATE_SQLITE_SYNCHRONOUS": value})


def test_a_known_sqlite_synchronous_level_in_any_case_is_accepted() -> None:
    assert Settings.from_env({"WAGATE_SQLITE_SYNCHRONOUS": "normal"}).sqlite_synchronous == "normal"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h:5432/d",
        "postgres://u@h:5432/d",
        "postgresql+psycopg2://u@h:5432/d",
        "postgresql+asyncpg://u@h:5432/d",
    ],
)
def test_every_postgresql_spelling_means_asyncpg(url: str) -> None:
    assert database_url(url).drivername == "postgresql+asyncpg"


@pytest.mark.parametrize("url", ["mysql://u@h/d", "wagate.db", ""])
def test_a_database_wagate_cannot_use_is_one_line(url: str) -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        database_url(url)
    line = one_line(raised.value)
    assert line is not None
    assert "\n" not in line
    assert "postgresql+asyncpg://" in line


def test_an_error_not_foreseen_is_left_to_the_caller() -> None:
    assert one_line(RuntimeError("a bug")) is None


def test_webhook_networks_allowed_are_read_as_cidrs() -> None:
    allowed = " 10.20.0.0/16, fd00::/8,192.0.2.7"
    settings = Settings.from_env({"WAGATE_WEBHOOKS_ALLOW_CIDRS": allowed})
    assert [str(n) for n in settings.webhook_allowed_networks()] == [
        "10.20.0.0/16",
        "fd00::/8",
        "192.0.2.7/32",
    ]
    assert Settings.from_env({}).webhook_allowed_networks() == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WAGATE_WEBHOOKS_ALLOW_CIDRS", "10.20.0.0/16,intranet"),
        ("WAGATE_WEBHOOK_CONCURRENCY", "0"),
        ("WAGATE_WEBHOOK_PAUSE_AFTER_SECONDS", "-1"),
    ],
)
def test_a_bad_webhook_setting_stops_at_once_naming_it(name: str, value: str) -> None:
    with pytest.raises(SystemExit, match=name):
        Settings.from_env({name: value})
