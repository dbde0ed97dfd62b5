"""Pacing as the queue runs it: `plan`, `throttle` and `effective_rate` on integer microseconds."""

from __future__ import annotations

import ast
import bisect
import inspect
import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wagate.adapters.sandbox.limits import TokenBucket
from wagate.domain import pacing
from wagate.domain.pacing import (
    PAIR_BURST,
    PAIR_INTERVAL_S,
    PacingState,
    PairState,
    Rate,
    assign,
    base_mps,
    effective_rate,
    factor_at,
    hold_pair,
    pair_rate,
    plan,
    throttle,
)

S = 1_000_000  # one second in microseconds
T0 = 1_700_000_000 * S  # a Unix time, as the queue passes it


def most_in_window(slots: list[int], window: int) -> int:
    """The most slots in any half-open window [t, t + window)."""
    ordered = sorted(slots)
    return max(
        (bisect.bisect_left(ordered, start + window) - i for i, start in enumerate(ordered)),
        default=0,
    )


def window_limit(rate: Rate, window: int) -> int:
    """What GCRA allows in a half-open window: one per interval, plus the burst borrowed."""
    return math.ceil(window / rate.interval) + rate.burst - 1


def rate_after(state: PacingState, seconds: float, mps: int = 80) -> Rate:
    return effective_rate(mps, None, state, T0 + round(seconds * S))


# ---- plan: the GCRA booking --------------------------------------------------------


def test_80_per_s_books_a_slot_every_12_5_ms_from_now() -> None:
    slots, after = plan(PacingState(), T0, Rate.per_second(80), 10 * S, 800)
    assert slots == [T0 + k * 12_500 for k in range(800)]
    assert after.tat == T0 + 10 * S
    assert most_in_window(slots, S) == 80


def test_only_slots_within_the_horizon_are_booked() -> None:
    # 0, 12.5 ms, ..., 500 ms: 41 slots fit in half a second at 80/s.
    slots, after = plan(PacingState(), T0, Rate.per_second(80), S // 2, 500)
    assert len(slots) == 41
    assert slots[-1] == T0 + S // 2
    assert after.tat == T0 + 41 * 12_500


def test_a_budget_booked_ahead_books_nothing_until_its_time_comes() -> None:
    state = PacingState(tat=T0 + 2 * S)
    assert plan(state, T0, Rate.per_second(80), S, 10) == ([], state)
    slots, _ = plan(state, T0 + S, Rate.per_second(80), S, 1)
    assert slots == [T0 + 2 * S]


def test_after_an_idle_spell_the_first_send_goes_now() -> None:
    slots, _ = plan(PacingState(tat=T0 - 3600 * S), T0, Rate.per_second(80), S, 2)
    assert slots == [T0, T0 + 12_500]


def test_a_burst_goes_at_once_then_one_per_interval() -> None:
    # Meta's pair rule: one message per 6 s to a user, bursts of up to 45.
    pair = Rate(interval=6 * S, burst=45)
    slots, after = plan(PacingState(), T0, pair, 60 * S, 50)
    assert slots[:45] == [T0] * 45
    assert slots[45:] == [T0 + k * 6 * S for k in range(1, 6)]
    assert after.tat == T0 + 50 * 6 * S


def test_a_rate_is_never_rounded_faster() -> None:
    assert Rate.per_second(80).interval == 12_500
    assert Rate.per_second(3).interval == 333_334
    assert Rate.per_second(1 / 6).interval == 6 * S
    assert Rate.per_second(2_000_000).interval == 1


@pytest.mark.parametrize(("interval", "burst"), [(0, 1), (-5, 1), (1, 0)])
def test_a_rate_that_could_not_pace_is_refused(interval: int, burst: int) -> None:
    with pytest.raises(ValueError, match=r"interval|burst"):
        Rate(interval, burst)


@pytest.mark.parametrize("mps", [0.0, -1.0, math.inf, math.nan])
def test_a_rate_per_second_must_be_positive_and_finite(mps: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Rate.per_second(mps)


rates = st.builds(
    Rate,
    interval=st.integers(min_value=1, max_value=2 * S),
    burst=st.integers(min_value=1, max_value=50),
)


@settings(max_examples=300, deadline=None)
@given(
    rate=rates,
    plans=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2 * S),  # gap before the plan
            st.integers(min_value=0, max_value=2 * S),  # horizon
            st.integers(min_value=0, max_value=200),  # count
        ),
        min_size=1,
        max_size=60,
    ),
    window=st.integers(min_value=1, max_value=5 * S),
)
def test_no_window_holds_more_than_the_rate_allows(
    rate: Rate, plans: list[tuple[int, int, int]], window: int
) -> None:
    state, now, booked = PacingState(), T0, []
    for gap, horizon, count in plans:
        now += gap
        slots, state = plan(state, now, rate, horizon, count)
        assert len(slots) <= count
        assert all(now <= slot <= now + horizon for slot in slots)
        booked += slots
    assert most_in_window(booked, window) <= window_limit(rate, window)


@settings(max_examples=300, deadline=None)
@given(
    rate=rates,
    workers=st.integers(min_value=2, max_value=8),
    skews=st.lists(st.integers(min_value=-50_000, max_value=50_000), min_size=8, max_size=8),
    rounds=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=7),  # which worker takes the row lock next
            st.integers(min_value=0, max_value=S // 2),  # time since the previous round
            st.integers(min_value=1, max_value=100),  # how many it asks for
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_workers_sharing_the_state_together_keep_to_the_rate(
    rate: Rate, workers: int, skews: list[int], rounds: list[tuple[int, int, int]]
) -> None:
    # Each worker reads its own clock (up to 50 ms off) and plans under the row's lock,
    # with the horizon the dispatcher uses (half a second).
    state, true_now, booked = PacingState(), T0, []
    for worker, gap, count in rounds:
        true_now += gap
        slots, state = plan(state, true_now + skews[worker % workers], rate, S // 2, count)
        booked += slots
    for window in (rate.interval, S, 10 * S):
        assert most_in_window(booked, window) <= window_limit(rate, window)
    # Any two slots booked k apart are at least k intervals apart, less the burst:
    # slot_j - j * interval + tolerance >= slot_i - i * interval for every i < j.
    earliest = -math.inf
    for j, slot in enumerate(booked):
        assert slot - j * rate.interval + rate.tolerance >= earliest
        earliest = max(earliest, slot - j * rate.interval)


@settings(max_examples=200, deadline=None)
@given(mps=st.integers(min_value=1, max_value=1000), count=st.integers(min_value=2, max_value=500))
def test_back_to_back_requests_go_at_exactly_the_rate(mps: int, count: int) -> None:
    rate = Rate.per_second(mps)
    slots, _ = plan(PacingState(), T0, rate, 3600 * S, count)
    assert {b - a for a, b in itertools.pairwise(slots)} == {rate.interval}
    # Integer mps: exactly mps in every second, never mps + 1.
    assert most_in_window(slots, S) == min(count, mps)


# ---- the rate: configured, capped by the tier, throttled ----------------------------


@pytest.mark.parametrize(
    ("configured", "tier", "expected"),
    [(80, None, 80), (50, 80, 50), (500, 80, 80), (1000, 1000, 1000), (1000, 20, 20)],
)
def test_the_base_rate_is_the_configured_one_capped_by_the_tier(
    configured: int, tier: int | None, expected: int
) -> None:
    assert base_mps(configured, tier) == expected
    assert effective_rate(configured, tier, PacingState(), T0) == Rate.per_second(expected)


@pytest.mark.parametrize(("configured", "tier"), [(0, 80), (-5, None), (80, 0)])
def test_a_non_positive_rate_is_refused(configured: int, tier: int | None) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        base_mps(configured, tier)


def test_a_130429_halves_the_rate() -> None:
    throttled = throttle(PacingState(tat=T0), T0, 80)
    assert throttled == PacingState(tat=T0, factor=0.5, throttled_at=T0)
    assert rate_after(throttled, 0) == Rate.per_second(40)


def test_several_130429_within_the_hold_count_once() -> None:
    state = throttle(PacingState(), T0, 80)
    for offset in (0, 1, S // 10, S // 2, S - 1):
        assert throttle(state, T0 + offset, 80) == state
    # A worker whose clock is a little behind is still inside the hold.
    assert throttle(state, T0 - 20_000, 80) == state
    # One second later it is a new signal: the recovered factor (0.55) is halved.
    again = throttle(state, T0 + S, 80)
    assert again.factor == pytest.approx(0.275)
    assert again.throttled_at == T0 + S


def test_the_rate_recovers_5_percent_per_second() -> None:
    state = throttle(PacingState(), T0, 80)
    assert rate_after(state, 0) == Rate.per_second(40)
    assert rate_after(state, 0.5) == Rate.per_second(42)
    assert rate_after(state, 1) == Rate.per_second(44)
    assert rate_after(state, 5) == Rate.per_second(60)
    assert rate_after(state, 10) == Rate.per_second(80)
    assert rate_after(state, 3600) == Rate.per_second(80)
    assert factor_at(state, T0 + 5 * S) == pytest.approx(0.75)


def test_throttling_never_goes_below_one_message_per_second() -> None:
    # At 10 msg/s, a 130429 every second would settle at 0.5 msg/s without the floor.
    state = PacingState()
    for second in range(30):
        state = throttle(state, T0 + second * S, 10)
    assert state.factor == pytest.approx(0.1)
    assert effective_rate(10, None, state, state.throttled_at) == Rate.per_second(1)


def test_the_floor_holds_when_the_tier_is_below_the_configured_rate() -> None:
    state = PacingState()
    for second in range(30):
        state = throttle(state, T0 + second * S, 1000)
    # The factor may reach 1/1000 of the configured rate; capped at a tier of 20, the
    # rate still does not go below one message per second.
    assert effective_rate(1000, 20, state, state.throttled_at).interval <= S


def test_a_number_paced_at_one_per_second_is_not_slowed_further() -> None:
    assert factor_at(throttle(PacingState(), T0, 1), T0) == 1.0


def test_throttle_refuses_a_meaningless_base() -> None:
    with pytest.raises(ValueError, match="base"):
        throttle(PacingState(), T0, 0)


def test_after_a_throttle_plans_are_spaced_at_the_lower_rate() -> None:
    state = throttle(PacingState(tat=T0), T0, 80)
    slots, _ = plan(state, T0, rate_after(state, 0), S // 2, 100)
    assert {b - a for a, b in itertools.pairwise(slots)} == {25_000}


def test_module_reads_no_clock() -> None:
    tree = ast.parse(inspect.getsource(pacing))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"time", "datetime", "asyncio", "threading"}


# ---- pairs: assign, hold_pair, pair_rate ---------------------------------------------

X, Y = "447700900001", "447700900002"
PAIR = Rate(interval=6 * S, burst=4)


@dataclass(order=True)
class Queued:
    """A queued message as a claim sees it: due first, then in order of arrival."""

    due: int
    seq: int
    recipient: str


def claims(
    queued: list[str], every: int, until: int, pair: Rate = PAIR, mps: int = 80
) -> dict[str, list[int]]:
    """Claims every `every` us from T0 to `until` over messages queued at T0 (oldest
    first), as the queues run them; each recipient's send slots."""
    due = [Queued(T0, seq, recipient) for seq, recipient in enumerate(queued)]
    number, pairs = PacingState(), dict[str, PairState]()
    sent: dict[str, list[int]] = {}
    for now in range(T0, until, every):
        room, _ = plan(number, now, Rate.per_second(mps), S // 2, 500)
        taken = 0
        for round_ in range(pacing.CLAIM_ROUNDS):
            size = pacing.batch_size(round_, len(room) - taken, limit=500)
            batch = sorted(m for m in due if m.due <= now)[:size]
            if not batch:
                break
            result = assign(room[taken:], [m.recipient for m in batch], pairs, now, pair)
            pairs = result.pairs
            for index, turn in result.deferred:
                batch[index].due = pacing.due_ms(turn) * 1000
            for index, slot in result.sends:
                sent.setdefault(batch[index].recipient, []).append(slot)
                due.remove(batch[index])
            taken += len(result.sends)
            if not result.deferred or taken == len(room):
                break
        _, number = plan(number, now, Rate.per_second(mps), S // 2, taken)
    return sent


def within_pair_rate(slots: list[int], rate: Rate) -> bool:
    """Any two sends k apart are at least k * interval - tolerance apart."""
    ordered = sorted(slots)
    return all(
        ordered[j] - ordered[i] >= (j - i) * rate.interval - rate.tolerance
        for i in range(len(ordered))
        for j in range(i + 1, len(ordered))
    )


def test_a_flood_to_one_recipient_goes_in_a_burst_then_one_per_interval() -> None:
    sent = claims([X] * 10, every=S // 2, until=T0 + 60 * S)
    assert sent[X] == [T0 + k * 12_500 for k in range(4)] + [T0 + k * 6 * S for k in range(1, 7)]


def test_a_flood_to_one_recipient_does_not_hold_up_the_others() -> None:
    # 2,000 to X queued first, then one each to 20 others: the others go in the
    # second claim (the first one's room went to X's burst), not after X's backlog.
    others = [f"4477001{k:05d}" for k in range(20)]
    sent = claims([X] * 2000 + others, every=S // 2, until=T0 + 5 * S)
    assert all(len(sent[other]) == 1 for other in others)
    assert max(sent[other][0] for other in others) < T0 + S
    assert len(sent[X]) == 4


def test_a_pairs_sends_keep_to_metas_bucket_even_a_little_early() -> None:
    # Meta's bucket: 45 back to back, one more per 6 s. Paced with one spare, each
    # send may reach Meta up to half an interval early and still find a token.
    rate = pair_rate(PAIR_INTERVAL_S, PAIR_BURST)
    sent = claims([X] * 80, every=S, until=T0 + 400 * S, pair=rate)
    assert len(sent[X]) == 80
    bucket = TokenBucket(PAIR_BURST, 1 / PAIR_INTERVAL_S, T0 / S)
    for k, slot in enumerate(sent[X]):
        jitter = 3 * S if k % 2 else 0
        assert bucket.take((slot - jitter) / S), f"send {k} at {slot - T0} us refused"


@settings(max_examples=100, deadline=None)
@given(
    interval=st.integers(min_value=1, max_value=10 * S),
    burst=st.integers(min_value=1, max_value=10),
    flood=st.integers(min_value=1, max_value=60),
    every=st.integers(min_value=1_000, max_value=3 * S),
    recipients=st.lists(st.sampled_from([X, Y, "447700900003"]), max_size=60),
)
def test_no_claim_books_a_pair_beyond_its_rate(
    interval: int, burst: int, flood: int, every: int, recipients: list[str]
) -> None:
    rate = Rate(interval, burst)
    sent = claims([X] * flood + recipients, every=every, until=T0 + 40 * every, pair=rate)
    for slots in sent.values():
        assert within_pair_rate(slots, rate)


@settings(max_examples=200, deadline=None)
@given(
    tat=st.integers(min_value=T0 - 100 * S, max_value=T0 + 100 * S),
    extra=st.integers(min_value=0, max_value=100 * S),
    recipients=st.lists(st.sampled_from([X, Y]), min_size=1, max_size=30),
    slots=st.integers(min_value=0, max_value=30),
)
def test_a_batch_never_leaves_a_number_slot_empty_while_it_puts_a_message_off(
    tat: int, extra: int, recipients: list[str], slots: int
) -> None:
    room = [T0 + k * 12_500 for k in range(slots)]
    result = assign(room, recipients, {X: PairState(tat, tat + extra)}, T0, PAIR)
    # Sends take the number's slots in order, from the first.
    assert [slot for _, slot in result.sends] == room[: len(result.sends)]
    if len(result.sends) < len(room):
        # Every message found a slot or was put off: none was left behind.
        assert len(result.sends) + len(result.deferred) == len(recipients)
    for index, turn in result.deferred:
        assert turn > room[len([i for i, _ in result.sends if i < index])]
    assert all(pair.reserved >= pair.tat for pair in result.pairs.values())


def test_put_off_messages_get_successive_turns_not_the_same_one() -> None:
    pair = PairState(tat=T0 + 4 * 6 * S, reserved=T0 + 4 * 6 * S)  # its burst is spent
    result = assign([T0, T0 + 1], [X, X, X], {X: pair}, T0, PAIR)
    assert result.sends == []
    assert [turn for _, turn in result.deferred] == [T0 + 6 * S, T0 + 12 * S, T0 + 18 * S]
    again = assign([T0, T0 + 1], [X], result.pairs, T0, PAIR)
    assert [turn for _, turn in again.deferred] == [T0 + 24 * S]


def test_a_pair_whose_pacing_has_run_out_is_the_same_as_none() -> None:
    stale = {X: PairState(T0 - S, T0 - S)}
    assert assign([T0], [X], stale, T0, PAIR).sends == assign([T0], [X], {}, T0, PAIR).sends


def test_a_hold_sends_nothing_before_its_end_then_one_per_interval() -> None:
    held = hold_pair(PairState(), T0 + 16 * S, PAIR)
    result = assign([T0 + 16 * S, T0 + 17 * S], [X, X], {X: held}, T0 + 16 * S, PAIR)
    assert result.sends == [(0, T0 + 16 * S)]
    assert [turn for _, turn in result.deferred] == [T0 + 22 * S]
    assert assign([T0 + 15 * S], [X], {X: held}, T0 + 15 * S, PAIR).sends == []


def test_a_hold_never_moves_a_pair_back() -> None:
    busy = PairState(T0 + 600 * S, T0 + 900 * S)
    assert hold_pair(busy, T0 + 4 * S, PAIR) == busy


def test_the_pair_rate_keeps_one_message_of_metas_burst_spare() -> None:
    assert pair_rate(6.0, 45) == Rate(6 * S, 44)
    assert pair_rate(0.5, 1) == Rate(S // 2, 1)
    with pytest.raises(ValueError, match="burst"):
        pair_rate(6.0, 0)
    with pytest.raises(ValueError, match="interval"):
        pair_rate(0.0, 45)


# ---- the send window: what leaves, not what was booked --------------------------------


@given(
    limit=st.integers(1, 50),
    wakes=st.lists(st.integers(0, 3 * S), min_size=1, max_size=300),
)
@settings(max_examples=200, deadline=None)
def test_a_send_window_never_lets_more_than_its_limit_into_a_second(
    limit: int, wakes: list[int]
) -> None:
    # Sends wake at arbitrary (late, bunched) times, in order; each leaves when the
    # window allows.
    window = pacing.SendWindow(limit)
    sent: list[int] = []
    for wake in sorted(wakes):
        at = window.earliest(max(wake, sent[-1] if sent else 0))
        window.record(at)
        sent.append(at)
    assert most_in_window(sent, S) <= limit
    assert most_in_window(sent, window.span) <= limit


def test_a_send_window_holds_nothing_back_below_its_limit() -> None:
    window = pacing.SendWindow(3)
    for at in (T0, T0 + 1, T0 + 2):
        assert window.earliest(at) == at
        window.record(at)
    # The fourth waits until the first has left the window.
    assert window.earliest(T0 + 3) == T0 + window.span
    assert not window.idle_since(T0 + window.span + 1)
    assert window.idle_since(T0 + 2 + window.span)


def test_a_resized_send_window_keeps_the_latest_sends() -> None:
    window = pacing.SendWindow(4)
    for at in range(T0, T0 + 4):
        window.record(at)
    window.resize(2)  # throttled: half the rate
    assert window.limit == 2
    assert window.earliest(T0 + 4) == T0 + 2 + window.span
    window.resize(8)  # recovered
    assert window.earliest(T0 + 4) == T0 + 4


def test_a_send_window_at_a_pace_allows_that_many_a_second() -> None:
    assert pacing.window_limit(1 / 80) == 80
    assert pacing.window_limit(1 / 1000) == 1000
    assert pacing.window_limit(6.0) == 1  # slower than one a second: one per window
    assert pacing.window_limit(Rate.per_second(3).interval / S) == 3  # 333,334 us
    assert pacing.window_limit(Rate.per_second(7).interval / S) == 7
    assert pacing.window_limit(1 / 2.5) == 3  # slots at 0, 0.4 and 0.8 s
