"""Pacing of one phone number's sends: GCRA spacing at its throughput, AIMD slow-down on 130429.

Pure logic: every time is a float of seconds from a clock the caller owns and
passes in as `now`; nothing here reads a clock or sleeps.
"""

from __future__ import annotations

import math
from typing import Final

# Meta's per-number throughput tiers in messages/s (API-FACTS section 4): shared with
# the WhatsApp Business app, the default, and after Meta's automatic upgrade.
META_TIERS: Final = (20, 80, 1000)


def effective_mps(configured_mps: int | None, tier: int) -> int:
    """The throughput to pace at: the configured cap (if any), never above the number's tier."""
    if tier <= 0:
        raise ValueError(f"tier must be positive, got {tier}")
    if configured_mps is None:
        return tier
    if configured_mps <= 0:
        raise ValueError(f"configured_mps must be positive, got {configured_mps}")
    return min(configured_mps, tier)


def gcra_next(
    tat: float, now: float, interval: float, burst_tolerance: float
) -> tuple[float, float]:
    """One GCRA step: `(allowed_at, new_tat)` for a send asked for at `now`.

    `tat` is the theoretical arrival time booked so far, `interval` is 1/rate and
    `burst_tolerance` is (burst - 1) * interval. The send may go at `allowed_at`
    (>= now) and the caller stores `new_tat` in place of `tat`. Being a pure
    function of its arguments, it gives the same answer whether `tat` lives in a
    `Pacer` or in a database row shared by several worker processes.
    """
    if not (interval > 0 and math.isfinite(interval)):
        raise ValueError(f"interval must be a positive finite number, got {interval}")
    if not (burst_tolerance >= 0 and math.isfinite(burst_tolerance)):
        raise ValueError(f"burst_tolerance must be finite and >= 0, got {burst_tolerance}")
    # Scheduling rather than rejecting: a send that is early is given the first
    # conforming slot instead of being refused, so the queue drains at exactly `rate`.
    allowed_at = max(now, tat - burst_tolerance)
    # The booked slot is max(tat, allowed_at), which equals max(tat, now).
    new_tat = max(tat, now) + interval
    return allowed_at, new_tat


def _check_rate(name: str, rate: float) -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"{name} must be a positive finite number, got {rate}")


class Pacer:
    """GCRA pacer for one phone number, slowed multiplicatively on 130429, recovered additively.

    `now` must come from a monotonic clock: a `now` earlier than one already
    passed is accepted but gives no stronger guarantee than the booked TAT.
    """

    # Responses to sends already in flight when the first 130429 came back report the
    # same overload; counting each of them would collapse the rate to the floor at once,
    # so further 130429s within this many seconds of a slow-down are not a new signal.
    THROTTLE_HOLD_S: Final = 1.0
    # Recovery adds to the rate once per whole second without a 130429.
    RECOVERY_STEP_S: Final = 1.0

    def __init__(
        self, rate_per_s: float, burst: int = 1, *, increase_fraction: float = 0.05
    ) -> None:
        """A pacer at `rate_per_s`, letting `burst` sends through at once after an idle spell.

        `increase_fraction` is the share of the configured rate regained per second of
        success after a slow-down (0.05: from half rate back to full in 10 s).
        """
        _check_rate("rate_per_s", rate_per_s)
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if not (0 < increase_fraction <= 1):
            raise ValueError(f"increase_fraction must be in (0, 1], got {increase_fraction}")
        self._rate = rate_per_s
        self._effective = rate_per_s
        self._burst = burst
        self._increase_fraction = increase_fraction
        # -inf rather than 0.0 so a fresh pacer never delays, whatever the clock's origin.
        self._tat = -math.inf
        self._last_throttle = -math.inf
        self._recover_from = -math.inf

    @property
    def rate(self) -> float:
        """The configured rate in messages/s."""
        return self._rate

    @property
    def effective_rate(self) -> float:
        """The rate currently paced at: the configured rate, or lower after a 130429."""
        return self._effective

    @property
    def burst(self) -> int:
        """How many sends may go back to back after an idle spell."""
        return self._burst

    @property
    def tat(self) -> float:
        """The theoretical arrival time booked so far (-inf before the first reservation)."""
        return self._tat

    def _step(self, now: float) -> tuple[float, float]:
        interval = 1.0 / self._effective
        return gcra_next(self._tat, now, interval, (self._burst - 1) * interval)

    def reserve(self, now: float) -> float:
        """Book the next send slot and return its time (>= now)."""
        allowed_at, self._tat = self._step(now)
        return allowed_at

    def delay(self, now: float) -> float:
        """Seconds from `now` until a send could go, without booking a slot."""
        allowed_at, _ = self._step(now)
        return allowed_at - now

    def throttle(self, now: float, factor: float = 0.5, floor: float = 1.0) -> float:
        """Slow down after an upstream 130429 (multiplicative decrease); return the new rate."""
        if not (0 < factor <= 1):
            raise ValueError(f"factor must be in (0, 1], got {factor}")
        _check_rate("floor", floor)
        # Any 130429 means the number is still over, so recovery waits a full step from now.
        self._recover_from = now
        if now - self._last_throttle < self.THROTTLE_HOLD_S:
            return self._effective
        self._last_throttle = now
        # min(self._effective, ...) keeps a slow-down from ever raising the rate, e.g. when
        # the floor is above the configured rate or above an earlier, lower floor.
        self._effective = min(self._effective, max(floor, self._effective * factor))
        return self._effective

    def recover(self, now: float) -> float:
        """Regain rate after a slow-down, one additive step per whole second of success."""
        if self._effective >= self._rate:
            return self._effective
        steps = math.floor((now - self._recover_from) / self.RECOVERY_STEP_S)
        if steps <= 0:
            return self._effective
        increase = self._increase_fraction * self._rate
        self._effective = min(self._rate, self._effective + steps * increase)
        # Advance by whole steps only, so calls at any cadence add up to the same recovery.
        self._recover_from += steps * self.RECOVERY_STEP_S
        return self._effective

    def set_rate(self, rate: float) -> None:
        """Change the configured rate (e.g. a tier upgrade), keeping any slow-down in force."""
        _check_rate("rate", rate)
        at_full_rate = self._effective >= self._rate
        self._rate = rate
        # A throttled pacer keeps its lower rate and climbs to the new one through recover().
        self._effective = rate if at_full_rate else min(self._effective, rate)


# ---- the shared budget of several workers: state in the phone number's row ---------

RECOVERY_PER_S: Final = 0.05


def shared_factor(factor: float, throttled_at: float, now: float) -> float:
    """The throttle factor now: it climbs back by RECOVERY_PER_S of the rate per second."""
    return min(1.0, factor + RECOVERY_PER_S * max(0.0, now - throttled_at))


def throttled_factor(mps: float, factor: float, throttled_at: float, now: float) -> float:
    """The factor after a 130429: half the current one, never below 1 msg/s.

    Several 130429s within a second count as one, as in `Pacer.throttle`: the
    sends already in flight when Meta pushed back are one signal, not many.
    """
    current = shared_factor(factor, throttled_at, now)
    if 0.0 <= now - throttled_at < Pacer.THROTTLE_HOLD_S:
        return current
    return max(min(1.0, 1.0 / mps), current * 0.5)


def book_slots(tat: float, now: float, interval: float, count: int) -> tuple[list[float], float]:
    """`count` evenly spaced send times from the stored TAT, and the TAT after them."""
    slots: list[float] = []
    for _ in range(count):
        allowed_at, tat = gcra_next(tat, now, interval, 0.0)
        slots.append(allowed_at)
    return slots, tat
