"""Pacing behaviour under a fake clock: times are plain floats, nothing sleeps."""

from __future__ import annotations

import ast
import bisect
import inspect
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wagate.domain import pacing
from wagate.domain.pacing import META_TIERS, Pacer, effective_mps, gcra_next

# Sums of 1/rate drift by a few ulps; real overbooking shows up as a whole interval.
EPS = 1e-6


def max_in_window(times: list[float], window: float) -> int:
    """The most send times falling in any half-open window [t, t + window)."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        end = bisect.bisect_left(ordered, start + window - EPS)
        best = max(best, end - i)
    return best


def test_80_per_s_spreads_800_reservations_over_ten_seconds() -> None:
    pacer = Pacer(80)
    times = [pacer.reserve(0.0) for _ in range(800)]
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(9.9875)
    assert pacer.tat == pytest.approx(10.0)
    assert max_in_window(times, 1.0) == 80


def test_reservations_are_evenly_spaced_at_the_rate() -> None:
    pacer = Pacer(80)
    times = [pacer.reserve(0.0) for _ in range(200)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap == pytest.approx(1 / 80) for gap in gaps)


def test_reserve_never_returns_a_time_before_now() -> None:
    pacer = Pacer(10)
    assert pacer.reserve(5.0) == 5.0
    assert pacer.reserve(5.0) == pytest.approx(5.1)
    # After an idle spell the next send goes at once, not at the stale booked slot.
    assert pacer.reserve(100.0) == 100.0


def test_delay_peeks_without_booking() -> None:
    pacer = Pacer(4)
    pacer.reserve(0.0)
    assert pacer.delay(0.0) == pytest.approx(0.25)
    assert pacer.delay(0.0) == pytest.approx(0.25)
    assert pacer.delay(0.1) == pytest.approx(0.15)
    assert pacer.delay(1.0) == 0.0
    assert pacer.reserve(0.0) == pytest.approx(0.25)
    assert pacer.delay(0.0) == pytest.approx(0.5)


def test_burst_lets_that_many_through_at_once_then_paces() -> None:
    pacer = Pacer(1, burst=5)
    times = [pacer.reserve(0.0) for _ in range(8)]
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([1.0, 2.0, 3.0])


def test_throttle_halves_the_rate_and_recover_restores_it() -> None:
    pacer = Pacer(80)
    assert pacer.effective_rate == 80
    assert pacer.throttle(10.0) == 40
    assert pacer.effective_rate == 40
    # Slower rate means wider spacing from the next reservation on.
    first = pacer.reserve(10.0)
    assert pacer.reserve(10.0) - first == pytest.approx(1 / 40)

    assert pacer.recover(10.5) == 40  # less than a whole second of success
    assert pacer.recover(11.0) == pytest.approx(44)  # +5 % of 80
    assert pacer.recover(11.9) == pytest.approx(44)
    assert pacer.recover(13.0) == pytest.approx(52)
    assert pacer.recover(30.0) == 80
    assert pacer.recover(60.0) == 80
    assert pacer.effective_rate == pacer.rate == 80


def test_recovery_is_the_same_whatever_the_call_cadence() -> None:
    often, rarely = Pacer(80), Pacer(80)
    often.throttle(0.0)
    rarely.throttle(0.0)
    # Calls every 0.75 s land between whole seconds; the leftover must carry over.
    for tick in range(1, 11):
        often.recover(tick * 0.75)
    rarely.recover(7.5)
    assert often.effective_rate == pytest.approx(rarely.effective_rate)
    assert rarely.effective_rate == pytest.approx(40 + 7 * 4)


def test_a_burst_of_130429_within_the_hold_slows_down_once() -> None:
    pacer = Pacer(80)
    for offset in (0.0, 0.1, 0.5, 0.99):
        pacer.throttle(10.0 + offset)
    assert pacer.effective_rate == 40
    assert pacer.throttle(11.0) == 20


def test_a_130429_during_recovery_restarts_the_recovery_clock() -> None:
    pacer = Pacer(80)
    pacer.throttle(0.0)
    pacer.throttle(0.5)  # held: no further halving, but the number is still over
    assert pacer.recover(1.25) == 40
    assert pacer.recover(1.5) == pytest.approx(44)


def test_throttle_never_goes_below_the_floor() -> None:
    pacer = Pacer(80)
    for second in range(20):
        pacer.throttle(float(second))
    assert pacer.effective_rate == 1.0
    other = Pacer(80)
    for second in range(20):
        other.throttle(float(second), factor=0.5, floor=25.0)
    assert other.effective_rate == 25.0


def test_throttle_never_raises_the_rate_above_the_configured_one() -> None:
    pacer = Pacer(0.5)
    assert pacer.throttle(0.0, floor=1.0) == 0.5
    assert pacer.effective_rate == 0.5


def test_set_rate_when_at_full_rate_follows_the_new_rate() -> None:
    pacer = Pacer(80)
    pacer.set_rate(1000)
    assert pacer.rate == pacer.effective_rate == 1000
    pacer.set_rate(20)
    assert pacer.rate == pacer.effective_rate == 20


def test_set_rate_keeps_a_slow_down_and_recovers_to_the_new_rate() -> None:
    pacer = Pacer(80)
    pacer.throttle(0.0)
    pacer.set_rate(1000)
    assert pacer.effective_rate == 40
    assert pacer.recover(1.0) == pytest.approx(90)  # steps are 5 % of the new rate
    assert pacer.recover(100.0) == 1000
    pacer.throttle(200.0)
    pacer.set_rate(100)
    assert pacer.effective_rate == 100


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate_per_s": 0}, "rate_per_s"),
        ({"rate_per_s": -1}, "rate_per_s"),
        ({"rate_per_s": math.inf}, "rate_per_s"),
        ({"rate_per_s": math.nan}, "rate_per_s"),
        ({"rate_per_s": 1, "burst": 0}, "burst"),
        ({"rate_per_s": 1, "increase_fraction": 0}, "increase_fraction"),
    ],
)
def test_pacer_rejects_invalid_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Pacer(**kwargs)  # type: ignore[arg-type]


def test_throttle_and_set_rate_reject_invalid_arguments() -> None:
    pacer = Pacer(80)
    with pytest.raises(ValueError, match="factor"):
        pacer.throttle(0.0, factor=0.0)
    with pytest.raises(ValueError, match="factor"):
        pacer.throttle(0.0, factor=1.5)
    with pytest.raises(ValueError, match="floor"):
        pacer.throttle(0.0, floor=0.0)
    with pytest.raises(ValueError, match="rate"):
        pacer.set_rate(0)
    assert pacer.effective_rate == 80


def test_meta_tiers() -> None:
    assert META_TIERS == (20, 80, 1000)


@pytest.mark.parametrize(
    ("configured", "tier", "expected"),
    [(None, 80, 80), (50, 80, 50), (500, 80, 80), (1000, 1000, 1000), (None, 20, 20)],
)
def test_effective_mps_is_the_lower_of_configured_and_tier(
    configured: int | None, tier: int, expected: int
) -> None:
    assert effective_mps(configured, tier) == expected


@pytest.mark.parametrize(("configured", "tier"), [(None, 0), (10, -1), (0, 80), (-5, 80)])
def test_effective_mps_rejects_non_positive_values(configured: int | None, tier: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        effective_mps(configured, tier)


def test_gcra_next_examples() -> None:
    # Fresh or idle: goes now, books one interval ahead.
    assert gcra_next(0.0, 5.0, 0.5, 0.0) == (5.0, 5.5)
    # Early: waits for the booked slot.
    assert gcra_next(6.0, 5.0, 0.5, 0.0) == (6.0, 6.5)
    # Early but within the burst tolerance: goes now, still books after the last slot.
    assert gcra_next(6.0, 5.0, 0.5, 1.0) == (5.0, 6.5)
    assert gcra_next(6.0, 5.0, 0.5, 0.5) == (5.5, 6.5)


@pytest.mark.parametrize(
    ("interval", "tolerance"), [(0.0, 0.0), (-1.0, 0.0), (math.inf, 0.0), (1.0, -0.1)]
)
def test_gcra_next_rejects_invalid_arguments(interval: float, tolerance: float) -> None:
    with pytest.raises(ValueError, match=r"interval|burst_tolerance"):
        gcra_next(0.0, 0.0, interval, tolerance)


def test_workers_sharing_a_stored_tat_share_one_budget() -> None:
    # Three workers each read the number's TAT from the same row, apply gcra_next and
    # write it back: together they must keep to the one rate, not three times it.
    row = {"tat": 0.0}
    interval = 1 / 80
    times: list[float] = []
    for i in range(400):
        now = i * 0.001  # requests arrive far faster than 80/s, from any worker
        allowed_at, row["tat"] = gcra_next(row["tat"], now, interval, 0.0)
        times.append(allowed_at)
    assert max_in_window(times, 1.0) == 80
    assert times[-1] == pytest.approx(399 / 80)


def test_pacer_matches_gcra_next_on_the_same_inputs() -> None:
    pacer = Pacer(3, burst=2)
    tat = -math.inf
    for now in (0.0, 0.0, 0.0, 0.2, 2.0, 2.1, 10.0, 10.0, 10.0):
        expected, tat = gcra_next(tat, now, 1 / 3, 1 / 3)
        assert pacer.reserve(now) == expected
        assert pacer.tat == tat


def test_module_reads_no_clock() -> None:
    tree = ast.parse(inspect.getsource(pacing))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "datetime", "asyncio", "threading"}


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=2000.0),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=300),
)
def test_no_one_second_window_holds_more_than_rate_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    pacer = Pacer(rate, burst=burst)
    now = 0.0
    times: list[float] = []
    for gap in gaps:
        now += gap
        allowed_at = pacer.reserve(now)
        assert allowed_at >= now
        times.append(allowed_at)
    assert times == sorted(times)
    assert max_in_window(times, 1.0) <= math.ceil(rate) + burst - 1


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=2000.0),
    count=st.integers(min_value=2, max_value=500),
)
def test_back_to_back_requests_are_sent_at_exactly_the_rate(rate: float, count: int) -> None:
    pacer = Pacer(rate)
    times = [pacer.reserve(0.0) for _ in range(count)]
    assert times[-1] == pytest.approx((count - 1) / rate, rel=1e-9, abs=1e-9)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1 / rate, rel=1e-6)
