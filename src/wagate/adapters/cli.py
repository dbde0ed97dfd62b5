"""The `wagate` command line (typer): serve, worker, sandbox, migrate, projects, keys, numbers,
webhooks, suppressions."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

from wagate.adapters.logs import configure_logging
from wagate.core import admin, webhook_admin
from wagate.domain.model import PhoneNumber, Project
from wagate.domain.notifications import DeliveryView
from wagate.ports import SystemClock
from wagate.settings import Settings

if TYPE_CHECKING:
    from wagate.adapters.store.notify import SqlNotifications
    from wagate.adapters.store.sql import SqlStore
    from wagate.core.suppressions import SuppressionAdmin
    from wagate.domain.suppressions import Suppression


def example(*lines: str) -> str:
    """A help epilog: `Example(s):` and the command lines as written (click keeps `\b` blocks)."""
    title = "Example:" if len(lines) == 1 else "Examples:"
    return "\b\n" + title + "\n" + "\n".join("  " + line for line in lines)


# Plain click help, not typer's rich panels: those print `<bool>` beside every flag.
HELP = {"rich_markup_mode": None, "no_args_is_help": True}

app = typer.Typer(
    help="wagate: a self-hosted WhatsApp marketing-messages gateway (Kapso-compatible).",
    epilog=example("wagate serve --demo", "wagate projects create 'Acme Shoes'"),
    add_completion=False,
    # main() tells errors in one line (or, with --debug, with a plain traceback).
    pretty_exceptions_enable=False,
    **HELP,  # type: ignore[arg-type]
)
projects_app = typer.Typer(
    help="Create, list and update projects.",
    epilog=example("wagate projects list"),
    **HELP,  # type: ignore[arg-type]
)
keys_app = typer.Typer(
    help="Create, list and revoke API keys.",
    epilog=example("wagate keys list --project prj_0123456789abcdef"),
    **HELP,  # type: ignore[arg-type]
)
numbers_app = typer.Typer(
    help="Register, list, update (rotate a token, change mps) and remove WhatsApp phone numbers.",
    epilog=example("wagate numbers list"),
    **HELP,  # type: ignore[arg-type]
)
app.add_typer(projects_app, name="projects")
app.add_typer(keys_app, name="keys")
webhooks_app = typer.Typer(
    help="Add, list, update, test and remove customer webhooks; see their deliveries, replay"
    " dead letters, pause and resume.",
    epilog=example("wagate webhooks list 106540352242922"),
    **HELP,  # type: ignore[arg-type]
)
app.add_typer(numbers_app, name="numbers")
app.add_typer(webhooks_app, name="webhooks")

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class KindChoice(StrEnum):
    """A webhook's wire format."""

    kapso = "kapso"
    meta = "meta"
    standard = "standard"


class UpstreamChoice(StrEnum):
    """Where a number's messages go."""

    sandbox = "sandbox"
    meta = "meta"


def migrate(url: str) -> None:
    """Migrate (imported here so that `--help` starts fast)."""
    from wagate.adapters.store.migrate import migrate as upgrade

    upgrade(url)


def shown_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    from wagate.adapters.startup import printable_url

    return printable_url(url)


def _fail(message: object) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(1)


def _run(work: Callable[[SqlStore], Awaitable[T]], *, create: bool = False) -> T:
    """Check the schema and seal secrets, then run `work` against the configured store.

    Only `create` (serve) makes a new SQLite database; every other command refuses
    a missing one, so that a command run from another directory does not quietly
    work on a new, empty database. No command but `wagate migrate` upgrades a schema:
    one behind or unknown stops the command with one line (`require_schema`), so that
    a newer CLI never migrates a database under running processes. AdminError and a
    missing or wrong WAGATE_SECRET_KEY exit 1 with a message.
    """
    from wagate.adapters.startup import prepare_database_dir, require_database_file
    from wagate.adapters.store.secrets import SecretKeyError
    from wagate.adapters.store.sql import SqlStore

    settings = Settings.from_env()
    if create:
        prepare_database_dir(settings.database_url)
    else:
        require_database_file(
            settings.database_url, settings.data_dir, is_default=settings.database_is_default
        )
    require_schema(settings.database_url)

    async def main() -> T:
        store = SqlStore.from_url(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            secret_key=settings.secret_key,
        )
        try:
            await store.seal_secrets(admin.new_sandbox_token)
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except (admin.AdminError, SecretKeyError) as exc:
        raise _fail(exc) from None


def require_schema(url: str) -> None:
    """Stop (one line) on a schema that is not this wagate's; give a new, empty database
    its schema."""
    from wagate.adapters.store.migrate import require_schema as check

    if check(url):
        console.print(f"created the schema of {shown_url(url)}", markup=False, soft_wrap=True)


async def _nothing(store: SqlStore) -> None:
    return None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value) + "\n")


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database up to the newest schema (creating a SQLite one if missing).

    The database is WAGATE_DATABASE_URL, else wagate.db under WAGATE_DATA_DIR (./data).
    Example: WAGATE_DATABASE_URL=postgresql://wagate@db:5432/wagate wagate migrate
    """
    from wagate.adapters.startup import prepare_database_dir

    settings = Settings.from_env()
    prepare_database_dir(settings.database_url)
    migrate(settings.database_url)
    console.print(f"migrated {shown_url(settings.database_url)}", markup=False, soft_wrap=True)


@app.command("backup")
def backup_command(
    destination: Annotated[
        Path, typer.Argument(help="The file to write (or a directory to write it into).")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace DESTINATION if it exists.")
    ] = False,
) -> None:
    """Copy the SQLite database with SQLite's online backup, safe while the gateway runs.

    The copy is one committed state, checked with `PRAGMA integrity_check`. The
    generated key file (`wagate.db.key`), if any, is copied beside it as
    DESTINATION.key: keep the two together. On PostgreSQL use pg_dump (exit 2).

    Example: wagate backup /var/backups/wagate-$(date +%F).db
    """
    from wagate.adapters.store.backup import BackupError, NotSqlite, backup_sqlite

    settings = Settings.from_env()
    try:
        done = backup_sqlite(settings.database_url, destination, overwrite=force)
    except NotSqlite as exc:
        errors.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    except BackupError as exc:
        raise _fail(exc) from None
    console.print(
        f"backed up {done.source} to {done.destination} ({done.pages} pages, integrity ok)",
        markup=False,
        soft_wrap=True,
    )
    if done.key_file is not None:
        console.print(
            f"copied the secret key file to {done.key_file}: keep it with the backup",
            markup=False,
            soft_wrap=True,
        )


@app.command("secret-key")
def secret_key_command() -> None:
    """Print a new random key for WAGATE_SECRET_KEY (give every process the same one).

    Example: export WAGATE_SECRET_KEY=$(wagate secret-key)
    """
    from wagate.adapters.store.secrets import new_secret_key

    sys.stdout.write(new_secret_key() + "\n")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes (SQLite: keep 1).")] = 1,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Ensure a demo project, sandbox number and key (kept across restarts);"
            " print a curl.",
        ),
    ] = False,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run a delivery worker in the process (default: WAGATE_WORKER, else yes).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the API (and, unless --no-worker, deliver); the database's schema must be
    this version's (run migrate first after an upgrade; an empty database is given it).

    Example: WAGATE_DATA_DIR=/var/lib/wagate wagate serve --host 0.0.0.0 --port 8080
    """
    from wagate.adapters.http.proxies import TrustedProxies
    from wagate.adapters.sandbox.config import SandboxConfig
    from wagate.adapters.startup import require_free_port

    settings = Settings.from_env()
    SandboxConfig.from_env()  # the embedded sandbox's settings: a mistake stops us here
    TrustedProxies.parse(settings.trusted_proxies)  # a bad entry stops here, in one line
    require_free_port(host, port)
    console.print(f"database: {shown_url(settings.database_url)}", markup=False, soft_wrap=True)
    os.environ.setdefault("WAGATE_PUBLIC_URL", f"http://{_loopback(host)}:{port}")
    # Only an explicit flag overrides WAGATE_WORKER (README: WAGATE_WORKER=0 turns it off).
    if worker is not None:
        os.environ["WAGATE_WORKER"] = "1" if worker else "0"
    sandbox_allowed = settings.sandbox_mode() != "off"
    if demo:
        found = _run(
            lambda store: admin.ensure_demo(store, SystemClock(), sandbox_allowed=sandbox_allowed),
            create=True,
        )
        _print_demo(found, host, port)
    else:
        # Check the schema, and stop here with a clear message if the key is wrong.
        _run(_nothing, create=True)
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    from wagate.adapters.loop import granian_loop

    os.environ.setdefault("WAGATE_DATABASE_URL", settings.database_url)
    server = Server(
        "wagate.adapters.http.app:create_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        loop=Loops(granian_loop()),
        # No route speaks WebSocket: granian need not look for upgrades.
        websockets=False,
        log_access=False,
    )
    console.print(f"wagate listening on http://{host}:{port} (docs: /docs)")
    server.serve()


def _loopback(host: str) -> str:
    """How this machine reaches a server listening on `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@app.command("worker")
def worker_command(
    health_port: Annotated[
        int,
        typer.Option(
            envvar="WAGATE_WORKER_HEALTH_PORT",
            show_envvar=True,
            min=0,
            max=65535,
            help="Serve /healthz and /readyz on this port (0: none).",
        ),
    ] = 0,
    health_host: Annotated[
        str, typer.Option(help="Address the health port listens on.")
    ] = "127.0.0.1",
) -> None:
    """Run a delivery worker alone: claim, pace, send to Meta (or the sandbox), record;
    prune messages final for longer than WAGATE_RETENTION_DAYS.

    Sandbox numbers are sent to WAGATE_SANDBOX_URL (default: WAGATE_PUBLIC_URL/sandbox).
    Example: WAGATE_SANDBOX_URL=http://127.0.0.1:18601/sandbox wagate worker
    Example: wagate worker --health-port 8081   (then: curl 127.0.0.1:8081/readyz)
    """
    import signal

    from wagate.adapters.logs import process_started, process_stopped

    settings = Settings.from_env()
    if health_port:
        from wagate.adapters.startup import require_free_port

        require_free_port(health_host, health_port)
    _run(_nothing)
    # After the checks: a mistake is told without importing the whole gateway first.
    from wagate.services import Services, freeze_startup_objects

    async def main() -> None:
        from wagate.adapters.http.health import start_health_server

        services = Services.build(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        services.dispatcher = dispatcher = services.dispatcher_for()
        health = None
        try:
            if health_port:
                health = await start_health_server(services.health, health_host, health_port)
            freeze_startup_objects()
            console.print(
                f"worker {dispatcher.owner} on {shown_url(settings.database_url)}"
                + (f" (health: http://{_loopback(health_host)}:{health_port})" if health else ""),
                markup=False,
                soft_wrap=True,
            )
            process_started(
                "worker",
                shown_url(settings.database_url),
                worker=dispatcher.owner,
                sandbox_upstream=_sandbox_upstream(settings),
                meta_upstream=settings.meta_base_url,
                retention=f"{settings.retention_days}d" if settings.retention_days else "off",
            )
            await services.run_worker(stop)
        finally:
            if health is not None:
                await health.cleanup()
            await services.close()
            process_stopped("worker")

    from wagate.adapters import loop

    loop.run(main())


def _sandbox_upstream(settings: Settings) -> str:
    """Where sandbox numbers' messages go, and whether that was only a guess."""
    url = settings.upstream_base("sandbox")
    if settings.sandbox_url or settings.public_url:
        return url
    return f"{url} (a guess: set WAGATE_SANDBOX_URL to the gateway's /sandbox)"


@app.command("sandbox")
def sandbox_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    mps: Annotated[
        float | None, typer.Option(help="Per-number throughput Meta allows (default 80).")
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(help="Where to POST status webhooks (the gateway's /webhooks/meta)."),
    ] = None,
    app_secret: Annotated[
        str | None, typer.Option(help="Secret that signs the webhooks (X-Hub-Signature-256).")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="WAGATE_ADMIN_TOKEN",
            show_envvar=True,
            help="Bearer token of the operator routes /_stats, /_sends, /_reset, /_numbers"
            " (unset: those routes are refused).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="The one access token every phone number and WABA accepts (default: each"
            " is bound to the first token that uses it).",
        ),
    ] = None,
) -> None:
    """Run the Meta emulator standalone; point WAGATE_META_BASE_URL at it.

    Example: wagate sandbox --port 9000 --webhook-url http://127.0.0.1:8080/webhooks/meta
    """
    from wagate.adapters.logs import process_started, process_stopped
    from wagate.adapters.sandbox import SandboxConfig, run_sandbox
    from wagate.adapters.startup import require_free_port

    SandboxConfig.from_env()  # a bad WAGATE_SANDBOX_* stops it before it listens
    require_free_port(host, port)
    console.print(f"sandbox on http://{_loopback(host)}:{port} (stats: /_stats)")
    process_started("sandbox", None, listen=f"{host}:{port}")
    try:
        run_sandbox(host, port, mps, webhook_url, app_secret, admin_token=admin_token, token=token)
    finally:
        process_stopped("sandbox")


def _print_demo(demo: admin.Demo, host: str, port: int) -> None:
    body = json.dumps(
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "recipient": "US.13491208655302741918",
            "type": "template",
            "template": {"name": "promo_template", "language": {"code": "en_US"}},
        }
    )
    url = (
        f"http://{host}:{port}/meta/whatsapp/v24.0/{demo.number.phone_number_id}/marketing_messages"
    )
    console.print(
        f"demo project: {demo.project.id}   sandbox number: {demo.number.phone_number_id}",
        markup=False,
    )
    if demo.secret is None:
        # The key itself was shown when it was created; only its hash is stored.
        console.print(
            f"API key: the existing demo key {demo.key.prefix}… ({demo.key.id}) is kept."
            f" Lost it? Mint a new one: wagate keys create --project {demo.project.id}",
            markup=False,
            soft_wrap=True,
        )
        key = "$WAGATE_API_KEY"
    else:
        console.print(f"API key (shown once): [bold]{demo.secret}[/bold]")
        key = demo.secret
    console.print("try:")
    sys.stdout.write(
        f"curl -sS -X POST '{url}' -H 'Content-Type: application/json' "
        f"-H \"X-API-Key: {key}\" -d '{body}'\n"
    )
    sys.stdout.flush()


RateLimitOption = Annotated[
    int | None,
    typer.Option(
        "--rate-limit",
        min=0,
        help=(
            "Requests per minute the project's keys may make (HTTP 429, code 4, beyond); "
            "0 means no limit. Each API process enforces it on its own share."
        ),
        show_default=False,
    ),
]


def _rate_limit_text(rate_limit: int | None) -> str:
    return "unlimited" if rate_limit is None else f"{rate_limit}/min"


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="The project's name.", metavar="NAME")],
    rate_limit: RateLimitOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a project and its first API key (shown once); no rate limit unless given.

    Example: wagate projects create shop --rate-limit 600 --json
    """
    limit = rate_limit or None
    project, key = _run(
        lambda store: admin.create_project(store, SystemClock(), name, rate_limit=limit)
    )
    if as_json:
        _print_json(
            {
                "id": project.id,
                "name": project.name,
                "api_key": key.secret,
                "rate_limit": project.rate_limit,
            }
        )
    else:
        console.print(
            f"project {project.id} ({project.name}), {_rate_limit_text(project.rate_limit)}"
        )
        console.print(f"API key (shown once): {key.secret}")


@projects_app.command("update")
def projects_update(
    project_id: Annotated[str, typer.Argument(help="The project's id.", metavar="PROJECT_ID")],
    rate_limit: RateLimitOption = None,
    no_rate_limit: Annotated[
        bool, typer.Option("--no-rate-limit", help="Remove the project's rate limit.")
    ] = False,
    on_131049: Annotated[
        str | None,
        typer.Option(
            "--on-131049",
            help="After Meta's 131049 for a recipient: `hold` its sends for 24 h (default) "
            "or `refuse` them at once with 131049.",
            metavar="hold|refuse",
        ),
    ] = None,
    frequency_cap: Annotated[
        int | None,
        typer.Option(
            "--frequency-cap",
            help="At most N marketing messages per recipient per rolling 24 h "
            "(over it: error 1000003).",
            min=1,
        ),
    ] = None,
    no_frequency_cap: Annotated[
        bool, typer.Option("--no-frequency-cap", help="Remove the project's frequency cap.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Change a project's rate limit, 131049 policy or frequency cap; running gateways apply
    it within the auth cache time.

    Example: wagate projects update prj_123 --rate-limit 1200 --on-131049 refuse --frequency-cap 2
    """
    if rate_limit is not None and no_rate_limit:
        errors.print("[red]error:[/red] give --rate-limit N or --no-rate-limit, not both")
        raise typer.Exit(2)
    if frequency_cap is not None and no_frequency_cap:
        errors.print("[red]error:[/red] give --frequency-cap N or --no-frequency-cap, not both")
        raise typer.Exit(2)
    changes_policies = on_131049 is not None or frequency_cap is not None or no_frequency_cap
    if rate_limit is None and not no_rate_limit and not changes_policies:
        errors.print(
            "[red]error:[/red] give --rate-limit N, --no-rate-limit, --on-131049,"
            " --frequency-cap N or --no-frequency-cap"
        )
        raise typer.Exit(2)

    async def update(store: SqlStore) -> Project:
        project = None
        if rate_limit is not None or no_rate_limit:
            limit = None if no_rate_limit else (rate_limit or None)
            project = await admin.set_rate_limit(store, project_id, limit)
        if changes_policies:
            project = await admin.set_policies(
                store,
                project_id,
                marketing_limit=on_131049,
                frequency_cap=frequency_cap,
                no_frequency_cap=no_frequency_cap,
            )
        assert project is not None
        return project

    project = _run(update)
    if as_json:
        _print_json(_project_json(project))
    else:
        console.print(_project_line(project))


def _project_json(project: Project) -> dict[str, object]:
    return {
        "id": project.id,
        "name": project.name,
        "created_at": project.created_at,
        "rate_limit": project.rate_limit,
        "on_131049": project.marketing_limit,
        "frequency_cap": project.frequency_cap,
    }


def _project_line(project: Project) -> str:
    cap = project.frequency_cap
    return (
        f"project {project.id} ({project.name}), {_rate_limit_text(project.rate_limit)},"
        f" on 131049: {project.marketing_limit},"
        f" frequency cap: {'none' if cap is None else f'{cap} per recipient per 24 h'}"
    )


@projects_app.command("list")
def projects_list(as_json: JsonFlag = False) -> None:
    """List projects.

    Example: wagate projects list --json
    """
    found = _run(lambda store: store.list_projects())
    if as_json:
        _print_json([_project_json(p) for p in found])
        return
    table = Table("id", "name", "rate limit", "on 131049", "frequency cap")
    for project in found:
        cap = project.frequency_cap
        table.add_row(
            project.id,
            project.name,
            _rate_limit_text(project.rate_limit),
            project.marketing_limit,
            "none" if cap is None else f"{cap}/24 h",
        )
    console.print(table)


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="Project id.")],
    label: Annotated[str, typer.Option(help="A note to tell keys apart.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create an API key (shown once).

    Example: wagate keys create --project prj_123 --label billing --json
    """
    issued = _run(lambda store: admin.create_key(store, SystemClock(), project, label))
    if as_json:
        _print_json(
            {"id": issued.key.id, "project_id": project, "api_key": issued.secret, "label": label}
        )
    else:
        console.print(f"key {issued.key.id}: {issued.secret} (shown once)", markup=False)


@keys_app.command("list")
def keys_list(
    project: Annotated[str, typer.Option(help="Project id.")], as_json: JsonFlag = False
) -> None:
    """List a project's keys (prefixes only; keys are never stored).

    Example: wagate keys list --project prj_123
    """
    found = _run(lambda store: admin.list_keys(store, project))
    rows = [
        {
            "id": k.id,
            "prefix": k.prefix,
            "label": k.label,
            "created_at": k.created_at,
            "revoked_at": k.revoked_at,
        }
        for k in found
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "prefix", "label", "revoked")
    for key in found:
        table.add_row(key.id, f"{key.prefix}…", key.label, "yes" if key.revoked_at else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (not the key).", metavar="KEY_ID")],
) -> None:
    """Revoke an API key.

    Example: wagate keys revoke key_123
    """
    _run(lambda store: admin.revoke_key(store, SystemClock(), key_id))
    console.print(f"revoked {key_id}", markup=False)


AccessTokenOption = Annotated[
    str,
    typer.Option(
        help="Meta access token. '-' reads it from standard input. Default: WAGATE_ACCESS_TOKEN."
        " Prefer stdin, --access-token-file or the variable: an argument shows in `ps`.",
        show_default=False,
    ),
]
AccessTokenFileOption = Annotated[
    Path | None,
    typer.Option(
        help="Read the access token from this file (surrounding whitespace ignored).",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]
PhoneNumberIdArgument = Annotated[
    str, typer.Argument(help="Meta's phone number id (digits).", metavar="PHONE_NUMBER_ID")
]


def _access_token(access_token: str, access_token_file: Path | None) -> str:
    """The token from --access-token-file, --access-token (`-`: stdin) or WAGATE_ACCESS_TOKEN."""
    if access_token_file is not None and access_token:
        raise _fail("give the access token once: --access-token or --access-token-file")
    if access_token_file is not None:
        return access_token_file.read_text().strip()
    if access_token == "-":
        return sys.stdin.read().strip()
    if access_token:
        return access_token
    return os.environ.get("WAGATE_ACCESS_TOKEN", "").strip()


def _number_row(number: PhoneNumber) -> dict[str, Any]:
    """A number as the CLI prints it: never its access token."""
    return {
        "phone_number_id": number.phone_number_id,
        "waba_id": number.waba_id,
        "project_id": number.project_id,
        "upstream": number.upstream,
        "mps": number.mps,
    }


def _print_numbers(numbers: list[PhoneNumber]) -> None:
    table = Table("phone number id", "WABA id", "project", "upstream", "mps")
    for number in numbers:
        table.add_row(
            number.phone_number_id,
            number.waba_id,
            number.project_id,
            number.upstream,
            str(number.mps),
        )
    console.print(table)


def _check_id(value: str, what: str) -> None:
    """Refuse a malformed id before the database is opened."""
    try:
        admin.check_meta_id(value, what)
    except admin.AdminError as exc:
        raise _fail(exc) from None


@numbers_app.command(
    "add",
    epilog=example(
        "wagate numbers add --project prj_0123456789abcdef --phone-number-id 106540352242922",
        "wagate numbers add --project prj_0123456789abcdef --phone-number-id 106540352242922"
        " --upstream meta --waba-id 102290129340398 --access-token-file meta-token.txt",
    ),
)
def numbers_add(
    project: Annotated[str, typer.Option(help="Project id.")],
    phone_number_id: Annotated[str, typer.Option(help="Meta's phone number id (digits).")],
    waba_id: Annotated[
        str | None,
        typer.Option(
            help="WhatsApp Business Account id (digits); required for --upstream meta, made up"
            " for a sandbox number when omitted."
        ),
    ] = None,
    upstream: Annotated[
        UpstreamChoice, typer.Option(help="sandbox (built-in emulator) or meta.")
    ] = UpstreamChoice.sandbox,
    access_token: AccessTokenOption = "",
    access_token_file: AccessTokenFileOption = None,
    mps: Annotated[int, typer.Option(help="Messages per second allowed (20, 80, 1000).")] = 80,
    as_json: JsonFlag = False,
) -> None:
    """Register a phone number with a project (its access token is stored encrypted).

    A meta number needs --waba-id and an access token; a sandbox number without a
    token gets a generated one.
    """
    _check_id(phone_number_id, "--phone-number-id")
    token = _access_token(access_token, access_token_file)
    sandbox_allowed = Settings.from_env().sandbox_mode() != "off"
    number = _run(
        lambda store: admin.add_number(
            store,
            SystemClock(),
            project_id=project,
            phone_number_id=phone_number_id,
            waba_id=waba_id,
            upstream=upstream.value,
            access_token=token,
            mps=mps,
            sandbox_allowed=sandbox_allowed,
        )
    )
    if as_json:
        _print_json(_number_row(number))
    else:
        console.print(f"added phone number {number.phone_number_id}", markup=False)
        _print_numbers([number])


@numbers_app.command(
    "list",
    epilog=example(
        "wagate numbers list", "wagate numbers list --project prj_0123456789abcdef --json"
    ),
)
def numbers_list(
    project: Annotated[
        str | None, typer.Option(help="Only this project's numbers (default: every number).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List phone numbers (never their access tokens)."""
    found = _run(lambda store: admin.list_numbers(store, project))
    if as_json:
        _print_json([_number_row(number) for number in found])
    else:
        _print_numbers(found)


@numbers_app.command("show", epilog=example("wagate numbers show 106540352242922 --json"))
def numbers_show(phone_number_id: PhoneNumberIdArgument, as_json: JsonFlag = False) -> None:
    """Show one phone number (never its access token)."""
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    number = _run(lambda store: admin.show_number(store, phone_number_id))
    if as_json:
        _print_json(_number_row(number))
    else:
        _print_numbers([number])


@numbers_app.command(
    "update",
    epilog=example(
        "wagate numbers update 106540352242922 --access-token-file new-token.txt",
        "wagate numbers update 106540352242922 --mps 20",
        'printf %s "$TOKEN" | wagate numbers update 106540352242922 --access-token -',
    ),
)
def numbers_update(
    phone_number_id: PhoneNumberIdArgument,
    access_token: AccessTokenOption = "",
    access_token_file: AccessTokenFileOption = None,
    mps: Annotated[
        int | None, typer.Option(help="New messages per second allowed.", show_default=False)
    ] = None,
    waba_id: Annotated[
        str | None, typer.Option(help="New WhatsApp Business Account id.", show_default=False)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rotate a number's access token, change its mps or WABA id, without a restart.

    Running gateways and workers use the change within their cache time (a few
    seconds); sends already under way finish with the old token, so revoke the old
    token at Meta only a minute after the update.
    """
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    token = _access_token(access_token, access_token_file) or None
    number = _run(
        lambda store: admin.update_number(
            store, phone_number_id, access_token=token, mps=mps, waba_id=waba_id
        )
    )
    if as_json:
        _print_json(_number_row(number))
        return
    changed = [
        what
        for what, given in (("access token", token), ("mps", mps), ("WABA id", waba_id))
        if given is not None
    ]
    console.print(f"updated {', '.join(changed)} of {number.phone_number_id}", markup=False)
    _print_numbers([number])


@numbers_app.command(
    "remove",
    epilog=example(
        "wagate numbers remove 106540352242922", "wagate numbers remove 106540352242922 --force"
    ),
)
def numbers_remove(
    phone_number_id: PhoneNumberIdArgument,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove it even with undelivered messages: they are deleted unsent.",
        ),
    ] = False,
) -> None:
    """Remove a phone number with its messages and statuses; refused while messages are
    queued or being sent, unless --force."""
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    removed = _run(lambda store: admin.remove_number(store, phone_number_id, force=force))
    suffix = (
        f" ({removed.deleted_undelivered} undelivered message(s) deleted unsent)"
        if removed.deleted_undelivered
        else ""
    )
    console.print(f"removed phone number {phone_number_id}{suffix}", markup=False)


# ---- customer webhooks -------------------------------------------------------------

WebhookIdArgument = Annotated[
    str, typer.Argument(help="The webhook's id (whk_...).", metavar="WEBHOOK_ID")
]
KindOption = Annotated[
    KindChoice | None,
    typer.Option(
        help="Wire format: kapso (Kapso's payload v2), meta (Meta's own webhook) or standard"
        " (Standard Webhooks). Default for a new webhook: kapso.",
        show_default=False,
    ),
]
EventOption = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        help="An event to send (repeat for more): whatsapp.message.sent|delivered|read|failed,"
        " whatsapp.contact.opted_out|opted_in. Default for a new webhook: the four message"
        " events.",
        show_default=False,
    ),
]
SecretOption = Annotated[
    str | None,
    typer.Option(
        "--secret",
        help="Signing secret ('-' reads it from standard input); `whsec_` + base64 for"
        " standard. Generated when left out, and printed once.",
        show_default=False,
    ),
]
HeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        help="A custom header NAME=VALUE sent with every webhook (repeat for more).",
        show_default=False,
    ),
]


def _headers(pairs: list[str] | None) -> dict[str, str] | None:
    """--header NAME=VALUE options as a mapping (None when none were given)."""
    if not pairs:
        return None
    headers: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _fail(f"--header takes NAME=VALUE, got {pair!r}")
        headers[name.strip()] = value.strip()
    return headers


def _secret(secret: str | None) -> str | None:
    """--secret's value, from standard input when it is '-'."""
    if secret == "-":
        return sys.stdin.read().strip()
    return secret


def _run_webhooks(
    work: Callable[[SqlStore, SqlNotifications], Awaitable[T]],
) -> T:
    """`_run` with the webhook store beside the store, on the same connections and key."""
    from wagate.adapters.store.notify import SqlNotifications

    return _run(lambda store: work(store, SqlNotifications(store.engine, store.secrets)))


def _iso(ms: int | None) -> str | None:
    """Unix milliseconds as the management API writes times (ISO 8601, UTC)."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _webhook_row(shown: webhook_admin.ShownWebhook) -> dict[str, Any]:
    """A webhook as `--json` prints it: the management API's fields, secret as shown."""
    endpoint = shown.endpoint
    return {
        "id": endpoint.id,
        "phone_number_id": endpoint.phone_number_id,
        "url": endpoint.url,
        "kind": endpoint.kind,
        "events": list(endpoint.events),
        "active": endpoint.active,
        "headers": dict(endpoint.headers),
        "secret_key": shown.secret_key,
        "paused": endpoint.paused_at is not None,
        "paused_at": _iso(endpoint.paused_at),
        "failing_since": _iso(endpoint.failing_since),
        "created_at": _iso(endpoint.created_at),
        "updated_at": _iso(endpoint.updated_at),
    }


def _short_event(event: str) -> str:
    return event.removeprefix("whatsapp.")


def _print_webhooks(found: list[webhook_admin.ShownWebhook]) -> None:
    # Ids are what an operator copies into the next command: never wrapped.
    table = Table(
        Column("id", no_wrap=True),
        Column("phone number id", no_wrap=True),
        "url",
        "kind",
        "events",
        "state",
        "secret",
    )
    for shown in found:
        endpoint = shown.endpoint
        state = "active" if endpoint.active else "inactive"
        if endpoint.paused_at is not None:
            state += ", paused"
        elif endpoint.failing_since is not None:
            state += f", failing since {_iso(endpoint.failing_since)}"
        table.add_row(
            endpoint.id,
            endpoint.phone_number_id,
            endpoint.url,
            endpoint.kind,
            " ".join(_short_event(e) for e in endpoint.events),
            state,
            # A new secret is printed on a line of its own, unwrapped, to be copied.
            "(below)" if shown.secret_is_new else shown.secret_key,
        )
    console.print(table)


def _show_webhook(shown: webhook_admin.ShownWebhook, as_json: bool, said: str = "") -> None:
    """Print a webhook; a secret just made is printed in full, with a warning it is once."""
    if as_json:
        _print_json(_webhook_row(shown))
        return
    if said:
        console.print(said, markup=False, soft_wrap=True)
    _print_webhooks([shown])
    if shown.secret_is_new:
        console.print(
            f"signing secret (shown once): {shown.secret_key}", markup=False, soft_wrap=True
        )


@webhooks_app.command(
    "add",
    epilog=example(
        "wagate webhooks add 106540352242922 https://example.com/hooks/whatsapp",
        "wagate webhooks add 106540352242922 https://example.com/hooks/whatsapp --kind standard"
        " --event whatsapp.message.delivered --event whatsapp.message.read"
        " --header X-Source=wagate --json",
    ),
)
def webhooks_add(
    phone_number_id: PhoneNumberIdArgument,
    url: Annotated[str, typer.Argument(help="Where to POST (http or https).", metavar="URL")],
    kind: KindOption = None,
    event: EventOption = None,
    secret: SecretOption = None,
    header: HeaderOption = None,
    inactive: Annotated[
        bool, typer.Option("--inactive", help="Add it switched off (nothing is sent to it).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Add a webhook to a phone number; its signing secret is printed once."""
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    headers = _headers(header)
    secret_key = _secret(secret)
    shown = _run_webhooks(
        lambda store, hooks: webhook_admin.create_webhook(
            store,
            hooks,
            SystemClock(),
            phone_number_id=phone_number_id,
            url=url,
            kind=(kind or KindChoice.kapso).value,
            events=event or None,
            active=not inactive,
            headers=headers,
            secret_key=secret_key,
        )
    )
    _show_webhook(shown, as_json, f"added webhook {shown.endpoint.id}")


@webhooks_app.command(
    "list",
    epilog=example(
        "wagate webhooks list 106540352242922", "wagate webhooks list 106540352242922 --json"
    ),
)
def webhooks_list(phone_number_id: PhoneNumberIdArgument, as_json: JsonFlag = False) -> None:
    """List a phone number's webhooks (secrets masked)."""
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    found = _run_webhooks(
        lambda store, hooks: webhook_admin.list_webhooks(store, hooks, phone_number_id)
    )
    if as_json:
        _print_json([_webhook_row(shown) for shown in found])
    else:
        _print_webhooks(found)


@webhooks_app.command("show", epilog=example("wagate webhooks show whk_0123456789abcdef --json"))
def webhooks_show(webhook_id: WebhookIdArgument, as_json: JsonFlag = False) -> None:
    """Show one webhook (secret masked)."""
    shown = _run_webhooks(lambda store, hooks: webhook_admin.show_webhook(hooks, webhook_id))
    _show_webhook(shown, as_json)


@webhooks_app.command(
    "update",
    epilog=example(
        "wagate webhooks update whk_0123456789abcdef --url https://example.com/hooks/v2",
        "wagate webhooks update whk_0123456789abcdef --rotate-secret",
        "wagate webhooks update whk_0123456789abcdef --event whatsapp.message.failed --inactive",
    ),
)
def webhooks_update(
    webhook_id: WebhookIdArgument,
    url: Annotated[str | None, typer.Option(help="New URL.", show_default=False)] = None,
    kind: KindOption = None,
    event: EventOption = None,
    secret: SecretOption = None,
    rotate_secret: Annotated[
        bool,
        typer.Option(
            "--rotate-secret",
            help="Generate a new secret (printed once); a standard webhook's old one keeps"
            " signing beside it for 24 hours.",
        ),
    ] = False,
    header: HeaderOption = None,
    no_headers: Annotated[
        bool, typer.Option("--no-headers", help="Remove every custom header.")
    ] = False,
    active: Annotated[
        bool | None,
        typer.Option(
            "--active/--inactive",
            help="Switch it on or off (an inactive webhook gets nothing).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a webhook; what is not given stays. A new secret is printed once."""
    if header and no_headers:
        raise _fail("give --header or --no-headers, not both")
    headers = {} if no_headers else _headers(header)
    secret_key = _secret(secret)
    shown = _run_webhooks(
        lambda store, hooks: webhook_admin.update_webhook(
            hooks,
            SystemClock(),
            webhook_id,
            url=url,
            kind=None if kind is None else kind.value,
            events=event or None,
            active=active,
            headers=headers,
            secret_key=secret_key,
            rotate_secret=rotate_secret,
        )
    )
    _show_webhook(shown, as_json, f"updated webhook {webhook_id}")


@webhooks_app.command("remove", epilog=example("wagate webhooks remove whk_0123456789abcdef"))
def webhooks_remove(webhook_id: WebhookIdArgument) -> None:
    """Remove a webhook with its pending deliveries and its attempts."""
    _run_webhooks(lambda store, hooks: webhook_admin.remove_webhook(hooks, webhook_id))
    console.print(f"removed webhook {webhook_id}", markup=False)


@webhooks_app.command("test", epilog=example("wagate webhooks test whk_0123456789abcdef"))
def webhooks_test(webhook_id: WebhookIdArgument, as_json: JsonFlag = False) -> None:
    """Queue a whatsapp.webhook.test event for a webhook (its fate: `webhooks deliveries`)."""
    delivery_id = _run_webhooks(
        lambda store, hooks: webhook_admin.send_test(store, hooks, hooks, SystemClock(), webhook_id)
    )
    if as_json:
        _print_json({"webhook_id": webhook_id, "delivery_id": delivery_id})
    else:
        console.print(f"queued test event {delivery_id} for {webhook_id}", markup=False)


def _delivery_row(view: DeliveryView) -> dict[str, Any]:
    return {
        "id": view.id,
        "webhook_id": view.endpoint_id,
        "event": view.type,
        "state": view.state,
        "attempts": view.attempts,
        "created_at": _iso(view.created_at),
        "next_attempt_at": _iso(view.next_attempt_at),
        "delivered_at": _iso(view.delivered_at),
        "last_status_code": view.last_status_code,
        "last_error": view.last_error,
        "data": json.loads(view.data),
    }


class StateChoice(StrEnum):
    """A delivery's state."""

    pending = "pending"
    delivering = "delivering"
    delivered = "delivered"
    dead = "dead"


LimitOption = Annotated[
    int, typer.Option(min=1, max=webhook_admin.MAX_PAGE, help="How many, newest first.")
]


@webhooks_app.command(
    "deliveries",
    epilog=example(
        "wagate webhooks deliveries whk_0123456789abcdef",
        "wagate webhooks deliveries whk_0123456789abcdef --state dead --json",
    ),
)
def webhooks_deliveries(
    webhook_id: WebhookIdArgument,
    state: Annotated[
        StateChoice | None,
        typer.Option(help="Only this state (dead: the dead letters).", show_default=False),
    ] = None,
    limit: LimitOption = 20,
    before: Annotated[
        int | None,
        typer.Option(help="Only older than this seq (the last one of a page).", show_default=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a webhook's deliveries, newest first."""
    page = _run_webhooks(
        lambda store, hooks: webhook_admin.list_deliveries(
            hooks,
            hooks,
            webhook_id,
            state=None if state is None else state.value,
            limit=limit,
            before=before,
        )
    )
    if as_json:
        _print_json([{"seq": d.seq, **_delivery_row(d)} for d in page.deliveries])
        return
    table = Table(
        "seq",
        Column("delivery id", no_wrap=True),
        "event",
        "state",
        "attempts",
        "last answer",
        "created",
    )
    for d in page.deliveries:
        answer = d.last_error or ("" if d.last_status_code is None else str(d.last_status_code))
        table.add_row(
            str(d.seq),
            d.id,
            _short_event(d.type),
            d.state,
            str(d.attempts),
            answer,
            _iso(d.created_at) or "",
        )
    console.print(table)
    if page.before is not None:
        console.print(f"older: --before {page.before}", markup=False)


@webhooks_app.command(
    "attempts", epilog=example("wagate webhooks attempts whk_0123456789abcdef --limit 50")
)
def webhooks_attempts(
    webhook_id: WebhookIdArgument, limit: LimitOption = 20, as_json: JsonFlag = False
) -> None:
    """List a webhook's attempts (each POST: answer, error, latency), newest first."""
    found = _run_webhooks(
        lambda store, hooks: webhook_admin.list_attempts(hooks, hooks, webhook_id, limit=limit)
    )
    rows = [
        {
            "delivery_id": a.delivery_id,
            "webhook_id": a.endpoint_id,
            "at": _iso(a.at),
            "latency_ms": a.latency_ms,
            "status_code": a.status_code,
            "error": a.error,
        }
        for a in found
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table("at", Column("delivery id", no_wrap=True), "status", "error", "latency")
    for a in found:
        status = "" if a.status_code is None else str(a.status_code)
        table.add_row(_iso(a.at) or "", a.delivery_id, status, a.error or "", f"{a.latency_ms} ms")
    console.print(table)


@webhooks_app.command(
    "replay",
    epilog=example(
        "wagate webhooks replay whk_0123456789abcdef --all",
        "wagate webhooks replay whk_0123456789abcdef --delivery evt_0123456789abcdef",
    ),
)
def webhooks_replay(
    webhook_id: WebhookIdArgument,
    delivery: Annotated[
        str | None,
        typer.Option("--delivery", help="The dead delivery to send again.", show_default=False),
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Send every dead delivery again.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Send dead deliveries again, from their first attempt: one (--delivery) or all (--all)."""
    if (delivery is None) == (not replay_all):
        errors.print("[red]error:[/red] give one of --delivery EVT_ID or --all")
        raise typer.Exit(2)
    replayed = _run_webhooks(
        lambda store, hooks: webhook_admin.replay(hooks, hooks, SystemClock(), webhook_id, delivery)
    )
    if as_json:
        _print_json({"webhook_id": webhook_id, "replayed": replayed})
    else:
        console.print(f"replaying {replayed} dead delivery(ies) of {webhook_id}", markup=False)


@webhooks_app.command("pause", epilog=example("wagate webhooks pause whk_0123456789abcdef"))
def webhooks_pause(webhook_id: WebhookIdArgument, as_json: JsonFlag = False) -> None:
    """Hold a webhook's deliveries: events still queue for it and go when it resumes."""
    shown = _run_webhooks(
        lambda store, hooks: webhook_admin.pause_webhook(hooks, hooks, SystemClock(), webhook_id)
    )
    _show_webhook(shown, as_json, f"paused webhook {webhook_id}")


@webhooks_app.command("resume", epilog=example("wagate webhooks resume whk_0123456789abcdef"))
def webhooks_resume(webhook_id: WebhookIdArgument, as_json: JsonFlag = False) -> None:
    """Send a paused webhook's waiting deliveries now (also when it was paused for failing)."""
    shown = _run_webhooks(
        lambda store, hooks: webhook_admin.resume_webhook(hooks, SystemClock(), webhook_id)
    )
    _show_webhook(shown, as_json, f"resumed webhook {webhook_id}")


# ---- suppressions ------------------------------------------------------------------

suppressions_app = typer.Typer(
    help="Add, list, remove and import suppressed recipients (no marketing messages to them:"
    " a send is refused with 131050).",
    epilog=example("wagate suppressions list 106540352242922"),
    **HELP,  # type: ignore[arg-type]
)
app.add_typer(suppressions_app, name="suppressions")
RecipientsArgument = Annotated[
    list[str],
    typer.Argument(
        help="Phone numbers with their country code (+44 7700 900123) or BSUIDs.",
        metavar="RECIPIENT...",
        show_default=False,
    ),
]
# Invalid lines of an import printed with their line numbers; the rest are only counted.
SHOWN_INVALID_LINES = 10
_FIRST_FIELD = re.compile(r"[,;\t]")


def _run_suppressions(work: Callable[[SuppressionAdmin], Awaitable[T]]) -> T:
    """`_run` with the suppressions use case on the store's connections."""
    from wagate.adapters.store.suppressions import SqlSuppressions
    from wagate.core.suppressions import SuppressionAdmin

    return _run(
        lambda store: work(SuppressionAdmin(store, SqlSuppressions(store.engine), SystemClock()))
    )


def _checked_recipients(recipients: list[str]) -> list[str]:
    """Every recipient as stored, or exit 1 naming the first bad one (before the database
    is opened, so nothing changes)."""
    from wagate.core.suppressions import MAX_IMPORT, check_recipients

    if len(recipients) > MAX_IMPORT:
        raise _fail(f"give at most {MAX_IMPORT} recipients; import a file for more")
    try:
        return check_recipients(recipients)
    except admin.AdminError as exc:
        raise _fail(exc) from None


def _suppression_row(suppression: Suppression) -> dict[str, Any]:
    """A suppression as `--json` prints it: the management API's fields."""
    return {
        "recipient": suppression.recipient,
        "kind": suppression.kind,
        "since": _iso(suppression.since),
        "updated_at": _iso(suppression.updated_at),
    }


@suppressions_app.command(
    "add",
    epilog=example(
        "wagate suppressions add 106540352242922 '+44 7700 900123' US.13491208655302741918"
    ),
)
def suppressions_add(
    phone_number_id: PhoneNumberIdArgument,
    recipients: RecipientsArgument,
    as_json: JsonFlag = False,
) -> None:
    """Suppress recipients on the WABA of a phone number (all or none: a bad one stops it)."""
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    addresses = _checked_recipients(recipients)
    imported = _run_suppressions(lambda s: s.add_many(phone_number_id, addresses))
    if as_json:
        _print_json({"added": imported.added, "already_suppressed": imported.already_suppressed})
        return
    console.print(
        f"suppressed {imported.added} recipient(s); {imported.already_suppressed} already were",
        markup=False,
    )


@suppressions_app.command(
    "list",
    epilog=example(
        "wagate suppressions list 106540352242922",
        "wagate suppressions list 106540352242922 --limit 100 --json",
    ),
)
def suppressions_list(
    phone_number_id: PhoneNumberIdArgument,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    before: Annotated[
        str | None,
        typer.Option(
            help="Only older than this (the `--before` a page ends with).", show_default=False
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the suppressed recipients of a phone number's WABA, newest first."""
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    after = None if before is None else _before(before)
    page = _run_suppressions(lambda s: s.page(phone_number_id, limit=limit, after=after))
    if as_json:
        _print_json([_suppression_row(s) for s in page.suppressions])
        return
    table = Table(Column("recipient", no_wrap=True), "kind", Column("since", no_wrap=True))
    for s in page.suppressions:
        table.add_row(s.recipient, s.kind, _iso(s.since) or "")
    console.print(table)
    if page.after is not None:
        since, recipient = page.after
        console.print(f"older: --before {since}:{recipient}", markup=False, soft_wrap=True)


def _before(value: str) -> tuple[int, str]:
    """`--before SINCE_MS:RECIPIENT` as the listing's position, or exit 1."""
    since, sep, recipient = value.partition(":")
    if not (sep and since.isascii() and since.isdigit() and recipient):
        raise _fail(f"--before takes the SINCE_MS:RECIPIENT a page ends with, got {value!r}")
    return int(since), recipient


@suppressions_app.command(
    "remove",
    epilog=example("wagate suppressions remove 106540352242922 '+44 7700 900123'"),
)
def suppressions_remove(
    phone_number_id: PhoneNumberIdArgument,
    recipients: RecipientsArgument,
    as_json: JsonFlag = False,
) -> None:
    """Lift the suppressions of recipients; exits 1 naming those that were not suppressed."""
    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    addresses = _checked_recipients(recipients)
    lifted = _run_suppressions(lambda s: s.remove_many(phone_number_id, addresses))
    if as_json:
        _print_json({"removed": lifted.removed, "not_suppressed": lifted.not_suppressed})
    else:
        for recipient in lifted.removed:
            console.print(f"removed {recipient}", markup=False)
    if lifted.not_suppressed:
        raise _fail(f"not suppressed: {', '.join(lifted.not_suppressed)}")


@dataclass(slots=True)
class _ImportTally:
    """What an import did so far: counts, and the first few invalid lines."""

    added: int = 0
    already_suppressed: int = 0
    invalid: int = 0
    header_skipped: bool = False
    shown: list[tuple[int, str, str]] = field(default_factory=list)


def _import_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, recipient, bytes read) of each recipient line of a file: the first
    column of a CSV line, blank lines and `#` comments skipped."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            text = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
            recipient = _FIRST_FIELD.split(text, maxsplit=1)[0].strip().strip("\"'").strip()
            if recipient and not recipient.startswith("#"):
                yield number, recipient, len(raw)
            else:
                yield number, "", len(raw)


@suppressions_app.command(
    "import",
    epilog=example(
        "wagate suppressions import 106540352242922 opt-outs.txt",
        "wagate suppressions import 106540352242922 crm-export.csv --json",
    ),
)
def suppressions_import(
    phone_number_id: PhoneNumberIdArgument,
    file: Annotated[
        Path,
        typer.Argument(
            help="One recipient a line, or a CSV whose first column is the recipient"
            " (a header line is skipped); blank lines and # comments are skipped.",
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="FILE",
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Suppress every recipient of a file, 1,000 a transaction; invalid lines are reported
    (the first few with their line numbers) and skipped, not fatal."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from wagate.core.suppressions import MAX_IMPORT, check_recipient

    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    tally = _ImportTally()

    async def work(suppressions: SuppressionAdmin) -> None:
        await suppressions.waba_of(phone_number_id)  # an unknown number stops it at once
        progress = Progress(
            TextColumn("importing"),
            BarColumn(),
            DownloadColumn(),
            console=errors,
            disable=as_json,
        )
        chunk: list[str] = []
        lines: list[int] = []
        first = True

        async def store() -> None:
            imported = await suppressions.add_many(phone_number_id, chunk)
            tally.added += imported.added
            tally.already_suppressed += imported.already_suppressed
            tally.invalid += len(imported.invalid)
            for refused in imported.invalid:
                if len(tally.shown) < SHOWN_INVALID_LINES:
                    tally.shown.append((lines[refused.index], refused.recipient, refused.error))
            chunk.clear()
            lines.clear()

        with progress:
            task = progress.add_task("import", total=file.stat().st_size)
            for number, recipient, size in _import_lines(file):
                progress.advance(task, size)
                if not recipient:
                    continue
                if first:
                    first = False
                    # A CSV's header ("phone,name"): words, no digit, not a recipient.
                    if not any(c.isdigit() for c in recipient) and not _is_recipient(
                        recipient, check_recipient
                    ):
                        tally.header_skipped = True
                        continue
                chunk.append(recipient)
                lines.append(number)
                if len(chunk) == MAX_IMPORT:
                    await store()
            if chunk:
                await store()

    _run_suppressions(work)
    if as_json:
        _print_json(
            {
                "added": tally.added,
                "already_suppressed": tally.already_suppressed,
                "invalid": tally.invalid,
                "invalid_lines": [
                    {"line": line, "recipient": recipient, "error": error}
                    for line, recipient, error in tally.shown
                ],
            }
        )
        return
    console.print(
        f"added {tally.added}, already suppressed {tally.already_suppressed},"
        f" invalid {tally.invalid}" + (" (header line skipped)" if tally.header_skipped else ""),
        markup=False,
    )
    if tally.shown:
        table = Table("line", Column("recipient", overflow="fold"), "why")
        for line, recipient, error in tally.shown:
            table.add_row(str(line), recipient, error)
        console.print(table)
        if tally.invalid > len(tally.shown):
            console.print(f"... and {tally.invalid - len(tally.shown)} more", markup=False)


def _is_recipient(text: str, check: Callable[[str], str]) -> bool:
    try:
        check(text)
    except admin.AdminError:
        return False
    return True


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="WAGATE_DEBUG",
            help="Show the traceback of a startup or configuration error (else one line).",
        ),
    ] = False,
) -> None:
    """wagate: a self-hosted WhatsApp marketing-messages gateway (Kapso-compatible)."""
    if debug:
        os.environ["WAGATE_DEBUG"] = "1"


def _debugging() -> bool:
    return os.environ.get("WAGATE_DEBUG", "").strip().lower() in ("1", "true", "yes")


def _database_url_or_none() -> str | None:
    try:
        return Settings.from_env().database_url
    except BaseException:  # the settings themselves may be what failed
        return None


def main() -> None:
    """Console-script entry point: escaped log lines, then the command.

    Every error of a command ends here: a known kind (see `startup.one_line`) is one
    line on stderr and exit 1; `--debug` (WAGATE_DEBUG=1) adds its traceback.
    """
    import traceback

    from wagate.adapters.startup import DEBUG_HINT, one_line

    level = os.environ.get("WAGATE_LOG_LEVEL") or "INFO"
    configure_logging(level if level.upper() in logging.getLevelNamesMapping() else "INFO")
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, int | None):
            raise
        # `raise SystemExit("one line")`: a mistake the code found itself.
        if _debugging():
            traceback.print_exc()
        sys.stderr.write(f"error: {exc.code}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if _debugging():
            traceback.print_exc()
        line = one_line(exc, _database_url_or_none())
        if line is None:
            line = f"{type(exc).__name__}: {' '.join(str(exc).split())} {DEBUG_HINT}"
        sys.stderr.write(f"error: {line}\n")
        raise SystemExit(1) from None


# ---- templates -----------------------------------------------------------------------

templates_app = typer.Typer(
    help="List a WABA's message templates from the upstream into the gateway, and show the"
    " templates the send checks use.",
    epilog=example("wagate templates sync 106540352242922"),
    **HELP,  # type: ignore[arg-type]
)
app.add_typer(templates_app, name="templates")


@templates_app.command(
    "sync",
    epilog=example("wagate templates sync 106540352242922"),
)
def templates_sync(phone_number_id: PhoneNumberIdArgument, as_json: JsonFlag = False) -> None:
    """List the templates of a number's WABA from its upstream (Meta, or the sandbox of a
    running gateway) now, and store them for every gateway process.

    Gateways list a WABA on its first send and every WAGATE_TEMPLATE_REFRESH_SECONDS, and
    Meta's template webhooks keep them current: run this after changing templates in
    Meta's manager when you cannot wait.
    """
    from wagate.adapters.store.templates import SqlTemplates
    from wagate.adapters.upstream.templates import GraphTemplates
    from wagate.core.templates import TemplateBook
    from wagate.ports import TemplatesUnavailable

    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    settings = Settings.from_env()

    async def sync(store: SqlStore) -> tuple[PhoneNumber, int]:
        number = await admin.show_number(store, phone_number_id)
        source = GraphTemplates(timeout_s=min(settings.upstream_timeout_seconds, 30.0))
        book = TemplateBook(
            SqlTemplates(store.engine),
            source,
            SystemClock(),
            lambda n: settings.upstream_base(n.upstream),
            settings.meta_graph_version,
        )
        try:
            listed = await book.sync(number)
        except TemplatesUnavailable as exc:
            where = settings.upstream_base(number.upstream)
            hint = (
                " (a sandbox number is listed through a running gateway)"
                if (number.upstream == "sandbox")
                else ""
            )
            raise admin.AdminError(f"{where} did not list the templates: {exc}{hint}") from None
        finally:
            await source.close()
        return number, len(listed)

    number, count = _run(sync)
    if as_json:
        _print_json(
            {
                "phone_number_id": number.phone_number_id,
                "waba_id": number.waba_id,
                "templates": count,
            }
        )
        return
    console.print(f"WABA {number.waba_id}: {count} template(s) listed and stored", markup=False)


def _stored_templates(phone_number_id: str) -> tuple[PhoneNumber, list[Any], int | None]:
    from wagate.adapters.store.templates import SqlTemplates

    async def read(store: SqlStore) -> tuple[PhoneNumber, list[Any], int | None]:
        number = await admin.show_number(store, phone_number_id)
        found, synced_at = await SqlTemplates(store.engine).templates_of(number.waba_id)
        return number, found, synced_at

    return _run(read)


@templates_app.command(
    "list",
    epilog=example(
        "wagate templates list 106540352242922",
        "wagate templates list 106540352242922 --status PAUSED --json",
    ),
)
def templates_list(
    phone_number_id: PhoneNumberIdArgument,
    status: Annotated[
        str | None, typer.Option(help="Only templates in this status (APPROVED, PAUSED...).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The templates the gateway holds for a number's WABA, as the send checks see them."""
    from wagate.domain.templates import template_json

    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    number, found, synced_at = _stored_templates(phone_number_id)
    chosen = [
        t
        for t in sorted(found, key=lambda t: (t.name, t.language))
        if (status is None and t.status != "DELETED") or t.status == (status or "").upper()
    ]
    if as_json:
        _print_json([template_json(t) for t in chosen])
        return
    if synced_at is None:
        console.print(
            f"WABA {number.waba_id} was never listed: `wagate templates sync {phone_number_id}`"
            " (or its first send) lists it",
            markup=False,
        )
    table = Table("language", "status", "category", "id")
    # Names in full (folded, never cut with an ellipsis): they are what a send names.
    table.add_column("name", overflow="fold", ratio=1)
    for t in chosen:
        table.add_row(t.language, t.status, t.category, t.id, t.name)
    console.print(table)
    if synced_at:
        console.print(f"listed from the upstream at {_iso(synced_at)}", markup=False)


@templates_app.command(
    "show",
    epilog=example("wagate templates show 106540352242922 seasonal_promo --language en_US"),
)
def templates_show(
    phone_number_id: PhoneNumberIdArgument,
    name: Annotated[str, typer.Argument(help="The template's name.", metavar="NAME")],
    language: Annotated[
        str | None, typer.Option(help="Only this language (default: every language).")
    ] = None,
) -> None:
    """One template as Meta's JSON (components included), every language unless one is given."""
    from wagate.domain.templates import template_json

    _check_id(phone_number_id, "PHONE_NUMBER_ID")
    _, found, _ = _stored_templates(phone_number_id)
    chosen = [t for t in found if t.name == name and (language is None or t.language == language)]
    if not chosen:
        raise _fail(
            f"no template {name!r}{f' in {language}' if language else ''} is held for this"
            f" number's WABA (see `wagate templates list {phone_number_id}`)"
        )
    _print_json([template_json(t) for t in chosen])
