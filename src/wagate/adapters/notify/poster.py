"""One webhook attempt over aiohttp, connecting only to addresses the SSRF policy allows.

The policy is applied where the address is chosen: the connector's resolver drops
every resolved address the policy refuses, so the address aiohttp connects to is an
address that was checked, with no second lookup an attacker's DNS could answer
differently (DNS rebinding). IP-literal hosts never reach the resolver and are
checked before connecting.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from wagate.domain.ssrf import AddressPolicy

# Enough of a refusal's body to say why; more is the receiver's log, not ours to store.
ERROR_TEXT_BYTES: Final = 1024
USER_AGENT: Final = "wagate-webhooks/1"
# Many endpoints at once; per host the notifier's own per-endpoint limit applies.
CONNECTIONS: Final = 256
REFUSED_HINT: Final = (
    "private, loopback, link-local and metadata addresses are refused "
    "unless the operator allows them (WAGATE_WEBHOOKS_ALLOW_CIDRS)"
)


@dataclass(slots=True)
class PostResult:
    """What one webhook POST got back (`status_code` None: no HTTP answer at all)."""

    status_code: int | None
    error: str | None
    retry_after_s: float | None
    latency_ms: int


class AddressRefused(OSError):
    """Every address a host resolved to is refused by the policy."""


class PolicyResolver(AbstractResolver):
    """A resolver that answers only with addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        """Filter `inner`'s answers (aiohttp's default resolver when None) through `policy`."""
        self._policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The allowed addresses of `host`; AddressRefused when none is."""
        found = await self._inner.resolve(host, port, family)
        allowed = [result for result in found if self._policy.allows(result["host"])]
        if not allowed:
            addresses = ", ".join(sorted({result["host"] for result in found}))
            raise AddressRefused(f"refused address: {host} resolves to {addresses}; {REFUSED_HINT}")
        return allowed

    async def close(self) -> None:
        """Release the inner resolver."""
        await self._inner.close()


class AiohttpPoster:
    """Posts webhook bodies with one pooled aiohttp session (the `WebhookPoster` port)."""

    def __init__(self, policy: AddressPolicy) -> None:
        """A poster under `policy`; the session is made on first use, on the running loop."""
        self._policy = policy
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=CONNECTIONS, resolver=PolicyResolver(self._policy)
                ),
                # A receiver's cookies are not sent to the next one.
                cookie_jar=aiohttp.DummyCookieJar(),
                # The error text is cut at 1 KB: a compressed body could be far bigger.
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                auto_decompress=False,
            )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> PostResult:
        """One attempt: no redirects followed; never raises for the receiver's failures."""
        started = time.perf_counter()

        def result(
            status: int | None, error: str | None, retry_after_s: float | None = None
        ) -> PostResult:
            latency_ms = round((time.perf_counter() - started) * 1000)
            return PostResult(status, error, retry_after_s, latency_ms)

        try:
            # Parsed once, by aiohttp's own parser, so the host checked is the host used.
            target = URL(url)
        except ValueError as exc:
            return result(None, f"invalid URL: {exc}")
        refusal = self._literal_refusal(target)
        if refusal is not None:
            return result(None, refusal)
        try:
            async with self._client().post(
                target,
                data=body,
                headers=dict(headers),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                # Read a little even on success: a fully read answer keeps its connection.
                text = await response.content.read(ERROR_TEXT_BYTES)
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), time.time())
                return result(response.status, _answer_error(response, text), retry_after)
        except TimeoutError:
            return result(None, f"no answer within {timeout_s:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a header aiohttp cannot send (a custom one with a newline).
            return result(None, _describe(exc))

    def _literal_refusal(self, target: URL) -> str | None:
        # An IP literal never reaches the resolver, so it is checked here.
        host = target.host
        if host is None:
            return "invalid URL: no host"
        try:
            ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return None
        if self._policy.allows(host):
            return None
        return f"refused address: {host}; {REFUSED_HINT}"

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _answer_error(response: aiohttp.ClientResponse, text: bytes) -> str | None:
    status = response.status
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        location = response.headers.get("Location")
        where = f" (Location: {_printable(location.encode())})" if location else ""
        return f"HTTP {status}: redirects are not followed{where}"
    said = _printable(text)
    return f"HTTP {status}: {said}" if said else f"HTTP {status}"


def _printable(text: bytes) -> str:
    """A receiver's text as one clean line: no control characters (nor NUL, which
    PostgreSQL refuses), whitespace collapsed."""
    decoded = text[:ERROR_TEXT_BYTES].decode("utf-8", errors="replace")
    return " ".join("".join(c if c.isprintable() else " " for c in decoded).split())


def _describe(exc: BaseException) -> str:
    """Why no HTTP answer came back, in words an operator can act on."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, AddressRefused):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed: {exc.host}: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def retry_after_seconds(value: str | None, now_s: float) -> float | None:
    """`Retry-After` (seconds, or an HTTP date) as seconds from `now_s`; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - now_s)
