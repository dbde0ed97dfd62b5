"""Pacing: a GCRA budget (with an optional burst), slowed on 130429 and recovering by itself.

One model for whatever must be paced: a phone number (at its mps, no burst) and
a (number, recipient) pair (Meta: one message per 6 s, bursts up to 45). A
number's state is three values that live in a database row shared by every
worker; `plan` books send slots from it and `throttle` slows it after a 130429.
A pair's state is two TATs (`PairState`); `assign` fits a claimed batch's
messages into the number's slots without booking any pair beyond its rate.

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
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
# Meta's pair rule: about one message every 6 s from a number to the same user, with
# bursts of up to 45 borrowed from the future; beyond it Meta answers 131056.
PAIR_INTERVAL_S: Final = 6.0
PAIR_BURST: Final = 45
# A claim looks at up to this many batches of due messages: the first as many as the
# number has slots, the next ones (only when messages were put off: their pair had no
# turn yet) up to the claim's limit each. Put-off messages take no slot, so the next
# batch fills them; a flood to one recipient costs a claim a few batches at most
# (each of its messages is put off once), never a scan of its backlog.
CLAIM_ROUNDS: Final = 4


def batch_size(round_: int, free_slots: int, limit: int) -> int:
    """How many due messages a claim's `round_` (0-based) reads: see CLAIM_ROUNDS."""
    return free_slots if round_ == 0 else max(free_slots, limit)


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


# ---- pairs: one number, one recipient -----------------------------------------------


def pair_rate(interval_s: float, burst: int) -> Rate:
    """The rate a pair is paced at: Meta's interval, and its burst less one kept spare.

    A send paced to the microsecond still reaches Meta a few milliseconds early or
    late; once a pair's burst is used up that jitter alone would be a 131056. One
    message of the burst kept spare absorbs up to a whole interval of it, and costs
    nothing in the long run (the rate is Meta's). A burst of 1 has nothing to spare.
    """
    if not (interval_s > 0 and math.isfinite(interval_s)):
        raise ValueError(f"pair interval must be positive and finite, got {interval_s}")
    if burst < 1:
        raise ValueError(f"pair burst must be >= 1, got {burst}")
    return Rate(max(1, math.ceil(interval_s * MICROS_PER_S - 1e-6)), max(1, burst - 1))


@dataclass(frozen=True, slots=True)
class PairState:
    """A (number, recipient) pair's pacing, shared by every worker (a `pair_pacing` row).

    `tat` is the pair's GCRA TAT, moved by the sends booked. `reserved` (never below
    `tat`) also counts the messages put off to a later turn: each is given the pair's
    next free turn after the ones handed out before, so a flood is spread out once
    instead of being looked at again and again. Once `reserved` is past, the state
    is the same as none (the row may be deleted).
    """

    tat: Micros = 0
    reserved: Micros = 0


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a claim does with each message of a batch (by its index in the batch).

    `sends`: (index, slot) in the number's slot order. `deferred`: (index, due), when
    its pair's turn comes (it stays queued, others pass it). Messages in neither found
    no number slot left and stay as they were. `pairs`: the pairs' states after.
    """

    sends: list[tuple[int, Micros]] = field(default_factory=list)
    deferred: list[tuple[int, Micros]] = field(default_factory=list)
    pairs: dict[str, PairState] = field(default_factory=dict)


def assign(
    room: Sequence[Micros],
    recipients: Sequence[str],
    pairs: Mapping[str, PairState],
    now: Micros,
    rate: Rate,
) -> Assignment:
    """Fit a batch (oldest first) into the number's free slots `room`, pair by pair.

    A message takes the number's next free slot if its pair may send by then; else
    it is put off to its pair's next free turn and does not take a number slot, so a
    flooded recipient never holds up the others. Booking a pair's send at slot s
    moves its TAT to max(tat, s) + interval: any two sends booked k apart are at least
    k * interval - tolerance apart, as for a number. Pairs not in `pairs` have no
    state (none booked, or all of it past).
    """
    result = Assignment(pairs=dict(pairs))
    states = result.pairs
    free = iter(room)
    slot = next(free, None)
    for index, recipient in enumerate(recipients):
        if slot is None:
            break
        pair = states.get(recipient, PairState())
        earliest = max(now, pair.tat - rate.tolerance)
        if earliest <= slot:
            tat = max(pair.tat, slot) + rate.interval
            states[recipient] = PairState(tat, max(pair.reserved, tat))
            result.sends.append((index, slot))
            slot = next(free, None)
            continue
        # The next turn after those handed out already, as `plan` would book it.
        booked = max(pair.tat, pair.reserved)
        states[recipient] = PairState(pair.tat, max(booked, now) + rate.interval)
        result.deferred.append((index, max(now, booked - rate.tolerance)))
    return result


def due_ms(turn: Micros) -> int:
    """A turn as a queue's `due_at` (milliseconds), rounded up: never before the turn."""
    return -(-turn // 1000)


def hold_pair(pair: PairState, until: Micros, rate: Rate) -> PairState:
    """Meta said 131056: the pair sends nothing before `until`, then one per interval.

    Its burst counts as spent (Meta has just said it is): the TAT moves to where the
    first conforming send is `until`.
    """
    tat = max(pair.tat, until + rate.tolerance)
    return PairState(tat, max(pair.reserved, tat))


# A send window spans a second and this much more: a send that leaves on time can
# reach Meta a little later than the one before it left late, and the limit is
# counted where the sends arrive. At 1,000 msg/s it costs 0.1 % of the rate.
WINDOW_GUARD: Final[Micros] = 1_000


class SendWindow:
    """At most `limit` sends in any window of `span` (the last `limit` send times, kept).

    Booked slots are spaced exactly, but a send leaves when its task wakes: a
    wake-up that comes late (a busy event loop, a pause for garbage collection)
    and the on-time ones after it would put more than the limit into one second.
    The window holds a send back only then, so a number paced at its limit keeps
    its average rate and no second ever carries more.
    """

    __slots__ = ("_sent", "span")

    def __init__(self, limit: int, span: Micros = MICROS_PER_S + WINDOW_GUARD) -> None:
        """A window of `limit` sends per `span` microseconds."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.span = span
        # The latest send times, oldest first; the deque drops the oldest beyond `limit`.
        self._sent: deque[Micros] = deque(maxlen=limit)

    @property
    def limit(self) -> int:
        """The sends a window may carry."""
        return self._sent.maxlen or 1

    def resize(self, limit: int) -> None:
        """Change the limit (a number throttled or recovering), keeping the latest sends."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if limit != self.limit:
            self._sent = deque(self._sent, maxlen=limit)

    def earliest(self, now: Micros) -> Micros:
        """When the next send may leave: `now`, or once the oldest of a full window ages out."""
        if len(self._sent) < self.limit:
            return now
        return max(now, self._sent[0] + self.span)

    def record(self, at: Micros) -> None:
        """A send left at `at` (no earlier than `earliest` said)."""
        self._sent.append(at)

    def idle_since(self, now: Micros) -> bool:
        """Whether no send of the window is recent enough to hold one back any more."""
        return not self._sent or self._sent[-1] + self.span <= now


def window_limit(interval: float) -> int:
    """The sends one second may carry at a pace of one per `interval` seconds: as many
    as slots that far apart fit into it (an interval rounded up to whole microseconds,
    333,334 us for 3 msg/s, still fits 3; the tolerance absorbs float noise)."""
    return max(1, math.ceil(1.0 / interval - 1e-6))
