"""Per-project request limits, Kapso-style: N requests per minute, as GCRA.

GCRA (the generic cell rate algorithm) keeps one number per project, the
theoretical arrival time: a project may make `limit` requests at once, then one
every `60 / limit` seconds. No I/O and no clock: the caller passes `now`.

The limiter lives in one process's memory. With several API processes each one
enforces the limit on the requests it serves, so a project spread evenly over
P processes can make up to P x limit requests a minute in all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Quota:
    """The answer for one request: allowed or not, what is left, when to retry."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int = 0


class RateLimiter:
    """GCRA per project; its memory is one float per project that has a limit."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    def take(self, project_id: str, limit: int, now: float) -> Quota:
        """Count one request of a project limited to `limit` per minute."""
        interval = WINDOW_SECONDS / limit
        tat = max(self._tat.get(project_id, now), now)
        new_tat = tat + interval
        allowed_at = new_tat - WINDOW_SECONDS
        if now < allowed_at:
            # Whole seconds, rounded up: retrying after Retry-After always succeeds.
            return Quota(False, limit, 0, max(1, math.ceil(allowed_at - now)))
        self._tat[project_id] = new_tat
        remaining = int((WINDOW_SECONDS - (new_tat - now)) / interval + 1e-9)
        return Quota(True, limit, max(0, remaining))

    def __len__(self) -> int:
        return len(self._tat)
