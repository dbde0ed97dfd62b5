"""Imports point inwards: adapters -> core -> ports -> domain, never the other way.

Every module under src/wagate is parsed (not imported) and each of its imports,
lazy ones inside functions included, is checked against the rules below.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
# What the domain may use: pure computation. No clock, no sockets, no files, no logging.
PURE_STDLIB = frozenset(
    {
        "__future__",
        "base64",
        "binascii",
        "collections",
        "dataclasses",
        # Dates of given instants (a webhook's timestamp); the domain never asks it for now().
        "datetime",
        "enum",
        "functools",
        "hashlib",
        "hmac",
        "ipaddress",
        "itertools",
        "json",
        "math",
        "random",
        "re",
        # Fresh webhook secrets: randomness, like `random`, not a clock or a socket.
        "secrets",
        "typing",
        # Parsing only: urllib.request stays out.
        "urllib.parse",
    }
)
# standardwebhooks: the `standard` format's signer (hmac over given bytes and a given time).
PURE_LIBRARIES = frozenset({"msgspec", "phonenumbers", "standardwebhooks"})


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def refusal(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported` (None: it may)."""
    top = imported.split(".")[0]
    if _inside(importer, "wagate.domain"):
        if top == "wagate":
            return None if _inside(imported, "wagate.domain") else "the domain imports only itself"
        if top in PURE_LIBRARIES or any(_inside(imported, pure) for pure in PURE_STDLIB):
            return None
        return f"the domain does no I/O, and {top} is not known to be pure"
    if _inside(importer, "wagate.ports"):
        if top == "wagate" and not _inside(imported, "wagate.domain"):
            return "the ports name only domain types"
        return None
    if _inside(importer, "wagate.core"):
        if top == "wagate":
            allowed = ("wagate.domain", "wagate.ports", "wagate.core")
            if not any(_inside(imported, package) for package in allowed):
                return "the core is written only against the domain and the ports"
            return None
        if top in sys.stdlib_module_names or top == "msgspec":
            return None
        return f"the core uses no library but msgspec, not {top}"
    if _inside(importer, "wagate.adapters.http") and _inside(imported, "wagate.adapters.store"):
        return "HTTP reaches the store only through the core's use cases"
    if _inside(importer, "wagate.adapters.store") and _inside(imported, "wagate.adapters.http"):
        return "the store knows nothing of HTTP"
    if _inside(importer, "wagate.adapters.memory") and (
        _inside(imported, "wagate.adapters.store") or _inside(imported, "wagate.adapters.http")
    ):
        return "the in-memory store stands on the domain alone, beside the SQL one"
    return None


def imports_of(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """Every module a source file imports, relative imports resolved, lazy ones included."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.append(target)
            # `from wagate.adapters import store` imports wagate.adapters.store.
            found.extend(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """Each wrong-way import of a module, with the rule it breaks."""
    found = []
    for imported in imports_of(module, source, is_package=is_package):
        reason = refusal(module, imported)
        if reason is not None:
            found.append(f"{module} imports {imported}: {reason}")
    return found


def modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every module of the package."""
    found = []
    for path in sorted((SRC / "wagate").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def test_the_walk_sees_every_layer() -> None:
    names = {name for name, _ in modules()}
    for layer in ("wagate.domain.model", "wagate.ports", "wagate.core.accept"):
        assert layer in names
    assert len(names) > 40


def test_no_module_imports_the_wrong_way() -> None:
    found = []
    for name, path in modules():
        found.extend(violations(name, path.read_text(), is_package=path.name == "__init__.py"))
    assert found == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("wagate.domain.pacing", "import time"),
        ("wagate.domain.pacing", "import asyncio"),
        ("wagate.domain.ssrf", "import urllib.request"),
        ("wagate.domain.ssrf", "import socket"),
        ("wagate.domain.model", "from wagate.ports import Clock"),
        ("wagate.domain.model", "import sqlalchemy"),
        ("wagate.ports", "from wagate.core.accept import Acceptor"),
        ("wagate.core.accept", "from wagate.adapters.store.sql import SqlStore"),
        ("wagate.core.accept", "from wagate.adapters import store"),
        ("wagate.core.ingest", "from wagate.services import Services"),
        ("wagate.core.reads", "def lazy():\n    import sqlalchemy\n"),
        ("wagate.core.reads", "from ..adapters.http import app"),
        ("wagate.adapters.http.app", "from wagate.adapters.store.statuses import TimelineEntry"),
        ("wagate.adapters.store.sql", "from wagate.adapters.http.reads import MessageView"),
        ("wagate.adapters.memory.store", "from wagate.adapters.store.tables import messages"),
    ],
)
def test_a_wrong_way_import_is_caught(module: str, source: str) -> None:
    assert violations(module, source) != []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("wagate.domain.pacing", "import math\nfrom wagate.domain.model import Status"),
        ("wagate.core.accept", "import msgspec\nfrom wagate.ports import Outbox"),
        ("wagate.core.reads", "from .access import Access"),
        ("wagate.adapters.http.app", "from wagate.core.reads import Reader"),
        ("wagate.services", "from wagate.adapters.store.sql import SqlStore"),
    ],
)
def test_a_right_way_import_passes(module: str, source: str) -> None:
    assert violations(module, source) == []
