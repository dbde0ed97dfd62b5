"""What a process checks before it starts, and how a startup mistake is told: in one line.

`wagate` commands let every exception reach `one_line`: a mistake of the operator's
(a URL in the wrong form, a database that is down or missing, a port taken, a data
directory that cannot be written) becomes one readable line; `--debug` (or
WAGATE_DEBUG=1) shows the traceback as well.
"""

from __future__ import annotations

import errno
import os
import socket

# What a message about an error we did not foresee ends with.
DEBUG_HINT = "(wagate --debug COMMAND shows the traceback)"


def printable_url(url: str) -> str:
    """A database URL fit to print: the password masked (the text itself if unparseable)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def _flat(text: object) -> str:
    """`text` on one line, without trailing punctuation noise."""
    return " ".join(str(text).split()).rstrip(".")


def _database_error(exc: BaseException, database_url: str | None) -> str:
    """A DBAPI error of connecting or migrating, named by the database it concerns."""
    from sqlalchemy.exc import DBAPIError

    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = _flat(cause) or type(cause).__name__
    where = printable_url(database_url) if database_url else "the database"
    if "does not exist" in reason and "database" in reason:
        return (
            f"database {where}: {reason}; create it first (e.g. createdb), "
            "then run `wagate migrate`"
        )
    if "unable to open database file" in reason:
        return f"cannot open the SQLite database {where}: check that WAGATE_DATA_DIR is writable"
    return f"database {where}: {reason}"


def one_line(exc: BaseException, database_url: str | None = None) -> str | None:
    """A startup or configuration error as one readable line; None for one not foreseen."""
    from alembic.util import CommandError
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from wagate.adapters.store.engine import DatabaseUrlError

    if isinstance(exc, DatabaseUrlError):
        return _flat(exc)
    if isinstance(exc, ArgumentError):
        return f"WAGATE_DATABASE_URL: {_flat(exc)}"
    if isinstance(exc, DBAPIError):
        return _database_error(exc, database_url)
    if isinstance(exc, CommandError):
        return f"migrating {printable_url(database_url or '')}: {_flat(exc)}"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"permission denied: {exc.filename} (check WAGATE_DATA_DIR)"
    if isinstance(exc, socket.gaierror):
        where = printable_url(database_url) if database_url else "a host"
        return f"cannot resolve the host of {where}: {exc.strerror or exc}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or (
        isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    ):
        where = printable_url(database_url) if database_url else "the database"
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else _flat(exc)
        return f"cannot reach the database {where}: {detail or 'timed out'}; is it running?"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or _flat(exc)}: {exc.filename}"
    return None


def require_free_port(host: str, port: int) -> None:
    """Exit with one line if `host:port` cannot be listened on (taken, or no such address).

    granian binds every worker's socket with SO_REUSEPORT, so a second server on a
    port would start and silently take part of the traffic; this probe binds
    without it and fails while anything listens there.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SystemExit(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # A closed connection's TIME_WAIT is nobody listening: no false alarm for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SystemExit(
                    f"port {port} on {host} is already in use (another wagate?): "
                    "stop that process or choose another --port"
                ) from None
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def require_database_file(database_url: str, data_dir: str, *, is_default: bool) -> None:
    """Exit with one line if a SQLite database file is missing (commands that must not
    create one: every command but `migrate` and `serve`)."""
    from wagate.adapters.store.engine import sqlite_file

    path = sqlite_file(database_url)
    if path is None or path.exists():
        return
    where = f"WAGATE_DATA_DIR is {data_dir}" if is_default else "from WAGATE_DATABASE_URL"
    raise SystemExit(
        f"no database at {path} ({where}): run this where `wagate serve` runs, or set "
        "WAGATE_DATA_DIR to the gateway's data directory; `wagate migrate` creates a new one"
    )


def prepare_database_dir(database_url: str) -> None:
    """Create the directory of a SQLite database (`migrate`, `serve`), or exit with one
    line saying why it cannot be."""
    from wagate.adapters.store.engine import sqlite_file

    path = sqlite_file(database_url)
    if path is None:
        return
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(
            f"cannot create the data directory {folder} (WAGATE_DATA_DIR): {exc.strerror or exc}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SystemExit(f"the data directory {folder} (WAGATE_DATA_DIR) is not writable")
