"""The send endpoint's one door: bare ASGI, msgspec, no per-request framework machinery.

`POST /meta/whatsapp/{version}/{phone_number_id}/marketing_messages` is served
here directly; every other request goes on to the Litestar app. Litestar never
sees a send, so the OpenAPI document describes this route from the same msgspec
types (`send_openapi.py`) instead of from a handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wagate.adapters.http.bodies import BodyTooLarge, read_body
from wagate.adapters.http.graph import error_body, new_trace_id, require_graph_version
from wagate.adapters.http.headers import api_key_of
from wagate.core.access import Grant
from wagate.domain.errors import (
    INVALID_PARAMETER,
    SOMETHING_WENT_WRONG,
    GraphError,
    RateLimited,
)
from wagate.domain.model import KeyOwner
from wagate.ports import StoreUnavailable
from wagate.services import Services

log = logging.getLogger("wagate.send")

SEND_PATH = "/meta/whatsapp/{version}/{phone_number_id}/marketing_messages"
_JSON = b"application/json"
_ALLOW = b"OPTIONS, POST"
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class SendAnswer:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: Headers


@dataclass(frozen=True, slots=True)
class SendRequest:
    """What the send endpoint reads from an HTTP request's path and headers."""

    version: str
    phone_number_id: str
    api_key: str | None
    content_type: str | None
    idempotency_key: str | None


BodyReader = Callable[[], Awaitable[bytes]]


async def answer_send(
    services: Services, request: SendRequest, trace_id: str, read: BodyReader
) -> SendAnswer:
    """Authenticate from the headers, then read the body, validate, commit, answer.

    Nothing about the body is read before the key, the number and the rate limit
    pass: an unauthenticated client cannot hold a request slot by sending slowly.
    `read` reads the body (with its deadline).
    Never a 500 for bad input.
    """
    headers = [(b"x-fb-trace-id", trace_id.encode())]
    try:
        grant = await _admit(services, request, headers)
        body = await read()
        accepted = await services.acceptor.accept(
            grant.number, body, request.idempotency_key, grant.owner
        )
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
        large = GraphError(
            INVALID_PARAMETER, f"Request body is larger than {limit} bytes", http_status=413
        )
        return SendAnswer(413, error_body(large, trace_id), headers)
    except ConnectionError:
        gone = GraphError(INVALID_PARAMETER, "The client went away before sending the whole body")
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


async def _admit(services: Services, request: SendRequest, headers: Headers) -> Grant:
    """Key, rate limit, version, number, content type: everything the headers can refuse."""

    def within_limits(owner: KeyOwner) -> None:
        if owner.rate_limit is not None:
            quota = services.limiter.take(owner.project_id, owner.rate_limit, services.clock.now())
            headers.append((b"x-ratelimit-limit", str(quota.limit).encode()))
            headers.append((b"x-ratelimit-remaining", str(quota.remaining).encode()))
            if not quota.allowed:
                headers.append((b"retry-after", str(quota.retry_after).encode()))
                raise RateLimited(quota.limit, quota.retry_after)
        require_graph_version(request.version)

    grant = await services.access.authorize(
        request.api_key, request.phone_number_id, admit=within_limits
    )
    _check_content_type(request.content_type)
    return grant


def _not_stored(trace_id: str, trace: Headers) -> SendAnswer:
    """131000: nothing was stored, so the client may send the same request again."""
    internal = GraphError(
        SOMETHING_WENT_WRONG, "Internal error: the message was not stored; it is safe to retry"
    )
    return SendAnswer(internal.http_status, error_body(internal, trace_id), trace)


def _check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise GraphError(
            INVALID_PARAMETER,
            f"Content-Type must be application/json, got {content_type or 'none'!r}",
            http_status=415,
        )


def match_send_path(path: str) -> tuple[str, str] | None:
    """(version, phone_number_id) when `path` is the send endpoint, for any method.

    Empty segments (`//`, a trailing `/`) are skipped, as Litestar's router skips
    them on every other route; an empty version is kept, for the door to refuse.
    """
    parts = path.split("/")
    if len(parts) != 6 or not parts[4]:
        parts = ["", *(part for part in parts if part)]
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
    """The ASGI door of the send endpoint: decode the headers, answer, encode."""
    if scope["method"] != "POST":
        await _refuse_method(scope, send)
        return
    trace_id = new_trace_id()
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers[name.lower() if not name.islower() else name] = value
    settings = services.settings

    async def read() -> bytes:
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            raise GraphError(INVALID_PARAMETER, "Content-Length is not a number") from None
        if declared > settings.max_body_bytes:
            raise BodyTooLarge
        return await read_body(receive, settings.max_body_bytes, settings.body_timeout_seconds)

    answer = await answer_send(services, _send_request(route, headers), trace_id, read)
    await _respond(send, answer)


async def _respond(send: Any, answer: SendAnswer) -> None:
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


async def _refuse_method(scope: dict[str, Any], send: Any) -> None:
    """OPTIONS lists POST; any other method is a 405 in the Graph envelope."""
    if scope["method"] == "OPTIONS":
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", _ALLOW)]})
        await send({"type": "http.response.body", "body": b""})
        return
    trace_id = new_trace_id()
    refused = GraphError(INVALID_PARAMETER, "Method Not Allowed", http_status=405)
    log.info("refused fbtrace_id=%s path=%s: %s", trace_id, scope["path"], refused)
    trace = [(b"x-fb-trace-id", trace_id.encode())]
    await _respond(send, SendAnswer(refused.http_status, error_body(refused, trace_id), trace))


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
