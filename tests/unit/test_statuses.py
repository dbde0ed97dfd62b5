"""Status moves: forward only, skips allowed, read and failed final, any order ends the same."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wagate.domain.model import Status
from wagate.domain.statuses import (
    Move,
    StatusRow,
    advances,
    decide,
    decide_all,
    moves_to,
    settle,
    status_row,
    steps,
)

ALL: list[Status] = ["pending", "sent", "delivered", "read", "failed"]
REPORTED: list[Status] = ["sent", "delivered", "read", "failed"]
ORDER = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}


def report(status: Status, at_ms: int, code: int = 131026) -> StatusRow:
    errors = json.dumps([{"code": code, "title": f"title {code}"}]) if status == "failed" else None
    return status_row("wamid.A", status, at_ms, errors)


@dataclass
class Message:
    """A message and its timeline as the store keeps them, driven only by `decide`."""

    status: Status = "pending"
    error_code: int | None = None
    timeline: dict[Status, StatusRow] = field(default_factory=dict)
    history: list[Status] = field(default_factory=list)

    def receive(self, batch: list[StatusRow]) -> None:
        decision = decide(self.status, set(self.timeline), batch)
        for row in decision.store:
            assert row.status not in self.timeline
            self.timeline[row.status] = row
        if decision.move is not None:
            self.status = decision.move.status
            failure = decision.move.failure
            self.error_code = failure.error_code if failure else None
            self.history.append(self.status)

    @property
    def state(self) -> tuple[Status, int | None, frozenset[StatusRow]]:
        return self.status, self.error_code, frozenset(self.timeline.values())


# ---- the order ---------------------------------------------------------------------


def test_a_read_status_never_becomes_delivered_again() -> None:
    assert not advances("read", "delivered")
    assert not advances("read", "sent")


def test_read_may_skip_delivered() -> None:
    assert advances("sent", "read")
    assert advances("pending", "read")


def test_failed_is_final() -> None:
    assert not any(advances("failed", status) for status in ALL)


def test_failed_after_delivery_is_taken_but_not_after_read() -> None:
    assert advances("delivered", "failed")
    assert not advances("read", "failed")


def test_the_same_status_twice_is_no_move() -> None:
    assert not any(advances(status, status) for status in ALL)


@pytest.mark.parametrize("order", list(itertools.permutations(["sent", "delivered", "read"])))
def test_any_arrival_order_ends_read(order: tuple[Status, ...]) -> None:
    assert settle("pending", list(order)) == "read"


# ---- what a batch does ------------------------------------------------------------


def test_a_batch_is_applied_in_metas_time_order() -> None:
    # read (t=5) then a late failed (t=9): the user read it.
    assert moves_to("pending", [report("failed", 9), report("read", 5)]) == Move("read")
    # failed (t=5) before read (t=9): failed is final.
    failed = report("failed", 5)
    assert moves_to("pending", [report("read", 9), failed]) == Move("failed", failed)


def test_of_a_read_and_a_failed_in_the_same_second_read_stays() -> None:
    assert moves_to("sent", [report("failed", 5), report("read", 5)]) == Move("read")


def test_the_failure_the_message_ends_on_brings_its_error() -> None:
    message = Message()
    message.receive([report("sent", 1), report("failed", 2, code=131049)])
    assert message.state[:2] == ("failed", 131049)


def test_a_move_that_does_not_end_failed_clears_the_error() -> None:
    assert moves_to("pending", [report("sent", 1)]) == Move("sent", None)


def test_meta_error_is_read_from_the_errors_json() -> None:
    errors = json.dumps(
        [{"code": 131050, "message": "stopped", "error_data": {"details": "opted out"}}]
    )
    row = status_row("wamid.A", "failed", 1, errors)
    assert (row.error_code, row.error_title, row.error_details) == (131050, "stopped", "opted out")
    garbled = status_row("wamid.A", "failed", 1, "[{]")
    assert (garbled.error_code, garbled.error_title, garbled.error_details) == (None, None, None)


def test_statuses_before_the_message_are_stored_but_move_nothing() -> None:
    decision = decide(None, set(), [report("sent", 1), report("read", 2)])
    assert [row.status for row in decision.store] == ["sent", "read"]
    assert decision.move is None


def test_the_first_report_of_a_status_is_the_one_kept() -> None:
    first, second = report("failed", 1, code=131026), report("failed", 2, code=131049)
    decision = decide("sent", set(), [first, second])
    assert decision.store == (first,)
    assert decision.move == Move("failed", first)


def test_a_batch_of_many_wamids_keeps_arrival_order_and_moves_each() -> None:
    a_sent = status_row("wamid.A", "sent", 1, None)
    b_read = status_row("wamid.B", "read", 1, None)
    c_sent = status_row("wamid.C", "sent", 1, None)
    store, moves = decide_all(
        {"wamid.A": "pending", "wamid.B": "sent"},
        {"wamid.B": {"sent"}},
        [a_sent, b_read, a_sent, c_sent, b_read],
    )
    assert store == [a_sent, b_read, c_sent]
    assert moves == {"wamid.A": Move("sent"), "wamid.B": Move("read")}


# ---- properties --------------------------------------------------------------------

# One report per status (Meta's retries are exact copies), at times in any order.
report_sets = st.lists(
    st.tuples(st.sampled_from(REPORTED), st.integers(min_value=0, max_value=20)),
    unique_by=lambda pair: pair[0],
    min_size=1,
).map(lambda pairs: [report(status, at) for status, at in pairs])


def deliveries(reports: list[StatusRow]) -> st.SearchStrategy[list[list[StatusRow]]]:
    """The reports, each at least once, shuffled and cut into POSTs."""
    copies = st.lists(st.sampled_from(reports), max_size=len(reports) * 2)
    arrivals = copies.flatmap(lambda extra: st.permutations(reports + extra))
    return arrivals.flatmap(
        lambda order: st.lists(
            st.integers(min_value=0, max_value=len(order)), max_size=len(order)
        ).map(lambda cuts: split(order, sorted(cuts)))
    )


def split(order: list[StatusRow], cuts: list[int]) -> list[list[StatusRow]]:
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), reports=report_sets)
def test_a_message_never_moves_backwards_and_final_stays_final(
    data: st.DataObject, reports: list[StatusRow]
) -> None:
    message = Message()
    for batch in data.draw(deliveries(reports)):
        message.receive(batch)
    steps = ["pending", *message.history]
    for before, after in itertools.pairwise(steps):
        assert before not in ("read", "failed"), steps
        assert after == "failed" or ORDER[after] > ORDER[before], steps


@settings(max_examples=300, deadline=None)
@given(data=st.data(), reports=report_sets)
def test_duplicates_change_nothing(data: st.DataObject, reports: list[StatusRow]) -> None:
    message = Message()
    for batch in data.draw(deliveries(reports)):
        message.receive(batch)
    settled = message.state
    for batch in data.draw(deliveries(reports)):
        message.receive(batch)
        assert message.state == settled


@settings(max_examples=500, deadline=None)
@given(data=st.data(), reports=report_sets)
def test_any_arrival_order_of_the_same_statuses_ends_the_same(
    data: st.DataObject, reports: list[StatusRow]
) -> None:
    # Of read and failed, the first to reach the message stays (both are final), so
    # when both are reported they must come in one POST for the order not to matter.
    both = {"read", "failed"} <= {r.status for r in reports}
    one_post = Message()
    one_post.receive(reports)
    for _ in range(3):
        if both:
            batches = [list(data.draw(st.permutations(reports)))]
        else:
            batches = data.draw(deliveries(reports))
        message = Message()
        for batch in batches:
            message.receive(batch)
        assert message.state == one_post.state


@settings(max_examples=300, deadline=None)
@given(data=st.data(), reports=report_sets)
def test_statuses_applied_late_end_where_statuses_applied_on_time_do(
    data: st.DataObject, reports: list[StatusRow]
) -> None:
    # Statuses that came before their wamid was recorded are applied all at once later.
    stored, _ = decide_all({}, {}, reports)
    _, moves = decide_all({"wamid.A": "pending"}, {}, stored)
    on_time = Message()
    on_time.receive(reports)
    move = moves.get("wamid.A")
    assert (move.status if move else "pending") == on_time.status


def test_a_late_failed_after_read_does_not_move_it() -> None:
    message = Message()
    message.receive([report("sent", 1), report("read", 3)])
    message.receive([report("failed", 2)])
    assert message.state[:2] == ("read", None)
    assert set(message.timeline) == {"sent", "read", "failed"}


def test_a_read_after_failed_does_not_move_it() -> None:
    message = Message()
    message.receive([report("failed", 2, code=131049)])
    message.receive([report("read", 1)])
    assert message.state[:2] == ("failed", 131049)


# ---- the steps a customer webhook hears of -------------------------------------------


def test_one_post_from_pending_to_read_is_three_steps_in_metas_order() -> None:
    batch = [report("read", 3000), report("sent", 1000), report("delivered", 2000)]
    assert [r.status for r in steps("pending", batch)] == ["sent", "delivered", "read"]


def test_steps_skip_what_the_message_has_passed_and_stop_at_a_final_status() -> None:
    batch = [report("sent", 1000), report("failed", 2000), report("read", 3000)]
    assert [r.status for r in steps("sent", batch)] == ["failed"]


@given(data=st.data(), reports=report_sets)
def test_the_last_step_is_where_the_move_ends(
    data: st.DataObject, reports: list[StatusRow]
) -> None:
    current = data.draw(st.sampled_from(ALL))
    move = moves_to(current, reports)
    taken = steps(current, reports)
    assert (move.status if move else None) == (taken[-1].status if taken else None)
    assert all(advances(a.status, b.status) for a, b in itertools.pairwise(taken))
