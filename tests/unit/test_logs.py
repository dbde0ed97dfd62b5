"""Log lines a client cannot forge: control characters in a message are escaped."""

from __future__ import annotations

import logging

from wagate.adapters.logs import EscapingFormatter, escape_controls


def test_line_breaks_and_controls_are_escaped() -> None:
    assert escape_controls("a\nb\rc\x1b[31md\u2028e") == "a\\nb\\rc\\x1b[31md\\u2028e"


def test_a_path_with_a_newline_stays_on_one_log_line() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "wagate.http", logging.INFO, __file__, 1, "refused path=%s", ("/x\nERROR forged",), None
    )
    line = formatter.format(record)
    assert "\n" not in line
    assert line == "INFO refused path=/x\\nERROR forged"


def test_a_traceback_keeps_its_own_lines() -> None:
    formatter = EscapingFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "wagate", logging.ERROR, __file__, 1, "failed\nhere", (), sys.exc_info()
        )
    text = formatter.format(record)
    assert text.startswith("failed\\nhere\nTraceback")
