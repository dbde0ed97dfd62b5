"""The gateway's ASGI application: the send fast path in front of the Litestar app."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, cast

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.enums import ParamType
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Parameter, Schema

from wagate.adapters.http.bodies import BodyTooLarge, Receive, read_body, receive_before
from wagate.adapters.http.docs import docs_assets, docs_config
from wagate.adapters.http.graph import GRAPH_VERSION, error_body, new_trace_id
from wagate.adapters.http.headers import api_key_of
from wagate.adapters.http.reads import (
    MessagePage,
    MessageView,
    message_page,
    message_query,
    message_view,
    not_found,
)
from wagate.adapters.http.send import match_send_path, serve_send
from wagate.adapters.http.send_openapi import document_send
from wagate.adapters.logs import configure_logging
from wagate.domain.errors import GraphError
from wagate.domain.requests import GraphErrorResponse
from wagate.domain.webhooks import signature_is_well_formed
from wagate.services import SANDBOX_PREFIX, Services
from wagate.settings import Settings

log = logging.getLogger("wagate.http")

GRAPH_BASE = "/meta/whatsapp/{version:str}/{phone_number_id:str}"
LIST_PATH = "/meta/whatsapp/{version}/{phone_number_id}/messages"
_ERRORS = {
    400: ResponseSpec(GraphErrorResponse, description="Invalid request (Graph error envelope)"),
    401: ResponseSpec(GraphErrorResponse, description="Missing or invalid API key (code 190)"),
}


class Health(msgspec.Struct):
    """The health answer."""

    status: str


def _services(request: Request[Any, Any, Any]) -> Services:
    return cast(Services, request.app.state.services)


async def _phone_number_for(
    request: Request[Any, Any, Any], version: str, phone_number_id: str
) -> None:
    services = _services(request)
    api_key = api_key_of(request.headers.get("x-api-key"), request.headers.get("authorization"))
    project_id = await services.access.project_of(api_key)
    if not GRAPH_VERSION.match(version):
        raise GraphError(100, f"Unknown Graph API version {version!r}; use e.g. v24.0")
    await services.access.phone_number_of(project_id, phone_number_id, method="get")


@get("/healthz", tags=["operations"], summary="Liveness")
async def healthz() -> Health:
    """200 while the process serves requests."""
    return Health(status="ok")


@get(f"{GRAPH_BASE}/messages/{{message_id:str}}", tags=["messages"], responses=_ERRORS)
async def get_message(
    request: Request[Any, Any, Any], version: str, phone_number_id: str, message_id: str
) -> MessageView:
    """One message with its status and timeline."""
    await _phone_number_for(request, version, phone_number_id)
    if "\x00" in message_id:
        raise not_found(message_id)
    services = _services(request)
    message = await services.store.get_message(phone_number_id, message_id)
    if message is None:
        raise not_found(message_id)
    wamids = [message.upstream_wamid] if message.upstream_wamid else []
    return message_view(message, await services.statuses.timeline(wamids))


@get(f"{GRAPH_BASE}/messages", tags=["messages"], responses=_ERRORS)
async def list_messages(
    request: Request[Any, Any, Any], version: str, phone_number_id: str
) -> MessagePage:
    """A page of a number's messages, newest first; filter by `status`, `since`, `until`.

    Query: `limit` (1-100, default 20), `before`/`after` cursors from `paging`.
    """
    await _phone_number_for(request, version, phone_number_id)
    params = dict(request.query_params)
    query = message_query(phone_number_id, params)
    rows = await _services(request).store.list_messages(
        dataclasses.replace(query, limit=query.limit + 1)
    )
    base = str(request.url).split("?", 1)[0]
    wamids = [row.upstream_wamid for row in rows if row.upstream_wamid]
    timelines = await _services(request).statuses.timeline(wamids)
    return message_page(rows, query, base, params, timelines)


@get("/webhooks/meta", tags=["webhooks"], media_type="text/plain")
async def verify_meta_webhook(request: Request[Any, Any, Any]) -> str:
    """Meta's subscription check: echo `hub.challenge` when `hub.verify_token` matches."""
    params = request.query_params
    return _services(request).ingestor.verify(
        params.get("hub.mode"),
        params.get("hub.verify_token"),
        params.get("hub.challenge"),
        _services(request).settings.meta_verify_token,
    )


class WebhookAnswer(msgspec.Struct):
    """What a webhook POST stored."""

    stored: int
    duplicates: int
    moved: int
    # Rows the gateway could not store (a NUL, an absurd wamid or time); the rest are stored.
    rejected: int = 0


# Meta batches up to 1,000 updates in one POST (~350 KB): far over the send limit,
# and ten times under this one.
WEBHOOK_MAX_BODY_BYTES = 4 * 1024 * 1024
# Webhook bodies read at once per process. Meta's posts arrive whole in milliseconds;
# a client that trickles a body holds a slot until the body deadline. Beyond this
# many, a POST is refused at once (503, code 2; Meta retries) instead of waiting
# in a request slot that /healthz and sends also need.
WEBHOOK_CONCURRENT_READS = 64
_webhook_reads = asyncio.Semaphore(WEBHOOK_CONCURRENT_READS)


@post(
    "/webhooks/meta",
    tags=["webhooks"],
    status_code=200,
    request_max_body_size=WEBHOOK_MAX_BODY_BYTES,
    responses={
        401: ResponseSpec(GraphErrorResponse, description="Signature missing or wrong (code 190)"),
        408: ResponseSpec(GraphErrorResponse, description="Body too slow (code 100)"),
        413: ResponseSpec(GraphErrorResponse, description="Body over 4 MiB (code 100)"),
        503: ResponseSpec(GraphErrorResponse, description="Too many bodies in flight (code 2)"),
    },
)
async def receive_meta_webhook(request: Request[Any, Any, Any]) -> WebhookAnswer:
    """Statuses, opt-outs and clicks from Meta, signed with the app secret (X-Hub-Signature-256).

    The embedded sandbox signs with the installation's own secret instead; what it
    signs can only touch messages of sandbox numbers. A missing or malformed
    signature is refused (401) before the body is read.
    """
    signature = request.headers.get("x-hub-signature-256")
    if not signature_is_well_formed(signature):
        raise GraphError(
            190,
            "X-Hub-Signature-256 is missing or not `sha256=` and 64 hex digits",
            http_status=401,
        )
    if _webhook_reads.locked():
        raise GraphError(2, "Too many webhook bodies are being received; retry later")
    settings = _services(request).settings
    async with _webhook_reads:
        try:
            body = await read_body(
                cast(Receive, request.receive),
                WEBHOOK_MAX_BODY_BYTES,
                settings.body_timeout_seconds,
            )
        except BodyTooLarge:
            raise GraphError(
                100, f"Webhook body is larger than {WEBHOOK_MAX_BODY_BYTES} bytes", http_status=413
            ) from None
    result = await _services(request).ingestor.receive(body, signature)
    return WebhookAnswer(result.stored, result.duplicates, result.moved, result.rejected)


def _graph_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    trace_id = new_trace_id()
    if isinstance(exc, GraphError):
        error = exc
    elif isinstance(exc, ConnectionError):
        error = GraphError(100, "The client went away before sending the whole body")
    elif isinstance(exc, HTTPException):
        details = exc.detail if exc.status_code != 404 else f"Unknown path {request.url.path}"
        error = GraphError(100, str(details), http_status=exc.status_code)
    else:
        log.exception("unhandled error fbtrace_id=%s on %s", trace_id, request.url.path)
        error = GraphError(131000, "Internal error")
    if isinstance(exc, GraphError | HTTPException | ConnectionError):
        log.info("refused fbtrace_id=%s path=%s: %s", trace_id, request.url.path, error)
    return Response(
        content=cast(Any, error_body(error, trace_id)),
        status_code=error.http_status,
        media_type="application/json",
        headers={"x-fb-trace-id": trace_id},
    )


def create_litestar(services: Services) -> Litestar:
    """The Litestar app: everything but the send fast path."""
    app = Litestar(
        route_handlers=[
            healthz,
            get_message,
            list_messages,
            verify_meta_webhook,
            receive_meta_webhook,
            docs_assets(),
        ],
        exception_handlers={Exception: _graph_error_response},
        request_max_body_size=services.settings.max_body_bytes,
        openapi_config=docs_config(
            title="wagate",
            version="0.1.0",
            description=(
                "Self-hosted, drop-in implementation of Kapso's WhatsApp marketing_messages API."
            ),
        ),
        on_startup=[services.start_gateway],
        on_shutdown=[services.close],
        debug=False,
        # Logging is set up once, by create_app (escaped messages); Litestar's own
        # default would replace the root handler with an unescaping one.
        logging_config=None,
    )
    app.state.services = services
    document_send(app.openapi_schema)
    _describe_list_query(app)
    return app


def _describe_list_query(app: Litestar) -> None:
    """Document the listing's query parameters, which the handler checks itself."""
    text = Schema(type=OpenAPIType.STRING)
    item = app.openapi_schema.paths[LIST_PATH] if app.openapi_schema.paths else None
    if item is None or item.get is None:
        return
    item.get.parameters = [
        *(item.get.parameters or []),
        Parameter(
            name="status",
            param_in=ParamType.QUERY,
            schema=Schema(
                type=OpenAPIType.STRING, enum=["pending", "sent", "delivered", "read", "failed"]
            ),
            description="Only messages in this status.",
        ),
        Parameter(
            name="since",
            param_in=ParamType.QUERY,
            schema=text,
            description="Created at or after: Unix seconds or ISO 8601 with a zone.",
        ),
        Parameter(
            name="until",
            param_in=ParamType.QUERY,
            schema=text,
            description="Created at or before: Unix seconds or ISO 8601 with a zone.",
        ),
        Parameter(
            name="limit",
            param_in=ParamType.QUERY,
            schema=Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=100, default=20),
            description="Page size, 1-100 (default 20).",
        ),
        Parameter(
            name="before",
            param_in=ParamType.QUERY,
            schema=text,
            description="Cursor from `paging.cursors.before`: the newer page.",
        ),
        Parameter(
            name="after",
            param_in=ParamType.QUERY,
            schema=text,
            description="Cursor from `paging.cursors.after`: the older page.",
        ),
    ]


class Gateway:
    """The ASGI entry point: the send path goes to its bare door, the rest to Litestar."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.litestar = create_litestar(services)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Route one ASGI event."""
        if scope["type"] == "http":
            path = scope["path"]
            route = match_send_path(path)
            if route is not None:
                await serve_send(self.services, scope, receive, send, route)
                return
            # Whatever reads a body past here (Litestar, the sandbox) reads it in time.
            receive = receive_before(receive, self.services.settings.body_timeout_seconds)
            if path.startswith(SANDBOX_PREFIX + "/"):
                # Not served (WAGATE_SANDBOX=0, or no sandbox number yet): a 404 like any path.
                sandbox = await self.services.served_sandbox()
                if sandbox is not None:
                    await sandbox(scope, receive, send)
                    return
        await self.litestar(scope, receive, send)


def create_app() -> Gateway:
    """The app factory granian calls in each worker: settings from the environment."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return Gateway(Services.build(settings))


__all__ = ["Gateway", "create_app", "create_litestar", "error_body"]
