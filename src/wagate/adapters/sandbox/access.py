"""Who may use a phone number or WABA of the sandbox: the access token, as at Meta.

Two ways to know the right token: the standalone sandbox binds each number and
WABA to the first token that uses it (or accepts one fixed `--token`); the
sandbox embedded in a gateway asks the gateway's database, where each sandbox
number has a generated token.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Protocol

from wagate.adapters.sandbox.memory import Lru
from wagate.adapters.sandbox.state import SandboxState
from wagate.core.shared import shared
from wagate.domain.errors import INVALID_PARAMETER, GraphError
from wagate.ports import Clock, SystemClock

NumberCredential = tuple[str, str]  # (waba_id, access token)


def same_token(given: str, expected: str) -> bool:
    """Whether two tokens are equal, in constant time."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class AccessTokens(Protocol):
    """Decides whether an access token may act for a phone number or a WABA."""

    async def number(self, phone_number_id: str, token: str) -> str | None:
        """The number's WABA if `token` may use the number, else None."""
        ...

    async def waba(self, waba_id: str, token: str) -> bool:
        """Whether `token` may use the WABA's templates."""
        ...

    def reset(self) -> None:
        """Forget what was learnt (the operator's `_reset`)."""
        ...


class FirstUseTokens:
    """The standalone sandbox: a number or WABA belongs to the first token that uses it."""

    def __init__(self, state: SandboxState, fixed_token: str = "") -> None:
        """Bindings over `state`'s numbers; with `fixed_token`, only that token is accepted."""
        self.state = state
        self.fixed_token = fixed_token
        self._numbers: dict[str, str] = {}
        self._wabas: dict[str, str] = {}

    async def number(self, phone_number_id: str, token: str) -> str | None:
        """The number's WABA if it is bound to `token` (binding it, and its WABA, if free)."""
        if self.fixed_token and not same_token(token, self.fixed_token):
            return None
        waba_id = self.state.number(phone_number_id).waba_id
        if self.fixed_token:
            return waba_id
        bound = self._numbers.setdefault(phone_number_id, token)
        if not same_token(token, bound):
            return None
        if waba_id not in self._wabas:
            self._bind_waba(waba_id, token)
        return waba_id

    async def waba(self, waba_id: str, token: str) -> bool:
        """Whether the WABA is bound to `token` (binding it if free)."""
        if self.fixed_token:
            return same_token(token, self.fixed_token)
        bound = self._wabas.get(waba_id)
        if bound is None:
            self._bind_waba(waba_id, token)
            return True
        return same_token(token, bound)

    def _bind_waba(self, waba_id: str, token: str) -> None:
        if len(self._wabas) >= self.state.config.max_wabas:
            raise GraphError(
                INVALID_PARAMETER,
                f"Sandbox limit: at most {self.state.config.max_wabas} business accounts",
            )
        self._wabas[waba_id] = token

    def reset(self) -> None:
        """Unbind every number and WABA."""
        self._numbers.clear()
        self._wabas.clear()


# How many phone numbers and WABAs the embedded sandbox remembers lookups of.
_REMEMBERED = 10_000


# How often a token the cache does not know may send the embedded sandbox back to the
# database before the ttl is up (a wrong token costs at most this many queries a second).
RECHECK_SECONDS = 0.25


class _Known:
    """What the embedded sandbox knows of a number: when it asked, what it was told, and
    the token a rotation replaced with the time it stops being accepted."""

    __slots__ = ("at", "credential", "previous", "previous_until", "rechecked_at")

    def __init__(self, at: float, credential: NumberCredential | None) -> None:
        self.at = at
        self.credential = credential
        self.previous = ""
        self.previous_until = float("-inf")
        self.rechecked_at = float("-inf")


class GatewayTokens:
    """The embedded sandbox: tokens of sandbox numbers from the gateway's database, cached briefly.

    A number added by the CLI is known within `ttl` seconds (unknown ids are
    cached too, or each request for one would cost a query).
    """

    def __init__(
        self,
        credential: Callable[[str], Awaitable[NumberCredential | None]],
        waba_tokens: Callable[[str], Awaitable[frozenset[str]]],
        *,
        ttl: float = 2.0,
        grace: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        """Lookups by phone_number_id and by WABA, each answer trusted for `ttl` seconds;
        a rotated token is still accepted for `grace` seconds (see SandboxConfig)."""
        self._credential = credential
        self._waba_tokens = waba_tokens
        self.ttl = ttl
        self.clock = clock or SystemClock()
        self.grace = grace
        self._numbers: Lru[str, _Known] = Lru(_REMEMBERED)
        self._wabas: Lru[str, tuple[float, frozenset[str]]] = Lru(_REMEMBERED)
        # Lookups under way, by (phone_number_id, whether a recheck): one per key at a time.
        self._lookups: dict[tuple[str, bool], asyncio.Future[_Known]] = {}

    async def number(self, phone_number_id: str, token: str) -> str | None:
        """The stored WABA of a sandbox number whose stored token is `token`.

        A token that matches neither the cached token nor the one a rotation replaced
        sends it back to the database (at most every RECHECK_SECONDS): a worker may
        learn of a rotation before this cache does, and its sends must pass.
        """
        now = self.clock.now()
        known = self._numbers.get(phone_number_id)
        # A clock stepped back must not keep an answer for longer than the ttl.
        if known is None or not 0 <= now - known.at < self.ttl:
            # Every send in flight misses when the ttl ends: one query answers them all.
            stale = known
            known = await shared(
                self._lookups,
                (phone_number_id, False),
                lambda: self._refresh(phone_number_id, stale, now),
            )
        waba_id = self._accepts(known, token, now)
        # Timed apart from the ttl: only unknown tokens spend this budget.
        recheck = not 0 <= now - known.rechecked_at < RECHECK_SECONDS
        if waba_id is None and known.credential is not None and recheck:
            checked = known
            known = await shared(
                self._lookups,
                (phone_number_id, True),
                lambda: self._recheck(phone_number_id, checked, now),
            )
            waba_id = self._accepts(known, token, now)
        return waba_id

    async def _recheck(self, phone_number_id: str, known: _Known, now: float) -> _Known:
        """A refresh for a token the cache does not know, counted against RECHECK_SECONDS."""
        fresh = await self._refresh(phone_number_id, known, now)
        fresh.rechecked_at = now
        return fresh

    async def _refresh(self, phone_number_id: str, known: _Known | None, now: float) -> _Known:
        """Ask the database; a changed token is kept as the previous one for `grace` s."""
        fresh = _Known(now, await self._credential(phone_number_id))
        if known is not None:
            fresh.previous, fresh.previous_until = known.previous, known.previous_until
            fresh.rechecked_at = known.rechecked_at
            replaced, current = known.credential, fresh.credential
            if replaced and current and replaced[1] != current[1]:
                fresh.previous, fresh.previous_until = replaced[1], now + self.grace
        self._numbers.put(phone_number_id, fresh)
        return fresh

    @staticmethod
    def _accepts(known: _Known, token: str, now: float) -> str | None:
        """The WABA if `token` is the number's token, or the replaced one within its grace."""
        credential = known.credential
        if credential is None:
            return None
        current = same_token(token, credential[1])
        # Compared whatever the first answer, to keep the time flat.
        previous = same_token(token, known.previous) and now < known.previous_until
        return credential[0] if current or previous else None

    async def waba(self, waba_id: str, token: str) -> bool:
        """Whether `token` is the token of one of the WABA's sandbox numbers."""
        now = self.clock.now()
        known = self._wabas.get(waba_id)
        if known is None or not 0 <= now - known[0] < self.ttl:
            known = (now, await self._waba_tokens(waba_id))
            self._wabas.put(waba_id, known)
        # Compare against every token, not stopping at a match, to keep the time flat.
        matches = [same_token(token, expected) for expected in known[1]]
        return any(matches)

    def reset(self) -> None:
        """Nothing to forget: the database decides."""
        self._numbers.clear()
        self._wabas.clear()
