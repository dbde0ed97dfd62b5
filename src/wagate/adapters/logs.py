"""Log lines that a client cannot forge: control characters in messages are escaped."""

from __future__ import annotations

import logging
import os

# C0 controls, DEL, and the C1/Unicode line breaks some log viewers honour.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, 0x85)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b` ...)."""
    return text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """Escapes the message part, so a `%0a` in a path cannot start a forged log line.

    Tracebacks (appended after the message) keep their own line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The formatted line with the message's control characters escaped."""
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def configure_logging(level: str) -> None:
    """Root logging to stderr through the escaping formatter."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Alembic narrates every plugin it loads at INFO: only its warnings are news.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)


def version() -> str:
    """The installed wagate's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("wagate")
    except PackageNotFoundError:
        return "unknown"


_processes = logging.getLogger("wagate.process")


def process_started(role: str, database: str | None, **details: object) -> None:
    """Log a process's start: version, role (api, api+worker, worker, sandbox), database
    (already without its password) and whatever else tells this process apart."""
    extra = "".join(f" {name}={value}" for name, value in details.items())
    _processes.info(
        "wagate %s started: role=%s pid=%d database=%s%s",
        version(),
        role,
        os.getpid(),
        database or "-",
        extra,
    )


def process_stopped(role: str) -> None:
    """Log a process's stop."""
    _processes.info("wagate %s stopped: role=%s pid=%d", version(), role, os.getpid())
