"""Status moves: forward only, skips allowed, failed is final."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wagate.domain.model import Status
from wagate.domain.statuses import advances, settle

ALL: list[Status] = ["pending", "sent", "delivered", "read", "failed"]


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


@given(st.lists(st.sampled_from(["sent", "delivered", "read"]), min_size=1))
def test_settling_is_the_furthest_status_seen(updates: list[Status]) -> None:
    rank = {"sent": 1, "delivered": 2, "read": 3}
    assert settle("pending", updates) == max(updates, key=rank.__getitem__)
