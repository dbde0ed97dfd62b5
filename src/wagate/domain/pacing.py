"""Pacing: a GCRA budget (with an optional burst), slowed on 130429 and recovering by itself.

One model for whatever must be paced: a phone number (at its mps, no burst) and,
later, a (number, recipient) pair (Meta: one message per 6 s, bursts up to 45).
Its state is three values that live in a database row shared by every worker;
`plan` books send slots from it and `throttle` slows it after a 130429.

Every time here is an integer of microseconds (`Micros`), Unix epoch or any
origin the caller keeps to. Why integers: the shared state is stored as
microseconds already, so it round-trips exactly; slot arithmetic is exact, so
"never more than the limit in any window" holds to the microsecond instead of
to a rounding epsilon (summing float intervals drifts); and an interval rounded
up to a whole microsecond can only make a rate slower, never faster. Callers
convert at their boundary (the clock gives float seconds).

Pure logic: nothing reads a clock or sleeps; `now` is always passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

Micros = int

MICROS_PER_S: Final = 1_000_000
# After a 130429 the rate is halved...
SLOW_DOWN: Final = 0.5
# ...but never below one message per second (or the base rate, if that is lower)...
FLOOR_MPS: Final = 1.0
# ...and climbs back by 5 % of the base rate per second without a new halving
# (from half rate to full in 10 s).
RECOVERY_PER_S: Final = 0.05
# Answers to sends already in flight when the first 130429 came back report the same
# overload: 130429s within this long after a halving are one signal, not many.
THROTTLE_HOLD: Final[Micros] = 1_000_000


def to_micros(seconds: float) -> Micros:
    """Seconds (a clock's float) as whole microseconds, rounded down."""
    return math.floor(seconds * MICROS_PER_S)


def to_seconds(micros: Micros) -> float:
    """Microseconds as float seconds."""
    return micros / MICROS_PER_S


@dataclass(frozen=True, slots=True)
class Rate:
    """A GCRA limit: one send per `interval` on average, up to `burst` back to back.

    `burst` sends may go at once after an idle spell (they are borrowed from the
    future); from then on, one per `interval`.
    """

    interval: Micros
    burst: int = 1

    def __post_init__(self) -> None:
        """Reject a rate that could not pace anything."""
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1 microsecond, got {self.interval}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")

    @classmethod
    def per_second(cls, messages: float, burst: int = 1) -> Rate:
        """`messages` per second; the interval is rounded up, so never faster than asked."""
        if not (messages > 0 and math.isfinite(messages)):
            raise ValueError(f"messages per second must be positive and finite, got {messages}")
        # The tolerance absorbs float noise (1e6 / (1/6) is 6000000.000000001).
        return cls(max(1, math.ceil(MICROS_PER_S / messages - 1e-6)), burst)

    @property
    def tolerance(self) -> Micros:
        """How far ahead of the booked time a send may go: the burst, borrowed."""
        return (self.burst - 1) * self.interval


@dataclass(frozen=True, slots=True)
class PacingState:
    """What several workers share (a phone number's row): TAT and the throttle.

    `tat` is the theoretical arrival time: when the next send would be due at the
    full burst-free rate. `factor` is the throttle factor as it was set at
    `throttled_at` (1.0: never throttled); it recovers with time (`factor_at`).
    """

    tat: Micros = 0
    factor: float = 1.0
    throttled_at: Micros = 0


def base_mps(configured_mps: int, tier_mps: int | None) -> int:
    """The rate a number may use: its configured mps, never above Meta's tier when known."""
    if configured_mps <= 0:
        raise ValueError(f"configured_mps must be positive, got {configured_mps}")
    if tier_mps is None:
        return configured_mps
    if tier_mps <= 0:
        raise ValueError(f"tier_mps must be positive, got {tier_mps}")
    return min(configured_mps, tier_mps)


def factor_at(state: PacingState, now: Micros) -> float:
    """The throttle factor at `now`: the stored one plus RECOVERY_PER_S per second since."""
    elapsed = max(0, now - state.throttled_at)
    return min(1.0, state.factor + RECOVERY_PER_S * elapsed / MICROS_PER_S)


def effective_rate(
    configured_mps: int, tier_mps: int | None, state: PacingState, now: Micros
) -> Rate:
    """The rate to pace a number at now: its base mps times the recovering throttle factor.

    Never below FLOOR_MPS (or the base rate, when that is lower): a number that
    keeps being throttled still sends.
    """
    base = base_mps(configured_mps, tier_mps)
    return Rate.per_second(max(min(base, FLOOR_MPS), base * factor_at(state, now)))


def plan(
    state: PacingState, now: Micros, rate: Rate, horizon: Micros, count: int
) -> tuple[list[Micros], PacingState]:
    """Book up to `count` send slots in [now, now + horizon]; the slots and the state after.

    GCRA, scheduling rather than refusing: each send gets the first conforming
    time, max(now, tat - tolerance), and moves the TAT to max(tat, now) + interval.
    Every booking moves the one TAT forward, so workers that share the state (and
    book under its row's lock) together keep to the rate, whatever their clocks
    say: any two slots booked k apart are at least k * interval - tolerance apart.
    """
    slots: list[Micros] = []
    tat = state.tat
    deadline = now + horizon
    for _ in range(count):
        slot = max(now, tat - rate.tolerance)
        if slot > deadline:
            break
        slots.append(slot)
        tat = max(tat, now) + rate.interval
    return slots, replace(state, tat=tat)


def throttle(state: PacingState, now: Micros, base: float) -> PacingState:
    """Meta said 130429: halve the rate (never below FLOOR_MPS of `base` msg/s).

    A 130429 within THROTTLE_HOLD of the last halving changes nothing: the sends
    already in flight then are answered with the same overload. Later ones halve
    the recovered factor again.
    """
    if not (base > 0 and math.isfinite(base)):
        raise ValueError(f"base must be a positive finite rate, got {base}")
    if state.factor < 1.0 and now - state.throttled_at < THROTTLE_HOLD:
        return state
    floor = min(1.0, FLOOR_MPS / base)
    factor = max(floor, factor_at(state, now) * SLOW_DOWN)
    return replace(state, factor=factor, throttled_at=now)
