"""Every `wagate` and `curl` command of the README runs as written against a real gateway.

The README's shell blocks (```sh) are read in order. A command starts at a line
beginning with `wagate` or `curl` and runs to its end (backslash continuations,
quotes spanning lines) in bash, with the variables the README defined before it.
`NAME=value` lines are run too; a value written as a placeholder (`prj_…`) is
filled from the output the README points at (`# the "id" printed above`).
`wagate serve` is the gateway this test starts (on a free port: `BASE` points at
it); blocks marked `expect-error` must fail (curl: HTTP 4xx), every other command
must exit 0 (curl: HTTP 2xx).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, WAGATE, database_url_for, running_gateway

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r"^([A-Z_]+)=(\S*)\s*(?:#\s*(.*))?$")
# Long-running servers: the test runs its own gateway instead.
SERVERS = ("wagate serve", "wagate worker", "wagate sandbox")
PLACEHOLDER = "…"
# curl exits 22 on an HTTP answer of 400 or more with --fail-with-body.
CURL_HTTP_ERROR = 22


@dataclass(frozen=True)
class Command:
    """One command of a shell block, as written."""

    text: str
    expect_error: bool


def commands(markdown: str) -> list[Command]:
    """The `wagate`, `curl` and `NAME=value` commands of the shell blocks, in order."""
    found: list[Command] = []
    for language, info, body in BLOCK.findall(markdown):
        if language not in ("sh", "bash", "shell"):
            continue
        failing = "expect-error" in info
        current = ""
        for line in body.splitlines():
            if not current:
                if not line.strip().startswith(("wagate ", "curl ")) and not ASSIGNMENT.match(line):
                    continue
                current = line
            else:
                current += "\n" + line
            if not current.endswith("\\") and current.count("'") % 2 == 0:
                found.append(Command(current, failing))
                current = ""
        assert not current, f"unfinished command in the README: {current}"
    return found


def field(outputs: list[str], name: str) -> Any:
    """The first `name` in the newest JSON output that has one (depth first)."""

    def search(node: Any) -> Any:
        if isinstance(node, dict):
            if name in node:
                return node[name]
            node = list(node.values())
        if isinstance(node, list):
            for item in node:
                found = search(item)
                if found is not None:
                    return found
        return None

    for output in reversed(outputs):
        body = output.split("\r\n\r\n", 1)[-1] if output.startswith("HTTP/") else output
        try:
            value = search(json.loads(body))
        except ValueError:
            continue
        if value is not None:
            return value
    raise AssertionError(f'no "{name}" in any output so far')


def test_every_command_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    markdown = README.read_text()
    found = commands(markdown)
    assert sum(c.text.startswith("curl") for c in found) >= 6
    assert sum(c.text.startswith("wagate") for c in found) >= 6
    url = database_url_for("sqlite", tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WAGATE_")},
        "WAGATE_DATABASE_URL": url,
        "WAGATE_SECRET_KEY": os.environ["WAGATE_SECRET_KEY"],
        "PATH": f"{Path(WAGATE).parent}{os.pathsep}{os.environ['PATH']}",
    }
    outputs: list[str] = []
    ran: list[str] = []
    with running_gateway(url, tmp_path / "gateway.log") as gateway:
        for command in found:
            text = command.text
            assignment = ASSIGNMENT.match(text)
            if assignment:
                name, value, comment = assignment.groups()
                if name == "BASE":
                    assert value == "http://127.0.0.1:8080", "BASE is where `wagate serve` listens"
                    value = gateway.base_url
                elif PLACEHOLDER in value:
                    wanted = re.search(r'"(\w+)"', comment or "")
                    assert wanted, f"say where {name}'s value comes from: {text}"
                    value = str(field(outputs, wanted.group(1)))
                    assert value.startswith(assignment.group(2).split(PLACEHOLDER)[0]), value
                env[name] = value
                continue
            if text.startswith(SERVERS):
                assert text.startswith("wagate serve"), f"the test runs no {text}"
                continue
            if text.startswith("curl "):
                text = "curl --fail-with-body " + text[len("curl ") :]
            result = subprocess.run(
                ["bash", "-c", text],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            said = f"{command.text}\n-> {result.returncode}\n{result.stdout}{result.stderr}"
            assert "Traceback" not in result.stderr, said
            if command.expect_error:
                if command.text.startswith("curl"):
                    assert result.returncode == CURL_HTTP_ERROR, said
                    assert '"error"' in result.stdout, said
                else:
                    assert result.returncode != 0, said
            else:
                assert result.returncode == 0, said
            outputs.append(result.stdout)
            ran.append(command.text)
    assert any(text.startswith("wagate numbers add") for text in ran)
    assert any("marketing_messages" in text for text in ran)
    replayed = [o for o in outputs if "idempotent-replayed: true" in o.lower()]
    assert len(replayed) == 1, "the README's second idempotent send is a replay"
