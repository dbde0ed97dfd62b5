"""What may be stored of text that comes from outside (Meta's answers, webhooks).

PostgreSQL text cannot hold NUL, and an index entry cannot exceed ~2.7 kB: a
value that breaks either would fail the whole write it is part of. These rules
decide, before any write, what is kept, cleaned or refused.
"""

from __future__ import annotations

from typing import Final

# Meta's wamids are ~60 characters; the sandbox's for a 128-character BSUID ~220.
# Both wamid columns are indexed, and PostgreSQL refuses index entries over 2,704
# bytes: 1 KiB leaves room while no honest wamid comes near it.
MAX_WAMID_BYTES: Final = 1024
# Meta's timestamps are Unix seconds; past year 9999 is not a time (and may not fit BIGINT).
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999


def usable_wamid(value: str | None) -> bool:
    """Whether a wamid can be stored and matched: non-empty, no NUL, at most MAX_WAMID_BYTES."""
    if not value or "\x00" in value:
        return False
    try:
        return len(value.encode()) <= MAX_WAMID_BYTES
    except UnicodeEncodeError:  # a lone surrogate: no database can store it
        return False


def without_nul(value: str | None) -> str | None:
    """Free text (an error title, a detail) without NUL characters, which PostgreSQL refuses."""
    return value.replace("\x00", "") if value and "\x00" in value else value


def fits(value: str | None, max_chars: int) -> bool:
    """Whether an identifier (a recipient, a WABA id) can be stored as it is."""
    return value is None or (len(value) <= max_chars and "\x00" not in value)


def usable_timestamp(value_ms: int) -> bool:
    """Whether a timestamp in Unix milliseconds is a time at all."""
    return 0 <= value_ms <= MAX_TIMESTAMP_MS
