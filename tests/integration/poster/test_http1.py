"""The webhook poster's HTTP/1.1 client against raw servers on loopback that answer byte
for byte: framing (length, chunked, close), interim answers, kept and dropped
connections, malformed and oversized answers, and verified TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wagate.adapters.notify.http1 import KEEP_BODY_BYTES, MAX_HEAD_BYTES, TEXT_BYTES
from wagate.adapters.notify.poster import HttpPoster
from wagate.domain.ssrf import AddressPolicy

BODY = b'{"event":"whatsapp.message.sent"}'
HEADERS = {"Content-Type": "application/json", "X-Idempotency-Key": "evt_1"}

# An answer: the bytes a raw server writes for one request (then it may close).
Script = Callable[[bytes], bytes]


@dataclass
class RawServer:
    """Answers each request with `script(request)`; closes after an answer when `close`."""

    script: Script
    close_after: bool = False
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                writer.write(self.script(request))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def drop_connections(self) -> None:
        """Close every connection from the server's side (an idle timeout)."""
        for writer in self.writers:
            writer.close()
        self.writers.clear()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script, close_after: bool = False) -> RawServer:
        raw = RawServer(script, close_after)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


@pytest.fixture
async def poster() -> AsyncIterator[HttpPoster]:
    made = HttpPoster(AddressPolicy(allow_private=True))
    yield made
    await made.close()


def answer(status: str, body: bytes = b"", *headers: str) -> Script:
    head = "".join(f"{header}\r\n" for header in headers)
    raw = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body
    return lambda _: raw


async def test_the_request_carries_host_length_defaults_and_the_body(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    server = await serve(answer("200 OK", b"ok"))
    result = await poster.post(server.url("/hook?token=a%20b"), BODY, HEADERS, 5)
    assert (result.status_code, result.error) == (200, None)
    request = server.requests[0]
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?token=a%20b HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert f"Content-Length: {len(BODY)}".encode() in lines
    assert b"Accept-Encoding: identity" in lines
    assert b"User-Agent: wagate-webhooks/1" in lines
    assert b"X-Idempotency-Key: evt_1" in lines
    assert body == BODY


async def test_a_kept_connection_serves_the_next_posts(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    server = await serve(answer("200 OK", b"ok"))
    for _ in range(5):
        assert (await poster.post(server.url(), BODY, HEADERS, 5)).status_code == 200
    assert (len(server.requests), server.connections) == (5, 1)


async def test_a_receiver_that_closed_a_kept_connection_gets_the_post_on_a_new_one(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    server = await serve(answer("200 OK"))
    assert (await poster.post(server.url(), BODY, HEADERS, 5)).status_code == 200
    server.drop_connections()
    await asyncio.sleep(0.05)
    assert (await poster.post(server.url(), BODY, HEADERS, 5)).status_code == 200
    assert (len(server.requests), server.connections) == (2, 2)


async def test_connection_close_and_http_1_0_answers_are_not_kept(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    closing = await serve(answer("200 OK", b"", "Connection: close"), close_after=True)
    old = await serve(lambda _: b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", close_after=True)
    for server in (closing, old):
        for _ in range(2):
            assert (await poster.post(server.url(), BODY, HEADERS, 5)).status_code == 200
        assert server.connections == 2


async def test_a_chunked_answer_is_read_to_its_end_and_its_connection_kept(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    chunked = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nbroke\r\n6\r\nn down\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    server = await serve(lambda _: chunked)
    first = await poster.post(server.url(), BODY, HEADERS, 5)
    second = await poster.post(server.url(), BODY, HEADERS, 5)
    assert (first.status_code, first.error) == (500, "HTTP 500: broken down")
    assert second.error == "HTTP 500: broken down"
    assert server.connections == 1


async def test_an_answer_without_length_is_read_until_the_close(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    server = await serve(lambda _: b"HTTP/1.1 503 Busy\r\n\r\ncome back later", close_after=True)
    result = await poster.post(server.url(), BODY, HEADERS, 5)
    assert (result.status_code, result.error) == (503, "HTTP 503: come back later")


async def test_interim_answers_are_skipped(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    final = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
    server = await serve(lambda _: interim + final)
    assert (await poster.post(server.url(), BODY, HEADERS, 5)).status_code == 202


async def test_a_long_body_is_cut_and_its_connection_dropped(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    server = await serve(answer("500 Oops", b"y" * (KEEP_BODY_BYTES + 1)))
    for _ in range(2):
        result = await poster.post(server.url(), BODY, HEADERS, 5)
        assert result.error is not None
        assert result.error == "HTTP 500: " + "y" * TEXT_BYTES
    assert server.connections == 2


async def test_a_body_that_never_ends_is_cut_at_the_text_kept(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    # Content-Length promises more than ever comes: the text is enough to answer at once.
    endless = b"HTTP/1.1 500 Oops\r\nContent-Length: 999999\r\n\r\n" + b"z" * (TEXT_BYTES + 10)
    server = await serve(lambda _: endless)
    result = await poster.post(server.url(), BODY, HEADERS, 2)
    assert result.error == "HTTP 500: " + "z" * TEXT_BYTES


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"SMTP ready\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", "head over"),
    ],
)
async def test_a_malformed_answer_is_an_error_not_an_exception(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster, raw: bytes, said: str
) -> None:
    server = await serve(lambda _: raw)
    result = await poster.post(server.url(), BODY, HEADERS, 5)
    assert result.status_code is None
    assert result.error is not None
    assert said in result.error


async def test_a_connection_closed_without_an_answer_is_an_error(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster
) -> None:
    server = await serve(lambda _: b"HTTP/1.1 200", close_after=True)
    result = await poster.post(server.url(), BODY, HEADERS, 5)
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("connection closed before an answer")
    assert server.connections == 1  # a fresh connection is not tried again


@pytest.mark.parametrize(
    "headers",
    [{"X-Tenant": "acme\r\nX-Injected: 1"}, {"X Bad": "1"}, {"X-Nul": "a\x00b"}],
)
async def test_a_header_that_would_change_the_request_is_refused_before_sending(
    serve: Callable[..., asyncio.Future[RawServer]], poster: HttpPoster, headers: dict[str, str]
) -> None:
    server = await serve(answer("200 OK"))
    result = await poster.post(server.url(), BODY, {**HEADERS, **headers}, 5)
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("a header cannot be sent")
    assert server.requests == []


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://127.0.0.1/hook", "is not http or https"),
        ("http:///hook", "no host"),
        ("http://127.0.0.1:99999/hook", "invalid URL"),
    ],
)
async def test_an_unusable_url_is_an_error(poster: HttpPoster, url: str, said: str) -> None:
    result = await poster.post(url, BODY, HEADERS, 5)
    assert result.status_code is None
    assert result.error is not None
    assert said in result.error


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_is_verified_against_the_trusted_authorities(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    raw = RawServer(answer("200 OK", b"ok"))
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context(cafile=str(cert_file))
    policy = AddressPolicy(allow_private=True)
    trusted, default = HttpPoster(policy, tls=trusting), HttpPoster(policy)
    try:
        for host in ("127.0.0.1", "localhost"):
            url = f"https://{host}:{port}/hook"
            assert (await trusted.post(url, BODY, HEADERS, 5)).status_code == 200
            refused = await default.post(url, BODY, HEADERS, 5)
            assert refused.status_code is None
            assert refused.error is not None
            assert "certificate verify failed" in refused.error
        assert len(raw.requests) == 2
    finally:
        await trusted.close()
        await default.close()
        server.close()
