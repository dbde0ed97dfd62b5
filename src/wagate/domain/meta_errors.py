"""Meta's error object, one parser for wherever it comes: a webhook's `errors`, a Graph answer.

Meta writes the same object in both places (API-FACTS sections 2 and 3):
`{"code", "title"?, "message", "error_data": {"details"}, "href"?}`; a status
webhook carries a list of them, a Graph error answer one under `"error"`.
"""

from __future__ import annotations

from typing import Any

import msgspec


class MetaErrorData(msgspec.Struct):
    """Meta's error detail."""

    details: str | None = None


class MetaError(msgspec.Struct):
    """One error as Meta sends it; unknown fields are ignored (Meta adds fields)."""

    code: int
    title: str | None = None
    message: str | None = None
    error_data: MetaErrorData | None = None
    href: str | None = None

    @property
    def details(self) -> str | None:
        """Meta's human detail (`error_data.details`), if any."""
        return self.error_data.details if self.error_data else None


def meta_error(body: bytes | str | None) -> MetaError | None:
    """The first Meta error in a JSON body, or None when it holds none.

    The body may be a webhook's `errors` list, a Graph answer's `{"error": {...}}`
    envelope, or one error object; anything else (not JSON, no integer `code`)
    is no error of Meta's.
    """
    if not body:
        return None
    try:
        found: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if isinstance(found, list):
        found = found[0] if found else None
    elif isinstance(found, dict) and "error" in found:
        found = found["error"]
    if not isinstance(found, dict):
        return None
    try:
        return msgspec.convert(found, MetaError)
    except msgspec.ValidationError:
        return None
