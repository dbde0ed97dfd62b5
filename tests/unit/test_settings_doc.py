"""docs/settings.md names every `WAGATE_*` setting the code reads, its default, and no other."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from wagate.adapters.sandbox.config import SandboxConfig
from wagate.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "settings.md"
# Settings of issue 11 that other parts of that issue add to the code; each is in the
# contract, documented here before its code lands. Remove a name once the code reads it.
PENDING = {"WAGATE_RETENTION_DAYS", "WAGATE_WORKER_HEALTH_PORT"}


def documented() -> dict[str, str]:
    """Each setting of the page's tables and its default cell (backticks removed)."""
    rows = re.findall(r"^\| `(WAGATE_[A-Z0-9_]+)` \|([^|]*)\|", DOC.read_text(), re.MULTILINE)
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a setting is documented twice"
    return {name: default.strip().strip("`") for name, default in rows}


def settings_names() -> set[str]:
    return {f"WAGATE_{f.name.upper()}" for f in fields(Settings)}


def test_every_setting_of_the_code_is_documented() -> None:
    missing = (settings_names() | set(SandboxConfig().to_env())) - set(documented())
    assert not missing, f"document in docs/settings.md: {sorted(missing)}"


def test_the_page_names_no_setting_the_code_does_not_read() -> None:
    source = "\n".join(path.read_text() for path in (ROOT / "src").rglob("*.py"))
    read = settings_names() | set(SandboxConfig().to_env()) | PENDING
    read |= set(re.findall(r"WAGATE_[A-Z0-9_]+", source))
    unknown = set(documented()) - read
    assert not unknown, f"docs/settings.md names settings nothing reads: {sorted(unknown)}"


def test_the_documented_defaults_are_the_code_s() -> None:
    page = documented()
    for f in fields(Settings):
        default = f.default  # as declared: an instance resolves paths against the cwd
        cell = page[f"WAGATE_{f.name.upper()}"]
        if isinstance(default, bool):
            assert cell == ("1" if default else "0"), f.name
        elif isinstance(default, int | float):
            assert float(cell) == default, (f.name, cell)
        elif default and f.name != "database_url":
            assert cell == default, (f.name, cell)
    sandbox = SandboxConfig()
    for name in ("mps", "status_delay", "approval_delay", "pair_burst", "pair_interval"):
        assert float(page[f"WAGATE_SANDBOX_{name.upper()}"]) == getattr(sandbox, name), name
