"""When to retry a failed send, and what must wait meanwhile.

Pure logic: the caller passes the attempt number, the error and a `random.Random`;
whether an error is worth retrying is always the error catalogue's call
(`wagate.domain.errors.is_transient`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

from wagate.domain import errors
from wagate.domain.errors import PAIR_RATE_LIMIT, THROUGHPUT_RATE_LIMIT

RetryScope = Literal["message", "recipient", "number"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff settings; `max_attempts` counts every send, the first included.

    Jitter is "equal jitter" with a band of `jitter` (default 20 %): the delay is drawn
    uniformly from [(1 - jitter) * d, d] where d is the capped exponential delay. Not
    "full jitter" (uniform in [0, d]) because most retries here follow a rate limit or
    an overloaded upstream, and a near-zero draw would send straight back into it; the
    lower bound keeps the backoff meaningful while the band still spreads out the many
    messages that failed in the same instant. Drawing only below d keeps `max_delay_s`
    a hard cap.
    """

    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 300.0
    max_attempts: int = 10
    jitter: float = 0.2

    def __post_init__(self) -> None:
        """Reject settings that would give negative, shrinking or unbounded delays."""
        if not (self.base_delay_s > 0 and math.isfinite(self.base_delay_s)):
            raise ValueError(f"base_delay_s must be positive and finite, got {self.base_delay_s}")
        if not (self.factor >= 1 and math.isfinite(self.factor)):
            raise ValueError(f"factor must be >= 1 and finite, got {self.factor}")
        if not (self.max_delay_s >= self.base_delay_s and math.isfinite(self.max_delay_s)):
            raise ValueError(
                f"max_delay_s must be finite and >= base_delay_s, got {self.max_delay_s}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (0 <= self.jitter <= 1):
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")


DEFAULT_RETRY_POLICY: Final = RetryPolicy()


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Retry after `delay` seconds; `scope` says what must wait.

    "message": only this message waits. "recipient": every message to this recipient
    waits (131056, the business/user pair limit). "number": the whole phone number is
    over its throughput (130429) and should also slow down (`wagate.domain.pacing.throttle`).
    """

    delay: float
    scope: RetryScope


def _capped_power(base: float, factor: float, exponent: int, cap: float) -> float:
    """`base * factor**exponent`, but `cap` once it would exceed it (no float overflow)."""
    try:
        value = base * factor**exponent
    except OverflowError:
        return cap
    return min(value, cap)


def _scope(code: int) -> RetryScope:
    if code == PAIR_RATE_LIMIT:
        return "recipient"
    if code == THROUGHPUT_RATE_LIMIT:
        return "number"
    return "message"


def decide(
    attempt: int,
    code: int,
    http_status: int | None,
    rng: random.Random,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> RetryDecision | None:
    """Whether and when to retry after send number `attempt` (1-based) failed with `code`.

    None when the error is permanent or `attempt` was the last one the policy allows.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if not errors.is_transient(code, http_status) or attempt >= policy.max_attempts:
        return None
    if code == PAIR_RATE_LIMIT:
        # Meta asks for 4^n seconds on the pair limit; no jitter, since drawing below
        # 4^n would retry before Meta's wait and only one recipient's messages collide.
        delay = _capped_power(1.0, 4.0, attempt, policy.max_delay_s)
    else:
        nominal = _capped_power(policy.base_delay_s, policy.factor, attempt - 1, policy.max_delay_s)
        delay = nominal * (1.0 - policy.jitter * rng.random())
    return RetryDecision(delay, _scope(code))
