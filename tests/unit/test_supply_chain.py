"""What is installed is what is used: hash-pinned locks, nothing declared that is not imported."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from wagate.adapters.store.engine import DRIVERS

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = {"pytest", "pytest-asyncio", "hypothesis", "ruff", "mypy", "pywa", "schemathesis"}
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    pins = {}
    for line in text.splitlines():
        found = _PIN.match(line)
        if found:
            pins[found.group(1).lower()] = found.group(2).rstrip(" \\")
    return pins


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def _declared() -> tuple[list[str], list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [_requirement_name(r) for r in project["dependencies"]]
    dev = [_requirement_name(r) for r in project["optional-dependencies"]["dev"]]
    return runtime, dev


def _imported_top_level(folder: str) -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def _distributions_of(modules: set[str]) -> set[str]:
    by_module = packages_distributions()
    return {dist.lower() for module in modules for dist in by_module.get(module, [])}


def test_every_pin_of_both_locks_carries_a_hash() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        pinned = [block for block in blocks if _PIN.match(block)]
        assert pinned, lock
        for block in pinned:
            assert "--hash=sha256:" in block, f"{lock}: {block.splitlines()[0]} has no hash"


def test_the_runtime_lock_has_no_test_tools_and_agrees_with_the_dev_lock() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert not TEST_TOOLS & set(runtime), "make serve would install test tools"
    assert set(dev) >= TEST_TOOLS, "make test would miss a test tool"
    for name, version in runtime.items():
        assert dev.get(name) == version, f"{name}: {version} (run) vs {dev.get(name)} (dev)"


def test_every_declared_runtime_dependency_is_imported_by_the_gateway() -> None:
    runtime, _ = _declared()
    used = _distributions_of(_imported_top_level("src"))
    # Database drivers are loaded by SQLAlchemy by name (`sqlite+aiosqlite://`).
    drivers = set(DRIVERS.values())
    unused = [name for name in runtime if name not in used | drivers]
    assert not unused, f"declared but never imported by src/: {unused}"


def test_every_declared_test_tool_is_used() -> None:
    _, dev = _declared()
    used = _distributions_of(_imported_top_level("tests") | _imported_top_level("bench"))
    # Tools run as commands (or pytest plugins named on its command line) rather than imported.
    commands = ("ruff", "mypy", "pytest-xdist")
    unused = [name for name in dev if name not in used and name not in commands]
    assert not unused, f"declared test dependencies never imported by tests/ or bench/: {unused}"
