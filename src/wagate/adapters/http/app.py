"""The gateway's ASGI application: the send fast path in front of the Litestar app."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, cast

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from wagate.adapters.http.bodies import BodyTooLarge, Receive, read_body, receive_before
from wagate.adapters.http.docs import (
    API_KEY_SECURITY,
    docs_assets,
    docs_config,
    document_trace_ids,
)
from wagate.adapters.http.graph import error_body, new_trace_id, require_graph_version
from wagate.adapters.http.headers import api_key_of
from wagate.adapters.http.health import ReadinessView, readiness_view
from wagate.adapters.http.numbers import NUMBER_ROUTES, document_numbers
from wagate.adapters.http.proxies import TrustedProxies, public_url
from wagate.adapters.http.reads import (
    MessagePage,
    MessageView,
    message_page,
    message_query,
    message_view,
)
from wagate.adapters.http.send import match_send_path, serve_send
from wagate.adapters.http.send_openapi import document_send
from wagate.adapters.http.suppressions import SUPPRESSION_ROUTES, document_suppressions
from wagate.adapters.http.templates import TEMPLATE_ROUTES
from wagate.adapters.http.webhooks import WEBHOOK_ROUTES, document_webhooks
from wagate.adapters.logs import configure_logging
from wagate.domain.errors import (
    INVALID_ACCESS_TOKEN,
    INVALID_PARAMETER,
    SOMETHING_WENT_WRONG,
    TEMPORARILY_UNAVAILABLE,
    GraphError,
)
from wagate.domain.model import STATUSES, KeyOwner
from wagate.domain.requests import GraphErrorResponse
from wagate.domain.webhooks import signature_is_well_formed
from wagate.services import SANDBOX_PREFIX, Services
from wagate.settings import Settings

log = logging.getLogger("wagate.http")

GRAPH_BASE = "/meta/whatsapp/{version:str}/{phone_number_id:str}"
LIST_PATH = "/meta/whatsapp/{version}/{phone_number_id}/messages"
_INTERNAL = ResponseSpec(GraphErrorResponse, description="Internal error (code 131000)")
_ERRORS = {
    400: ResponseSpec(
        GraphErrorResponse,
        description="Invalid request, or a number not yours or unknown (code 100)",
    ),
    401: ResponseSpec(GraphErrorResponse, description="Missing or invalid API key (code 190)"),
    500: _INTERNAL,
}


class Health(msgspec.Struct):
    """The health answer."""

    status: str


def _services(request: Request[Any, Any, Any]) -> Services:
    return cast(Services, request.app.state.services)


async def _phone_number_for(
    request: Request[Any, Any, Any], version: str, phone_number_id: str
) -> None:
    """Refuse a read the caller's key may not make on this number (or a wrong version)."""

    def known_version(_: KeyOwner) -> None:
        require_graph_version(version)

    api_key = api_key_of(request.headers.get("x-api-key"), request.headers.get("authorization"))
    await _services(request).access.authorize(api_key, phone_number_id, "get", admit=known_version)


@get("/healthz", tags=["operations"], summary="Liveness", operation_id="healthz")
async def healthz() -> Health:
    """200 while the process serves requests."""
    return Health(status="ok")


@get(
    "/readyz",
    tags=["operations"],
    summary="Readiness",
    operation_id="readyz",
    responses={
        503: ResponseSpec(ReadinessView, description="Not ready: `failed` names the checks"),
    },
)
async def readyz(request: Request[Any, Any, Any]) -> Response[ReadinessView]:
    """200 when the database answers, its schema is this wagate's and, if this process runs
    a worker, its loop turns; 503 otherwise, naming the failed checks. No key needed."""
    status, view = readiness_view(await _services(request).health.readiness())
    return Response(view, status_code=status)


@get(
    f"{GRAPH_BASE}/messages/{{message_id:str}}",
    tags=["messages"],
    summary="Read one message",
    operation_id="getMessage",
    security=API_KEY_SECURITY,
    responses=_ERRORS,
)
async def get_message(
    request: Request[Any, Any, Any], version: str, phone_number_id: str, message_id: str
) -> MessageView:
    """One message with its status and timeline."""
    await _phone_number_for(request, version, phone_number_id)
    return message_view(await _services(request).reader.message(phone_number_id, message_id))


# The listing's query parameters, declared for the OpenAPI document; the handler reads
# them all itself (`message_query`), so its refusals stay Graph errors (code 100).
StatusFilter = Annotated[
    str | None,
    Parameter(
        description="Only messages in this status.",
        schema_extra={"enum": list(STATUSES)},
    ),
]
UpstreamWamidFilter = Annotated[
    str | None,
    Parameter(description="Only the message Meta knows by this wamid (its `upstream_wamid`)."),
]
SinceFilter = Annotated[
    str | None,
    Parameter(description="Created at or after: Unix seconds or ISO 8601 with a zone."),
]
UntilFilter = Annotated[
    str | None,
    Parameter(description="Created at or before: Unix seconds or ISO 8601 with a zone."),
]
PageSize = Annotated[
    str | None,
    Parameter(
        description="Page size, 1-100 (default 20).",
        schema_extra={"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    ),
]
BeforeCursor = Annotated[
    str | None, Parameter(description="Cursor from `paging.cursors.before`: the newer page.")
]
AfterCursor = Annotated[
    str | None, Parameter(description="Cursor from `paging.cursors.after`: the older page.")
]


@get(
    f"{GRAPH_BASE}/messages",
    tags=["messages"],
    summary="List messages",
    operation_id="listMessages",
    security=API_KEY_SECURITY,
    responses=_ERRORS,
)
async def list_messages(
    request: Request[Any, Any, Any],
    version: str,
    phone_number_id: str,
    status: StatusFilter = None,
    upstream_wamid: UpstreamWamidFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    limit: PageSize = None,
    before: BeforeCursor = None,
    after: AfterCursor = None,
) -> MessagePage:
    """A page of a number's messages, newest first; filter by `status`, `upstream_wamid`,
    `since`, `until`.

    Query: `limit` (1-100, default 20), `before`/`after` cursors from `paging`.
    """
    await _phone_number_for(request, version, phone_number_id)
    params = dict(request.query_params)
    query = message_query(phone_number_id, params)
    page = await _services(request).reader.page(query)
    client = request.scope.get("client")
    base = public_url(
        str(request.url).split("?", 1)[0],
        client[0] if client else None,
        request.headers,
        request.app.state.trusted_proxies,
    )
    return message_page(page, query, base, params)


@get(
    "/webhooks/meta",
    tags=["webhooks"],
    media_type="text/plain",
    summary="Meta's webhook verification",
    operation_id="verifyMetaWebhook",
    responses={
        403: ResponseSpec(
            GraphErrorResponse,
            description="Wrong `hub.verify_token` or `hub.mode` (code 10)",
        ),
        500: _INTERNAL,
    },
)
async def verify_meta_webhook(
    request: Request[Any, Any, Any],
    mode: Annotated[
        str | None, Parameter(query="hub.mode", description="`subscribe`", required=False)
    ] = None,
    verify_token: Annotated[
        str | None,
        Parameter(
            query="hub.verify_token",
            description="Must equal WAGATE_META_VERIFY_TOKEN",
            required=False,
        ),
    ] = None,
    challenge: Annotated[
        str | None,
        Parameter(query="hub.challenge", description="Echoed back on success", required=False),
    ] = None,
) -> str:
    """Meta's subscription check: echo `hub.challenge` when `hub.verify_token` matches."""
    return _services(request).ingestor.verify(
        mode, verify_token, challenge, _services(request).settings.meta_verify_token
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
    summary="Statuses from Meta",
    operation_id="receiveMetaWebhook",
    responses={
        400: ResponseSpec(GraphErrorResponse, description="Not Meta's payload (code 100)"),
        401: ResponseSpec(GraphErrorResponse, description="Signature missing or wrong (code 190)"),
        408: ResponseSpec(GraphErrorResponse, description="Body too slow (code 100)"),
        413: ResponseSpec(GraphErrorResponse, description="Body over 4 MiB (code 100)"),
        503: ResponseSpec(GraphErrorResponse, description="Too many bodies in flight (code 2)"),
        500: _INTERNAL,
    },
)
async def receive_meta_webhook(
    request: Request[Any, Any, Any],
    signature: Annotated[
        str | None,
        Parameter(
            header="X-Hub-Signature-256",
            description="`sha256=` and the hex HMAC-SHA256 of the raw body under the app secret",
            required=False,
        ),
    ] = None,
) -> WebhookAnswer:
    """Statuses, opt-outs and clicks from Meta, signed with the app secret (X-Hub-Signature-256).

    The embedded sandbox signs with the installation's own secret instead; what it
    signs can only touch messages of sandbox numbers. A missing or malformed
    signature is refused (401) before the body is read.
    """
    if not signature_is_well_formed(signature):
        raise GraphError(
            INVALID_ACCESS_TOKEN,
            "X-Hub-Signature-256 is missing or not `sha256=` and 64 hex digits",
            http_status=401,
        )
    if _webhook_reads.locked():
        raise GraphError(
            TEMPORARILY_UNAVAILABLE, "Too many webhook bodies are being received; retry later"
        )
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
                INVALID_PARAMETER,
                f"Webhook body is larger than {WEBHOOK_MAX_BODY_BYTES} bytes",
                http_status=413,
            ) from None
    result = await _services(request).ingestor.receive(body, signature)
    return WebhookAnswer(result.stored, result.duplicates, result.moved, result.rejected)


def _graph_error_response(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    trace_id = new_trace_id()
    if isinstance(exc, GraphError):
        error = exc
    elif isinstance(exc, ConnectionError):
        error = GraphError(INVALID_PARAMETER, "The client went away before sending the whole body")
    elif isinstance(exc, HTTPException):
        details = exc.detail if exc.status_code != 404 else f"Unknown path {request.url.path}"
        error = GraphError(INVALID_PARAMETER, str(details), http_status=exc.status_code)
    else:
        log.exception("unhandled error fbtrace_id=%s on %s", trace_id, request.url.path)
        error = GraphError(SOMETHING_WENT_WRONG, "Internal error")
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
            readyz,
            get_message,
            list_messages,
            verify_meta_webhook,
            receive_meta_webhook,
            *NUMBER_ROUTES,
            *WEBHOOK_ROUTES,
            *TEMPLATE_ROUTES,
            *SUPPRESSION_ROUTES,
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
    app.state.trusted_proxies = TrustedProxies.parse(services.settings.trusted_proxies)
    document_send(app.openapi_schema)
    document_numbers(app.openapi_schema)
    document_webhooks(app.openapi_schema)
    document_suppressions(app.openapi_schema)
    document_trace_ids(app.openapi_schema)
    return app


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
