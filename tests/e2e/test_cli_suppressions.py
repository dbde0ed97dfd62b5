"""`wagate suppressions` as an operator uses it: real processes on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.e2e.test_cli import as_json, refused, run_all
from tests.support import database_url_for, dispose_database, make_tenant, run_cli, sql
from wagate.adapters.store.tables import suppressions

pytestmark = pytest.mark.slow

BSUID = "US.13491208655302741918"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated SQLite file. The commands run the same store code on PostgreSQL,
    which tests/integration/test_suppressions_api.py covers there; each `wagate` process
    costs ~0.5 s, so the CLI's own paths run once."""
    url = database_url_for("sqlite", tmp_path)
    yield url
    dispose_database(url)


def stopped(database_url: str) -> set[str]:
    """The recipients suppressed now, of every WABA."""
    rows = sql(database_url, select(suppressions.c.recipient).where(suppressions.c.value == "stop"))
    return {row.recipient for row in rows}


def test_an_operator_adds_lists_and_removes_suppressions(database_url: str) -> None:
    pnid = make_tenant(database_url).phone_number_id
    added = run_cli(
        "suppressions", "add", pnid, "+44 7700 900123", BSUID, database_url=database_url
    )
    assert "suppressed 2 recipient(s)" in added.stdout
    assert stopped(database_url) == {"447700900123", BSUID}
    again = as_json(
        run_cli("suppressions", "add", pnid, "447700900123", "--json", database_url=database_url)
    )
    assert again == {"added": 0, "already_suppressed": 1}

    listed, table, first = run_all(
        [
            ["suppressions", "list", pnid, "--json"],
            ["suppressions", "list", pnid],
            ["suppressions", "list", pnid, "--limit", "1"],
        ],
        database_url,
    )
    rows = as_json(listed)
    assert {(row["recipient"], row["kind"]) for row in rows} == {
        ("447700900123", "phone"),
        (BSUID, "bsuid"),
    }
    assert all(row["since"].endswith("Z") for row in rows)
    assert "447700900123" in table.stdout
    assert BSUID in table.stdout
    assert "{" not in table.stdout, "a table, not a Python dict"
    assert "older: --before " in first.stdout
    before = first.stdout.split("older: --before ", 1)[1].split()[0]
    older = as_json(
        run_cli(
            *("suppressions", "list", pnid, "--limit", "1", "--before", before, "--json"),
            database_url=database_url,
        )
    )
    assert [row["recipient"] for row in older] == [rows[1]["recipient"]]

    removed = run_cli(
        "suppressions", "remove", pnid, "+44 (7700) 900-123", database_url=database_url
    )
    assert "removed 447700900123" in removed.stdout
    assert stopped(database_url) == {BSUID}
    twice = run_cli(
        "suppressions",
        "remove",
        pnid,
        BSUID,
        "447700900123",
        database_url=database_url,
        check=False,
    )
    refused(twice, "not suppressed: 447700900123")
    assert f"removed {BSUID}" in twice.stdout
    assert stopped(database_url) == set()


def test_mistakes_are_one_line_and_change_nothing(database_url: str) -> None:
    pnid = make_tenant(database_url).phone_number_id
    results = run_all(
        [
            ["suppressions", "add", pnid, "447700900123", "hello"],
            ["suppressions", "add", pnid, "07700 900123"],
            ["suppressions", "add", "999", "447700900123"],
            ["suppressions", "add", "not-digits", "447700900123"],
            ["suppressions", "remove", pnid, "nope"],
            ["suppressions", "list", "999"],
            ["suppressions", "list", pnid, "--before", "yesterday"],
            ["suppressions", "import", "999", __file__],
        ],
        database_url,
    )
    expected = [
        ("'hello'", "neither a phone number"),
        ("country code",),
        ("no phone number '999'",),
        ("PHONE_NUMBER_ID",),
        ("'nope'",),
        ("no phone number '999'",),
        ("--before",),
        ("no phone number '999'",),
    ]
    for result, words in zip(results, expected, strict=True):
        refused(result, *words)
    missing = run_cli(
        "suppressions", "import", pnid, "/nonexistent.txt", database_url=database_url, check=False
    )
    refused(missing, "nonexistent.txt")
    assert stopped(database_url) == set()


def test_an_import_of_a_file_counts_what_it_did_and_names_the_bad_lines(
    database_url: str, tmp_path: Path
) -> None:
    pnid = make_tenant(database_url).phone_number_id
    run_cli("suppressions", "add", pnid, "447700900007", database_url=database_url)
    lines = ["phone,name", "# exported from the CRM", ""]
    bad_lines = []
    for i in range(1200):  # more than one transaction's worth
        if i in (3, 600, 1100):
            lines.append(f"not-a-number-{i},Someone")
            bad_lines.append(len(lines))
        elif i % 100 == 50:
            lines.append("")
        else:
            lines.append(f'"+44 7700 9{i:05d}",Name {i}')
    lines.append(f"{BSUID};tab\tseparated")
    path = tmp_path / "opt-outs.csv"
    path.write_text("\n".join(lines) + "\n")

    result = as_json(
        run_cli("suppressions", "import", pnid, str(path), "--json", database_url=database_url)
    )
    valid = 1200 - 3 - 12 + 1
    assert (result["added"], result["already_suppressed"]) == (valid - 1, 1)
    assert result["invalid"] == 3
    assert [item["line"] for item in result["invalid_lines"]] == bad_lines
    assert result["invalid_lines"][0]["recipient"] == "not-a-number-3"
    assert len(stopped(database_url)) == valid
    assert BSUID in stopped(database_url)

    table = run_cli("suppressions", "import", pnid, str(path), database_url=database_url)
    assert f"added 0, already suppressed {valid}, invalid 3" in table.stdout
    assert "header line skipped" in table.stdout
    for line in bad_lines:
        assert str(line) in table.stdout
    assert "Traceback" not in table.stderr


def test_every_command_has_help_with_an_example(database_url: str) -> None:
    helps = run_all(
        [["suppressions", command, "--help"] for command in ("add", "list", "remove", "import")],
        database_url,
    )
    for result in helps:
        assert result.returncode == 0, result.stderr
        assert "Example" in result.stdout
        assert "wagate suppressions" in result.stdout
