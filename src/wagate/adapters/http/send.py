"""The send endpoint's hot path: bare ASGI, msgspec, no per-request framework machinery.

`POST /meta/whatsapp/{version}/{phone_number_id}/marketing_messages` is served
here directly; every other request goes on to the Litestar app. The Litestar
app declares the same route (so OpenAPI documents it) and calls `answer_send`
too, so both doors behave the same.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wagate.adapters.http.bodies import BodyTooLarge, read_body
from wagate.adapters.http.graph import error_body, new_trace_id
from wagate.domain.errors import GraphError, RateLimited
from wagate.domain.model import KeyOwner, PhoneNumber
from wagate.ports import StoreUnavailable
from wagate.services import Services

log = logging.getLogger("wagate.send")

GRAPH_VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")
_JSON = b"application/json"
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class SendAnswer:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: Headers


@dataclass(frozen=True, slots=True)
class SendRequest:
    """What the send endpoint reads from an HTTP request's headers (and, once read, its body)."""

    version: str
    phone_number_id: str
    api_key: str | None
    content_type: str | None
    idempotency_key: str | None
    body: bytes = b""


BodyReader = Callable[[], Awaitable[bytes]]


def api_key_of(x_api_key: str | None, authorization: str | None) -> str | None:
    """The API key from `X-API-Key`, else from `Authorization: Bearer <key>`."""
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


async def answer_send(
    services: Services, request: SendRequest, trace_id: str, read: BodyReader | None = None
) -> SendAnswer:
    """Authenticate from the headers, then read the body, validate, commit, answer.

    Nothing about the body is read before the key, the number and the rate limit
    pass: an unauthenticated client cannot hold a request slot by sending slowly.
    `read` reads the body (with its deadline); without it, `request.body` is used.
    Never a 500 for bad input.
    """
    headers = [(b"x-fb-trace-id", trace_id.encode())]
    try:
        number = await _admit(services, request, headers)
        body = request.body if read is None else await read()
        accepted = await services.acceptor.accept(number, body, request.idempotency_key)
    except GraphError as error:
        log.info(
            "send refused fbtrace_id=%s phone_number_id=%s code=%s http=%s: %s",
            trace_id,
            request.phone_number_id,
            error.code,
            error.http_status,
            error.details,
        )
        return SendAnswer(error.http_status, error_body(error, trace_id), headers)
    except BodyTooLarge:
        limit = services.settings.max_body_bytes
        large = GraphError(100, f"Request body is larger than {limit} bytes", http_status=413)
        return SendAnswer(413, error_body(large, trace_id), headers)
    except ConnectionError:
        gone = GraphError(100, "The client went away before sending the whole body")
        return SendAnswer(400, error_body(gone, trace_id), headers)
    except StoreUnavailable:
        # Logged once per failed batch by the store: a traceback per caller would bury it.
        return _not_stored(trace_id, headers)
    except Exception:
        log.exception("send failed fbtrace_id=%s; nothing was stored", trace_id)
        return _not_stored(trace_id, headers)
    if accepted.replayed:
        headers.append((b"idempotent-replayed", b"true"))
    return SendAnswer(200, accepted.body, headers)


async def _admit(services: Services, request: SendRequest, headers: Headers) -> PhoneNumber:
    """Key, rate limit, version, number, content type: everything the headers can refuse."""

    def within_limits(owner: KeyOwner) -> None:
        if owner.rate_limit is not None:
            quota = services.limiter.take(owner.project_id, owner.rate_limit, services.clock.now())
            headers.append((b"x-ratelimit-limit", str(quota.limit).encode()))
            headers.append((b"x-ratelimit-remaining", str(quota.remaining).encode()))
            if not quota.allowed:
                headers.append((b"retry-after", str(quota.retry_after).encode()))
                raise RateLimited(quota.limit, quota.retry_after)
        if not GRAPH_VERSION.match(request.version):
            raise GraphError(100, f"Unknown Graph API version {request.version!r}; use e.g. v24.0")

    grant = await services.access.authorize(
        request.api_key, request.phone_number_id, admit=within_limits
    )
    _check_content_type(request.content_type)
    return grant.number


def _not_stored(trace_id: str, trace: Headers) -> SendAnswer:
    """131000: nothing was stored, so the client may send the same request again."""
    internal = GraphError(131000, "Internal error: the message was not stored; it is safe to retry")
    return SendAnswer(internal.http_status, error_body(internal, trace_id), trace)


def _check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise GraphError(
            100,
            f"Content-Type must be application/json, got {content_type or 'none'!r}",
            http_status=415,
        )


def match_send_path(path: str) -> tuple[str, str] | None:
    """(version, phone_number_id) when `path` is the send endpoint."""
    parts = path.split("/")
    if (
        len(parts) == 6
        and parts[5] == "marketing_messages"
        and parts[1] == "meta"
        and parts[2] == "whatsapp"
        and parts[4]
    ):
        return parts[3], parts[4]
    return None


async def serve_send(
    services: Services, scope: dict[str, Any], receive: Any, send: Any, route: tuple[str, str]
) -> None:
    """The ASGI fast path for one send request."""
    trace_id = new_trace_id()
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers[name.lower() if not name.islower() else name] = value
    settings = services.settings

    async def read() -> bytes:
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            raise GraphError(100, "Content-Length is not a number") from None
        if declared > settings.max_body_bytes:
            raise BodyTooLarge
        return await read_body(receive, settings.max_body_bytes, settings.body_timeout_seconds)

    answer = await answer_send(services, _send_request(route, headers), trace_id, read)
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [
                (b"content-type", _JSON),
                (b"content-length", str(len(answer.body)).encode()),
                *answer.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer.body})


def _send_request(route: tuple[str, str], headers: dict[bytes, bytes]) -> SendRequest:
    def text(name: bytes) -> str | None:
        value = headers.get(name)
        return None if value is None else value.decode("latin-1")

    return SendRequest(
        version=route[0],
        phone_number_id=route[1],
        api_key=api_key_of(text(b"x-api-key"), text(b"authorization")),
        content_type=text(b"content-type"),
        idempotency_key=text(b"idempotency-key"),
    )
