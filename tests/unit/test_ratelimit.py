"""Per-project rate limits: N a minute at once, then one every 60/N seconds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wagate.domain.ratelimit import RateLimiter

T0 = 1_000_000.0


def test_a_project_may_make_its_limit_at_once_then_is_refused() -> None:
    limiter = RateLimiter()
    quotas = [limiter.take("prj_a", 3, T0) for _ in range(4)]
    assert [q.allowed for q in quotas] == [True, True, True, False]
    assert [q.remaining for q in quotas] == [2, 1, 0, 0]
    assert quotas[3].retry_after == 20  # one request frees every 60/3 s


def test_after_retry_after_the_next_request_is_allowed() -> None:
    limiter = RateLimiter()
    for _ in range(3):
        limiter.take("prj_a", 3, T0)
    refused = limiter.take("prj_a", 3, T0 + 5.5)
    assert (refused.allowed, refused.retry_after) == (False, 15)
    assert limiter.take("prj_a", 3, T0 + 5.5 + refused.retry_after).allowed


def test_a_refused_request_does_not_count() -> None:
    limiter = RateLimiter()
    for _ in range(3):
        limiter.take("prj_a", 3, T0)
    for _ in range(100):
        assert not limiter.take("prj_a", 3, T0 + 1).allowed
    assert limiter.take("prj_a", 3, T0 + 20).allowed


def test_projects_are_limited_apart() -> None:
    limiter = RateLimiter()
    for _ in range(3):
        limiter.take("prj_a", 3, T0)
    assert limiter.take("prj_b", 3, T0).allowed
    assert len(limiter) == 2


def test_a_quiet_minute_gives_the_whole_limit_back() -> None:
    limiter = RateLimiter()
    for _ in range(3):
        limiter.take("prj_a", 3, T0)
    assert limiter.take("prj_a", 3, T0 + 60).remaining == 2


@given(
    limit=st.integers(1, 1000),
    gaps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=300),
)
def test_requests_keep_to_the_burst_then_one_per_interval(limit: int, gaps: list[float]) -> None:
    # What the limiter promises (GCRA): `limit` at once, then one every 60 / limit s. Any
    # two allowed requests k apart are at least k - (limit - 1) intervals apart. (A
    # sliding minute may so see up to 2 x limit - 1: the burst, then the refill; an
    # earlier version of this test claimed at most `limit`, which GCRA never promised.)
    limiter = RateLimiter()
    interval = 60 / limit
    now = T0
    allowed: list[float] = []
    for gap in gaps:
        now += gap
        if limiter.take("prj_a", limit, now).allowed:
            allowed.append(now)
    for i, start in enumerate(allowed):
        for k, later in enumerate(allowed[i + limit :], start=limit):
            assert later - start >= (k - (limit - 1)) * interval - 1e-6
