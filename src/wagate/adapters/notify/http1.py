"""A lean HTTP/1.1 client for webhook POSTs: one request a connection at a time, kept alive.

Why not aiohttp's client, which the gateway uses for Meta: a customer-webhook POST costs
its event loop about 113 us of CPU there, against about 36 us for the same POST written
and parsed here (bench/webhooks; BENCHMARKS.md, "Issue 9"), and the notifier makes three
of them a message (3,000 a second at 1,000 msg/s, in the one process that also sends
and ingests). A webhook POST needs little of HTTP: one request with a body of known
length, a status line, a handful of headers (framing, `Retry-After`, `Location`) and at
most `TEXT_BYTES` of the body, kept only to say why a receiver refused.

What it does, and what it does not:
- A connection serves one request at a time; answered connections are kept (per scheme,
  host and port, at most `MAX_IDLE_PER_HOST` of one host and `MAX_IDLE` in all) for
  `KEEPALIVE_S`, and reused only when the answer was framed (`Content-Length`, or chunked
  and read to its end), small (`KEEP_BODY_BYTES`), HTTP/1.1 and not `Connection: close`.
  A reused connection the receiver had closed, that failed before any byte of an answer,
  is tried once more on a new connection (every client does so; the event's id lets the
  receiver drop a repeat).
- Interim answers (1xx) are skipped; no redirect is followed; nothing is decompressed
  (`Accept-Encoding: identity`); no cookies, no proxies.
- The connection's address is chosen by the caller (`Connector`): the poster gives only
  addresses its SSRF policy allows.
- Every bound is fixed: the head of an answer (`MAX_HEAD_BYTES`), the body read
  (`KEEP_BODY_BYTES`; a longer answer is cut, and its connection closed), the caches.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, cast

# The most of an answer's body kept (to say why a receiver refused).
TEXT_BYTES: Final = 1024
# An answer's status line and headers larger than this end the connection.
MAX_HEAD_BYTES: Final = 64 * 1024
# A body up to this size is read to its end so the connection can serve again.
KEEP_BODY_BYTES: Final = 64 * 1024
KEEPALIVE_S: Final = 15.0
MAX_IDLE_PER_HOST: Final = 64
MAX_IDLE: Final = 256

# RFC 9110 token characters for a header name; a value holds no control character but tab.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class HeaderRefused(ValueError):
    """A header that cannot be sent as it is (it would break or extend the request)."""


class AnswerFailed(Exception):
    """No whole answer came back on a connection that was open (not a connect error)."""


class AnswerMalformed(AnswerFailed):
    """The receiver's answer is not HTTP/1.x as this client reads it."""


class ClosedEarly(AnswerFailed):
    """The connection closed before a whole answer came back."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        # Whether any byte of an answer had arrived (a request that got none may be repeated).
        self.answered = answered


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: its status, the headers a webhook sender reads, some body."""

    status: int
    retry_after: str | None
    location: str | None
    text: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request goes: the key of its connections, and how to open one."""

    scheme: str
    host: str  # as connected to (an IP literal without brackets, or a name in ASCII)
    port: int
    host_header: str  # as sent in `Host:` (brackets, explicit port)


def request_head(
    method: str,
    target: str,
    origin: Origin,
    headers: Mapping[str, str],
    length: int,
    defaults: Mapping[str, str] | None = None,
) -> bytes:
    """The request line and headers of one request with a body of `length` bytes;
    `defaults` are sent unless `headers` has one of their names (in any case).

    Raises HeaderRefused for a name that is not a token or a value with a line break
    or another control character (a header must not end the head or add one).
    """
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    if defaults:
        given = {name.lower() for name in headers}
        headers = {
            **{name: value for name, value in defaults.items() if name.lower() not in given},
            **headers,
        }
    for name, value in headers.items():
        if _TOKEN.fullmatch(name) is None:
            raise HeaderRefused(f"header name {name!r} is not a token")
        if _BAD_VALUE.search(value) is not None:
            raise HeaderRefused(f"header {name} holds a control character")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode()


class Http1Connection(asyncio.Protocol):
    """One connection: writes a request, parses its answer, says whether it can serve again."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None
        self._got_bytes = False
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        # The answer being read.
        self._head: Answer | None = None
        self._framing = ""  # "length", "chunked" or "close"
        self._left = 0  # body bytes (or chunk bytes) still to come
        self._body = bytearray()
        self._body_read = 0
        self._keep_alive = False
        self._chunk_state = "size"  # size, data, data-end, trailer

    # ---- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Nothing was asked: a receiver talking out of turn cannot be trusted again.
            self._close()
            return
        self._got_bytes = True
        self._buffer += data
        try:
            self._parse()
        except AnswerMalformed as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        if self._waiter is not None and self._head is not None and self._framing == "close":
            self._finish(keep=False)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            if self._head is not None and self._framing == "close":
                self._finish(keep=False)
                return
            said = f": {exc}" if exc is not None else ""
            self._waiter.set_exception(
                ClosedEarly(f"connection closed before an answer{said}", answered=self._got_bytes)
            )
        self._waiter = None

    # ---- a request ---------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        """Write a whole request; the future holds its answer."""
        assert self.transport is not None
        assert self._waiter is None
        self.reusable = False
        self._got_bytes = False
        self._head = None
        self._buffer.clear()
        self._body.clear()
        self._body_read = 0
        self._chunk_state = "size"
        self._waiter = waiter = self._loop.create_future()
        self.transport.write(request)
        return waiter

    def abort(self) -> None:
        """Drop the connection (a deadline passed, or the poster is closing)."""
        self._close()

    def _close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self._close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _finish(self, *, keep: bool) -> None:
        waiter, self._waiter = self._waiter, None
        head = self._head
        assert head is not None
        self.reusable = keep and self._keep_alive and not self._buffer and not self.closed
        if not self.reusable:
            self._close()
        if waiter is not None and not waiter.done():
            waiter.set_result(
                Answer(head.status, head.retry_after, head.location, bytes(self._body))
            )

    # ---- parsing -----------------------------------------------------------------------

    def _parse(self) -> None:
        while self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise AnswerMalformed(f"answer head over {MAX_HEAD_BYTES} bytes")
                return
            if end > MAX_HEAD_BYTES:
                raise AnswerMalformed(f"answer head over {MAX_HEAD_BYTES} bytes")
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            self._read_head(head)
        self._read_body()

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise AnswerMalformed(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (100 Continue, 103 Early Hints): the answer follows
        length: int | None = None
        chunked = False
        close = version == b"HTTP/1.0"
        retry_after = location = None
        for line in lines[1:]:
            name, colon, raw = line.partition(b":")
            if not colon:
                continue
            key = name.strip().lower()
            if key == b"content-length":
                value = raw.strip()
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise AnswerMalformed("bad Content-Length")
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = raw.strip().lower().endswith(b"chunked")
                if not chunked:
                    close = True  # another coding: read what comes until the close
            elif key == b"connection":
                tokens = {token.strip().lower() for token in raw.split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                    close = False
            elif key == b"retry-after":
                retry_after = raw.strip().decode("latin-1")
            elif key == b"location":
                location = raw.strip().decode("latin-1")
        self._keep_alive = not close
        self._head = Answer(status, retry_after, location, b"")
        if status in (101, 204, 304):
            self._framing, self._left = "length", 0
            self._keep_alive = self._keep_alive and status != 101
        elif chunked:
            self._framing = "chunked"
        elif length is not None:
            self._framing, self._left = "length", length
            if length > KEEP_BODY_BYTES:
                self._keep_alive = False
        else:
            self._framing, self._keep_alive = "close", False

    def _take(self, count: int) -> None:
        """Consume `count` body bytes from the buffer, keeping up to TEXT_BYTES of them."""
        room = TEXT_BYTES - len(self._body)
        if room > 0:
            self._body += self._buffer[: min(room, count)]
        del self._buffer[:count]
        self._body_read += count

    def _read_body(self) -> None:
        if self._framing == "length":
            count = min(self._left, len(self._buffer))
            self._take(count)
            self._left -= count
            if self._left == 0:
                self._finish(keep=True)
            elif self._body_read >= TEXT_BYTES and not self._keep_alive:
                self._finish(keep=False)  # too long to read for the connection's sake
        elif self._framing == "close":
            self._take(len(self._buffer))
            if self._body_read >= TEXT_BYTES:
                self._finish(keep=False)
        else:
            self._read_chunks()

    def _read_chunks(self) -> None:
        while True:
            if self._chunk_state == "data":
                count = min(self._left, len(self._buffer))
                self._take(count)
                self._left -= count
                if self._left:
                    return
                self._chunk_state = "data-end"
            if self._body_read > KEEP_BODY_BYTES:
                self._finish(keep=False)
                return
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise AnswerMalformed("chunk line too long")
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            if self._chunk_state == "data-end":
                if line:
                    raise AnswerMalformed("chunk not followed by CRLF")
                self._chunk_state = "size"
            elif self._chunk_state == "size":
                size = line.partition(b";")[0].strip()
                try:
                    self._left = int(size, 16)
                except ValueError:
                    raise AnswerMalformed(f"bad chunk size {size[:20]!r}") from None
                if self._left < 0:
                    raise AnswerMalformed("bad chunk size")
                self._chunk_state = "data" if self._left else "trailer"
            elif not line:  # the empty line after the trailers ends the answer
                self._finish(keep=True)
                return


# Opens a connection to an origin: (protocol factory, origin) -> the connected protocol.
Connector = Callable[[Callable[[], Http1Connection], Origin], Awaitable[Http1Connection]]


class Http1Client:
    """Kept-alive connections per origin, and one request on one of them at a time."""

    def __init__(self, connect: Connector, defaults: Mapping[str, str] | None = None) -> None:
        """Connections opened by `connect`; `defaults`: headers of every request (unless
        the request sets them)."""
        self._connect = connect
        self._defaults = dict(defaults or {})
        self._idle: dict[tuple[str, str, int], list[Http1Connection]] = {}
        self._idle_count = 0
        self._swept_at = 0.0

    async def request(
        self, method: str, origin: Origin, target: str, head_headers: Mapping[str, str], body: bytes
    ) -> Answer:
        """Send one request and read its answer; raises HeaderRefused, OSError (connect),
        AnswerFailed (the answer) or whatever the connector raises. The caller sets
        the deadline (a cancelled request drops its connection)."""
        head = request_head(method, target, origin, head_headers, len(body), self._defaults)
        request = head + body if len(body) < 65536 else None
        key = (origin.scheme, origin.host, origin.port)
        loop = asyncio.get_running_loop()
        reused = self._take_idle(key, loop.time())
        conn = reused if reused is not None else await self._open(origin, loop)
        try:
            try:
                answer = await self._exchange(conn, request, head, body)
            except ClosedEarly as exc:
                if reused is None or exc.answered:
                    raise
                # The receiver closed the kept connection as the request left: once more,
                # on a new connection.
                conn = await self._open(origin, loop)
                answer = await self._exchange(conn, request, head, body)
        except BaseException:
            conn.abort()
            raise
        if conn.reusable:
            self._put_idle(key, conn, loop.time())
        return answer

    async def _open(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> Http1Connection:
        return await self._connect(lambda: Http1Connection(loop), origin)

    @staticmethod
    async def _exchange(
        conn: Http1Connection, request: bytes | None, head: bytes, body: bytes
    ) -> Answer:
        if request is None:  # a large body is not copied into the head
            waiter = conn.send(head)
            assert conn.transport is not None
            conn.transport.write(body)
        else:
            waiter = conn.send(request)
        return await waiter

    def _take_idle(self, key: tuple[str, str, int], now: float) -> Http1Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.abort()
        return None

    def _put_idle(self, key: tuple[str, str, int], conn: Http1Connection, now: float) -> None:
        if now - self._swept_at > KEEPALIVE_S:
            self._sweep(now)
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_HOST or self._idle_count >= MAX_IDLE:
            conn.abort()
            return
        conn.idle_since = now
        idle.append(conn)
        self._idle_count += 1

    def _sweep(self, now: float) -> None:
        """Close connections idle longer than KEEPALIVE_S (their receivers forgot them)."""
        self._swept_at = now
        for key in list(self._idle):
            kept = []
            for conn in self._idle[key]:
                if conn.closed or now - conn.idle_since >= KEEPALIVE_S:
                    conn.abort()
                else:
                    kept.append(conn)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        self._idle_count = sum(len(conns) for conns in self._idle.values())

    def close(self) -> None:
        """Close every kept connection (the client can be used again)."""
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
        self._idle_count = 0


def default_tls() -> ssl.SSLContext:
    """Verified TLS with the system's certificate authorities."""
    return ssl.create_default_context()


__all__ = [
    "Answer",
    "AnswerFailed",
    "AnswerMalformed",
    "ClosedEarly",
    "Connector",
    "HeaderRefused",
    "Http1Client",
    "Http1Connection",
    "Origin",
    "default_tls",
    "request_head",
]
