"""Every command's help, read in process: an example to copy, only real options in it.

The installed console script's own help is run as a process by tests/e2e/test_cli.py;
here typer's runner reads every command's help in one process (a `wagate` process per
command took ~19 s of the suite).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from wagate.adapters.cli import app

KNOWN_COMMANDS = [
    [],
    ["migrate"],
    ["backup"],
    ["serve"],
    ["projects"],
    ["projects", "create"],
    ["projects", "list"],
    ["projects", "update"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["numbers"],
    ["numbers", "add"],
    ["numbers", "list"],
    ["numbers", "show"],
    ["numbers", "update"],
    ["numbers", "remove"],
    ["templates"],
    ["templates", "sync"],
    ["templates", "list"],
    ["templates", "show"],
    ["webhooks"],
    ["webhooks", "add"],
    ["webhooks", "list"],
    ["webhooks", "show"],
    ["webhooks", "update"],
    ["webhooks", "remove"],
    ["webhooks", "test"],
    ["webhooks", "deliveries"],
    ["webhooks", "attempts"],
    ["webhooks", "replay"],
    ["webhooks", "pause"],
    ["webhooks", "resume"],
    ["suppressions", "add"],
    ["suppressions", "list"],
    ["suppressions", "remove"],
    ["suppressions", "import"],
]


def every_command() -> list[list[str]]:
    """Every command and subcommand the CLI registers, the bare `wagate` first."""
    found: list[list[str]] = [[]]
    found += [[str(command.name)] for command in app.registered_commands]
    for group in app.registered_groups:
        found.append([str(group.name)])
        assert group.typer_instance is not None
        found += [
            [str(group.name), str(command.name)]
            for command in group.typer_instance.registered_commands
        ]
    return found


def test_help_works_on_every_command_and_subcommand(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    commands = every_command()
    assert all(known in commands for known in KNOWN_COMMANDS), commands
    runner = CliRunner()
    results = {
        " ".join(command): runner.invoke(
            app, [*command, "--help"], env={"WAGATE_DATABASE_URL": url}, prog_name="wagate"
        )
        for command in commands
    }
    for command in commands:
        result = results[" ".join(command)]
        assert result.exit_code == 0, (command, result.output, result.exception)
        assert "Usage:" in result.stdout, command
        assert "Traceback" not in result.output
        leaf = command and not (
            len(command) == 1
            and command[0] in ("projects", "keys", "numbers", "webhooks", "templates")
        )
        if leaf:
            assert re.search(r"Examples?:", result.stdout), command
        # An example to copy on every command and group, and no `<bool>` beside a flag.
        assert "Example" in result.stdout, command
        after = result.stdout.split("Example", 1)[1]
        assert "wagate " in after, (command, result.stdout)
        assert "<bool>" not in result.stdout, command
    for option in ("--phone-number-id", "--waba-id", "--upstream", "--access-token", "--mps"):
        assert option in results["numbers add"].stdout
    assert not (tmp_path / "unused.db").exists(), "help must not touch the database"


def test_help_examples_name_only_commands_and_options_that_exist() -> None:
    """Walk the typer app: each example line runs a registered command with its own options."""
    root = typer.main.get_command(app)
    checked = 0
    for path in every_command():
        command: Any = root
        for name in path:
            command = command.commands[name]  # a group's subcommands, by name
        # Examples are in the epilog, or (h-ops' style) an `Example:` line of the docstring.
        text = (command.help or "") + "\n" + (command.epilog or "")
        examples = [line.strip() for line in text.splitlines() if re.search(r"\bwagate\s", line)]
        assert examples, path
        for example in examples:
            command_line = re.search(r"(?:^|[\s(|])wagate\s+(.*)", example)
            assert command_line is not None, (path, example)
            words = command_line.group(1).rstrip(")").split()
            target: Any = root
            named: list[str] = []
            while words and words[0] in getattr(target, "commands", {}):
                named.append(words[0])
                target = target.commands[words.pop(0)]
            # An example runs this command, or (for a group) one of its subcommands.
            assert named[: len(path)] == path, (path, example)
            assert not hasattr(target, "commands"), (path, example)
            options = {opt for param in target.params for opt in param.opts + param.secondary_opts}
            used = {word.split("=")[0] for word in words if word.startswith("--")}
            assert used <= options, (path, example, used - options)
            checked += 1
    assert checked >= len(KNOWN_COMMANDS)
