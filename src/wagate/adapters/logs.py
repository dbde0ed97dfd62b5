"""Log lines that a client cannot forge: control characters in messages are escaped."""

from __future__ import annotations

import logging

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
