"""Meta's rate limits as token buckets: pure, every time is a `now` the caller passes in."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    """A bucket of `capacity` tokens refilled at `rate` tokens/s; each message takes one."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        """A full bucket."""
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = now

    def level(self, now: float) -> float:
        """The tokens in the bucket at `now`."""
        # A clock that steps backwards must not drain the bucket.
        elapsed = max(0.0, now - self.updated)
        return min(self.capacity, self.tokens + elapsed * self.rate)

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        tokens = self.level(now)
        self.updated = max(self.updated, now)
        # A sender pacing at exactly `rate` lands on 1 - epsilon by float rounding.
        if tokens >= 1.0 - 1e-9:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class KeyedLimiter:
    """One token bucket per key; a bucket that has refilled completely is forgotten.

    Pair buckets are keyed by (phone number, recipient): at 1,000 msg/s to distinct
    users they would grow without end, so buckets are kept in least-recently-used
    order and dropped from the old end once full again (a full bucket is the same as
    none).
    """

    def __init__(self, capacity: float, rate: float) -> None:
        """Buckets of `capacity` tokens refilled at `rate` tokens/s."""
        self.capacity = max(1.0, capacity)
        self.rate = rate
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float, own: tuple[float, float] | None = None) -> bool:
        """Take one token from the bucket of `key`.

        `own` (capacity, rate) overrides the limiter's for a key with a limit of its
        own (a number registered with its own mps).
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity, rate = (self.capacity, self.rate) if own is None else own
            bucket = self._buckets[key] = TokenBucket(capacity, rate, now)
        else:
            self._buckets.move_to_end(key)
        allowed = bucket.take(now)
        self._forget_full(now)
        return allowed

    def forget(self, key: Hashable) -> None:
        """Forget the bucket of `key` (its limit changed: the next take starts a full one)."""
        self._buckets.pop(key, None)

    def clear(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()

    def _forget_full(self, now: float) -> None:
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if oldest.level(now) < oldest.capacity:
                return
            del self._buckets[key]
