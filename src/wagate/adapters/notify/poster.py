"""One webhook attempt, connecting only to addresses the SSRF policy allows.

The policy is applied where the address is chosen: a new connection's host is resolved
here, every address the policy refuses is dropped, and the connection is opened to an
address that was checked (an IP, never the name again), so no second lookup an
attacker's DNS could answer differently (DNS rebinding) is made. An IP-literal host is
checked as it is. The HTTP itself is `http1`'s lean client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

from yarl import URL

from wagate.adapters.notify.http1 import (
    TEXT_BYTES,
    Answer,
    AnswerFailed,
    HeaderRefused,
    Http1Client,
    Http1Connection,
    Origin,
    default_tls,
)
from wagate.domain.ssrf import AddressPolicy

# Enough of a refusal's body to say why; more is the receiver's log, not ours to store.
ERROR_TEXT_BYTES: Final = TEXT_BYTES
USER_AGENT: Final = "wagate-webhooks/1"
# A name's addresses are looked up again after this long (as aiohttp's default cache).
DNS_TTL_S: Final = 10.0
# Bounds of the caches keyed by endpoints' URLs and hosts.
URL_CACHE: Final = 4096
DNS_CACHE: Final = 1024
# Looks a name up: (host, port) -> its addresses.
Resolve = Callable[[str, int], Awaitable[list[str]]]
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


class HttpPoster:
    """Posts webhook bodies over kept-alive HTTP/1.1 connections (the `WebhookPoster` port).

    The lean client of `http1` (a POST costs the loop a third of aiohttp's); the address
    of every new connection is chosen here, from those the policy allows.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolve: Resolve | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """A poster under `policy`; `resolve` looks names up (default: the loop's
        getaddrinfo), `tls` verifies https receivers (default: the system's CAs)."""
        self._policy = policy
        self._resolve = resolve or _getaddrinfo
        self._tls = tls
        # The error text is cut at 1 KB: a compressed body could be far bigger.
        self._client = Http1Client(
            self._connect, {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        )
        # Parsed URLs and resolved names, bounded (an endpoint's URL is a caller's input).
        self._origins: dict[str, tuple[Origin, str] | str] = {}
        self._addresses: dict[str, tuple[float, list[str]]] = {}

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

        parsed = self._origin(url)
        if isinstance(parsed, str):
            return result(None, parsed)
        origin, target = parsed
        try:
            async with asyncio.timeout(timeout_s):
                answer = await self._client.request("POST", origin, target, headers, body)
        except TimeoutError:
            return result(None, f"no answer within {timeout_s:g} s")
        except HeaderRefused as exc:
            return result(None, f"a header cannot be sent: {exc}")
        except AddressRefused as exc:
            return result(None, str(exc))
        except socket.gaierror as exc:
            return result(None, f"DNS lookup failed: {origin.host}: {exc.strerror or exc}")
        except AnswerFailed as exc:
            return result(None, str(exc))
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            return result(None, f"cannot connect to {origin.host}:{origin.port}: {reason}")
        retry_after = retry_after_seconds(answer.retry_after, time.time())
        return result(answer.status, _answer_error(answer), retry_after)

    def _origin(self, url: str) -> tuple[Origin, str] | str:
        """The origin and request target of `url`, or why it cannot be posted to."""
        found = self._origins.get(url)
        if found is None:
            found = _parse_url(url)
            if len(self._origins) >= URL_CACHE:
                self._origins.clear()
            self._origins[url] = found
        return found

    async def _connect(
        self, factory: Callable[[], Http1Connection], origin: Origin
    ) -> Http1Connection:
        """A new connection to an address of `origin` the policy allows, tried in order."""
        addresses = await self._allowed(origin.host, origin.port)
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            tls = self._tls = self._tls or default_tls()
        last: OSError | None = None
        for address in addresses:
            try:
                _, conn = await loop.create_connection(
                    factory,
                    address,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
                return conn
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    async def _allowed(self, host: str, port: int) -> list[str]:
        """The addresses of `host` the policy allows (cached DNS_TTL_S); AddressRefused
        when it allows none. An IP literal is its own address."""
        if _is_ip(host):
            if self._policy.allows(host):
                return [host]
            raise AddressRefused(f"refused address: {host}; {REFUSED_HINT}")
        now = time.monotonic()
        cached = self._addresses.get(host)
        if cached is not None and now - cached[0] < DNS_TTL_S:
            found = cached[1]
        else:
            found = await self._resolve(host, port)
            if len(self._addresses) >= DNS_CACHE:
                self._addresses.clear()
            self._addresses[host] = (now, found)
        allowed = [address for address in found if self._policy.allows(address)]
        if not allowed:
            addresses = ", ".join(sorted(set(found)))
            raise AddressRefused(f"refused address: {host} resolves to {addresses}; {REFUSED_HINT}")
        return allowed

    async def close(self) -> None:
        """Close the kept connections (the poster can be used again)."""
        self._client.close()
        self._addresses.clear()


async def _getaddrinfo(host: str, port: int) -> list[str]:
    """Every address of `host`, in the resolver's order, duplicates dropped."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _parse_url(url: str) -> tuple[Origin, str] | str:
    """An http(s) URL's origin and request target (path and query, encoded), or the error."""
    try:
        parsed = URL(url)
        host = parsed.raw_host
        port = parsed.port
    except (ValueError, TypeError) as exc:
        return f"invalid URL: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"invalid URL: scheme {parsed.scheme!r} is not http or https"
    if not host or port is None:
        return "invalid URL: no host"
    shown = f"[{host}]" if ":" in host else host
    if parsed.explicit_port is not None:
        shown = f"{shown}:{port}"
    target = parsed.raw_path or "/"
    if parsed.raw_query_string:
        target = f"{target}?{parsed.raw_query_string}"
    return Origin(parsed.scheme, host, port, shown), target


def _answer_error(answer: Answer) -> str | None:
    status = answer.status
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        location = answer.location
        where = f" (Location: {_printable(location.encode())})" if location else ""
        return f"HTTP {status}: redirects are not followed{where}"
    said = _printable(answer.text)
    return f"HTTP {status}: {said}" if said else f"HTTP {status}"


def _printable(text: bytes) -> str:
    """A receiver's text as one clean line: no control characters (nor NUL, which
    PostgreSQL refuses), whitespace collapsed."""
    decoded = text[:ERROR_TEXT_BYTES].decode("utf-8", errors="replace")
    return " ".join("".join(c if c.isprintable() else " " for c in decoded).split())


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
