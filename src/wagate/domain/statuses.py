"""The one status order: which status a message may move to, whatever order webhooks arrive in."""

from __future__ import annotations

from wagate.domain.model import Status

# pending -> sent -> delivered -> read; `failed` may come at any point and is final.
_RANK: dict[str, int] = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}
FINAL: frozenset[str] = frozenset({"read", "failed"})


def advances(current: Status, incoming: Status) -> bool:
    """Whether a message in `current` moves to `incoming`.

    Never backwards (`read` does not become `delivered`), may skip steps (`read`
    without `delivered`), and `failed` is final. A late `failed` after `read` is
    ignored: the user has read the message.
    """
    if current == "failed" or current == incoming:
        return False
    if incoming == "failed":
        return current != "read"
    return _RANK[incoming] > _RANK[current]


def settle(current: Status, incoming: list[Status]) -> Status:
    """The status after a batch of updates, applied in any order."""
    status = current
    for candidate in incoming:
        if advances(status, candidate):
            status = candidate
    return status
