"""The send endpoint's hot path: bare ASGI, msgspec, no per-request framework machinery.

`POST /meta/whatsapp/{version}/{phone_number_id}/marketing_messages` is served
here directly; every other request goes on to the Litestar app. The Litestar
app declares the same route (so OpenAPI documents it) and calls `answer_send`
too, so both doors behave the same.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from wagate.adapters.http.graph import error_body, new_trace_id
from wagate.domain.errors import GraphError
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
    """What the send endpoint reads from an HTTP request."""

    version: str
    phone_number_id: str
    api_key: str | None
    content_type: str | None
    idempotency_key: str | None
    body: bytes


def api_key_of(x_api_key: str | None, authorization: str | None) -> str | None:
    """The API key from `X-API-Key`, else from `Authorization: Bearer <key>`."""
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


async def answer_send(services: Services, request: SendRequest, trace_id: str) -> SendAnswer:
    """Authenticate, validate, commit, answer: never a 500 for bad input."""
    trace = [(b"x-fb-trace-id", trace_id.encode())]
    try:
        project_id = await services.access.project_of(request.api_key)
        if not GRAPH_VERSION.match(request.version):
            raise GraphError(100, f"Unknown Graph API version {request.version!r}; use e.g. v24.0")
        number = await services.access.phone_number_of(project_id, request.phone_number_id)
        _check_content_type(request.content_type)
        accepted = await services.acceptor.accept(number, request.body, request.idempotency_key)
    except GraphError as error:
        log.info(
            "send refused fbtrace_id=%s phone_number_id=%s code=%s: %s",
            trace_id,
            request.phone_number_id,
            error.code,
            error.details,
        )
        return SendAnswer(error.http_status, error_body(error, trace_id), trace)
    except StoreUnavailable:
        # Logged once per failed batch by the store: a traceback per caller would bury it.
        return _not_stored(trace_id, trace)
    except Exception:
        log.exception("send failed fbtrace_id=%s; nothing was stored", trace_id)
        return _not_stored(trace_id, trace)
    if accepted.replayed:
        trace.append((b"idempotent-replayed", b"true"))
    return SendAnswer(200, accepted.body, trace)


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


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


async def read_body(receive: Any, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def serve_send(
    services: Services, scope: dict[str, Any], receive: Any, send: Any, route: tuple[str, str]
) -> None:
    """The ASGI fast path for one send request."""
    trace_id = new_trace_id()
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers[name.lower() if not name.islower() else name] = value
    limit = services.settings.max_body_bytes
    try:
        declared = int(headers.get(b"content-length", b"0") or 0)
        if declared > limit:
            raise BodyTooLarge
        body = await read_body(receive, limit)
    except BodyTooLarge:
        answer = too_large(limit, trace_id)
    except ValueError:
        error = GraphError(100, "Content-Length is not a number", http_status=400)
        answer = SendAnswer(400, error_body(error, trace_id), [])
    except ConnectionError:
        return
    else:
        answer = await answer_send(services, _send_request(route, headers, body), trace_id)
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


def too_large(limit: int, trace_id: str) -> SendAnswer:
    """The answer to a body over the limit."""
    error = GraphError(100, f"Request body is larger than {limit} bytes", http_status=413)
    return SendAnswer(413, error_body(error, trace_id), [(b"x-fb-trace-id", trace_id.encode())])


def _send_request(route: tuple[str, str], headers: dict[bytes, bytes], body: bytes) -> SendRequest:
    def text(name: bytes) -> str | None:
        value = headers.get(name)
        return None if value is None else value.decode("latin-1")

    return SendRequest(
        version=route[0],
        phone_number_id=route[1],
        api_key=api_key_of(text(b"x-api-key"), text(b"authorization")),
        content_type=text(b"content-type"),
        idempotency_key=text(b"idempotency-key"),
        body=body,
    )
