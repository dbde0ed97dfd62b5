"""The sandbox as an ASGI app: a bare fast path for sends, Litestar for every other route.

Paths may carry a Graph version (`/v23.0/...`) or none, as the Graph API allows.
With a `prefix` (e.g. `/sandbox`) the routes live under it; a path that arrives
without the prefix is served too, because a mounting framework (Litestar's
`asgi(..., is_mount=True)`) strips the mount path before calling the app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, cast
from urllib.parse import urlencode

import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from wagate.adapters.http.bodies import BodyTooLarge, read_body
from wagate.adapters.http.graph import error_body, is_graph_version, new_trace_id
from wagate.adapters.http.headers import bearer_token
from wagate.adapters.sandbox.access import AccessTokens, FirstUseTokens, same_token
from wagate.adapters.sandbox.config import SandboxConfig
from wagate.adapters.sandbox.state import NO_TOKEN, SandboxState
from wagate.adapters.sandbox.templates import (
    SettableStatus,
    TemplateRecord,
    decode_cursor,
    encode_cursor,
    parse_create,
)
from wagate.adapters.sandbox.webhooks import WebhookSender
from wagate.domain.errors import (
    INVALID_ACCESS_TOKEN,
    INVALID_PARAMETER,
    MISSING_PARAMETER,
    PERMISSION_DENIED,
    SOMETHING_WENT_WRONG,
    GraphError,
    invalid_parameter,
)
from wagate.ports import Clock

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("wagate.sandbox")

# Meta's own requests are a few KB; 64 KB leaves room and keeps a client from parking megabytes.
MAX_BODY = 64 * 1024
# A send body arrives whole in milliseconds; one that trickles in holds a request slot.
BODY_SECONDS = 10.0
# Scope key holding the path as the client sent it, for paging links.
ORIGINAL_PATH = "wagate.sandbox.original_path"
DEFAULT_PAGE_SIZE = 25
_encode = msgspec.json.Encoder().encode
_JSON_HEADERS = [(b"content-type", b"application/json")]


class SandboxApp:
    """The emulated Graph API; call `startup`/`aclose` yourself when mounted without lifespan."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        prefix: str = "",
        clock: Clock | None = None,
        tokens: AccessTokens | None = None,
    ):
        """A sandbox with fresh state; webhooks start with the lifespan or on the first send.

        `tokens` decides which access token may use a number or WABA; by default
        the first token that uses one owns it (or only `config.token`, when set).
        """
        self.config = config
        self.prefix = prefix.rstrip("/")
        self.state = SandboxState(config, clock)
        self.tokens: AccessTokens = tokens or FirstUseTokens(self.state, config.token)
        self.sender = WebhookSender(self.state, config.webhook_url) if config.webhook_url else None
        self._routes = cast(ASGIApp, _build_litestar(self))

    async def startup(self) -> None:
        """Start the webhook sender."""
        if self.sender is not None:
            self.sender.start()

    async def aclose(self) -> None:
        """Stop the webhook sender and close its HTTP session."""
        if self.sender is not None:
            await self.sender.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self._routes(scope, receive, send)
            return
        original = scope["path"]
        path = self._route_path(original)
        if scope["method"] == "POST" and path.endswith("/marketing_messages"):
            segments = path.split("/")
            if len(segments) == 3 and segments[1]:
                await self._send_message(segments[1], scope, receive, send)
                return
        scope = {**scope, "path": path, "raw_path": path.encode(), "root_path": ""}
        scope[ORIGINAL_PATH] = original
        await self._routes(scope, receive, send)

    def _route_path(self, path: str) -> str:
        prefix = self.prefix
        if prefix and path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("", "/"):
            path = path[len(prefix) :]
        path = path.rstrip("/")
        first, _, rest = path[1:].partition("/")
        if is_graph_version(first, minor_optional=True):
            path = "/" + rest
        return path or "/"

    async def _send_message(
        self, phone_number_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        arrived = self.state.clock.now()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        token = _bearer(headers)
        try:
            body = await _read_body(receive, _content_length(headers))
        except GraphError as error:
            status, answer, extra = self._refusal(error)
        else:
            status, answer, extra = await self.answer_send(
                phone_number_id, token, body, arrived=arrived
            )
        await _respond(send, status, answer, [*_JSON_HEADERS, *extra])

    async def answer_send(
        self, phone_number_id: str, token: str, body: bytes, *, arrived: float | None = None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """A send as Meta answers it: HTTP status, JSON body and the headers beyond its type.

        What the HTTP route serves, without the HTTP: the embedded sandbox's own
        worker calls it in process (see `adapters.upstream.embedded`), so a send is
        checked, counted and stamped the moment it leaves, by the same code.
        `arrived` (default: now) is when the send reached the sandbox: its limits
        count it then, whatever the token lookup costs after.
        """
        if arrived is None:
            arrived = self.state.clock.now()
        self.start_webhooks()
        try:
            if len(body) > MAX_BODY:
                raise _too_large()
            waba_id = await self.number_of(phone_number_id, token)
            response = self.state.send(
                phone_number_id, body, authorized=waba_id is not None, at=arrived
            )
        except Exception as exc:
            if isinstance(exc, GraphError):
                return self._refusal(exc)
            log.exception("sandbox send failed")
            return self._refusal(
                GraphError(SOMETHING_WENT_WRONG, f"Sandbox internal error: {exc!r}")
            )
        return 200, _encode(response), []

    def start_webhooks(self) -> None:
        """Start the webhook sender if there is one and it is not running yet."""
        if self.sender is not None and not self.sender.started:
            self.sender.start()

    @staticmethod
    def _refusal(error: GraphError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        trace_id = new_trace_id()
        return (
            error.http_status,
            error_body(error, trace_id),
            [(b"x-fb-trace-id", trace_id.encode())],
        )

    async def number_of(self, phone_number_id: str, token: str) -> str | None:
        """The number's WABA if `token` may use it (the number is attached to that WABA)."""
        if not token:
            return None
        waba_id = await self.tokens.number(phone_number_id, token)
        if waba_id is not None:
            self.state.attach(phone_number_id, waba_id)
        return waba_id

    def reset(self) -> None:
        """Forget counters, state and learnt tokens."""
        self.state.reset()
        self.tokens.reset()


def create_sandbox_app(
    config: SandboxConfig,
    *,
    prefix: str = "",
    clock: Clock | None = None,
    tokens: AccessTokens | None = None,
) -> SandboxApp:
    """The sandbox ASGI app; `prefix` (e.g. `/sandbox`) when it shares a server with the gateway."""
    return SandboxApp(config, prefix=prefix, clock=clock, tokens=tokens)


def sandbox_app_from_env() -> SandboxApp:
    """Granian's factory for the standalone sandbox: config from `WAGATE_SANDBOX_*`."""
    return SandboxApp(SandboxConfig.from_env())


# ---- the bare send path -------------------------------------------------------------


def _bearer(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"authorization":
            return bearer_token(value)
    return ""


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _too_large() -> GraphError:
    return GraphError(
        INVALID_PARAMETER, f"Request body is larger than {MAX_BODY} bytes", http_status=413
    )


async def _read_body(receive: Receive, declared: int = 0) -> bytes:
    """The gateway's body reader: at most MAX_BODY bytes, within BODY_SECONDS (else 408)."""
    if declared > MAX_BODY:
        raise _too_large()
    try:
        return await read_body(receive, MAX_BODY, BODY_SECONDS)
    except BodyTooLarge:
        raise _too_large() from None
    except ConnectionError:
        raise GraphError(
            INVALID_PARAMETER, "The client went away before sending the whole body"
        ) from None


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---- the Litestar routes ------------------------------------------------------------

AnyRequest = Request[Any, Any, Any]


def _sandbox(request: AnyRequest) -> SandboxApp:
    return cast(SandboxApp, request.app.state["sandbox"])


def _invalid_token(token: str, what: str) -> GraphError:
    if not token:
        return GraphError(INVALID_ACCESS_TOKEN, NO_TOKEN)
    return GraphError(INVALID_ACCESS_TOKEN, f"Invalid OAuth access token: it cannot act for {what}")


async def _require_number_token(request: AnyRequest, phone_number_id: str) -> None:
    """Meta answers 190 unless the token is one of the phone number's."""
    token = bearer_token(request.headers.get("authorization"))
    if await _sandbox(request).number_of(phone_number_id, token) is None:
        raise _invalid_token(token, f"phone number {phone_number_id}")


async def _require_waba_token(request: AnyRequest, waba_id: str) -> None:
    """Meta answers 190 unless the token is one of the business account's."""
    token = bearer_token(request.headers.get("authorization"))
    if not token or not await _sandbox(request).tokens.waba(waba_id, token):
        raise _invalid_token(token, f"business account {waba_id}")


def _require_admin(request: AnyRequest) -> None:
    """The operator routes need WAGATE_ADMIN_TOKEN; without one configured they are off."""
    expected = _sandbox(request).config.admin_token
    if not expected:
        raise GraphError(
            PERMISSION_DENIED,
            "The sandbox's operator routes are disabled: set WAGATE_ADMIN_TOKEN"
            " (standalone: --admin-token)",
        )
    if not same_token(bearer_token(request.headers.get("authorization")), expected):
        raise GraphError(
            INVALID_ACCESS_TOKEN, "The operator routes need Authorization: Bearer <admin token>"
        )


def _graph_error(request: AnyRequest, error: GraphError) -> Response[bytes]:
    trace_id = new_trace_id()
    return Response(
        error_body(error, trace_id),
        status_code=error.http_status,
        media_type="application/json",
        headers={"x-fb-trace-id": trace_id},
    )


def _http_error(request: AnyRequest, error: HTTPException) -> Response[bytes]:
    original = request.scope.get(ORIGINAL_PATH, request.url.path)
    details = f"Unknown path components: {original}" if error.status_code == 404 else error.detail
    return _graph_error(
        request, GraphError(INVALID_PARAMETER, details, http_status=error.status_code)
    )


def _internal_error(request: AnyRequest, error: Exception) -> Response[bytes]:
    return _graph_error(
        request, GraphError(SOMETHING_WENT_WRONG, f"Sandbox internal error: {error!r}")
    )


def _filter_values(request: AnyRequest, name: str) -> set[str] | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    return {value.strip() for value in raw.split(",") if value.strip()}


def _int_param(request: AnyRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_parameter(f"Parameter {name} must be an integer, got {raw!r}") from None
    return max(low, min(high, value))


def _page_link(request: AnyRequest, cursor_name: str, cursor: str) -> str:
    query = {k: v for k, v in request.query_params.items() if k not in ("after", "before")}
    query[cursor_name] = cursor
    original = request.scope.get(ORIGINAL_PATH, request.url.path)
    return f"{request.url.scheme}://{request.url.netloc}{original}?{urlencode(query)}"


def _select(request: AnyRequest, templates: list[TemplateRecord]) -> list[TemplateRecord]:
    name = request.query_params.get("name")
    statuses = _filter_values(request, "status")
    categories = _filter_values(request, "category")
    languages = _filter_values(request, "language")
    # Meta's `name` filter matches part of a name, not only the whole of it.
    return [
        t
        for t in templates
        if (not name or name in t.name)
        and (statuses is None or t.status in statuses)
        and (categories is None or t.category in categories)
        and (languages is None or t.language in languages)
    ]


@get("/{waba_id:str}/message_templates")
async def list_templates(request: AnyRequest, waba_id: FromPath[str]) -> dict[str, Any]:
    """Meta's template list: filters `name`, `status`, `category`, `language`; cursor paging."""
    await _require_waba_token(request, waba_id)
    sandbox = _sandbox(request)
    templates = _select(request, sandbox.state.templates.list(waba_id, sandbox.state.clock.now()))
    limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, 1, 1000)
    after, before = request.query_params.get("after"), request.query_params.get("before")
    if after:
        after_id = decode_cursor(after)
        rest = [t for t in templates if int(t.id) > after_id]
        page, more_after, more_before = rest[:limit], len(rest) > limit, len(rest) < len(templates)
    elif before:
        before_id = decode_cursor(before)
        earlier = [t for t in templates if int(t.id) < before_id]
        page = earlier[-limit:]
        more_after, more_before = len(earlier) < len(templates), len(earlier) > limit
    else:
        page, more_after, more_before = templates[:limit], len(templates) > limit, False
    fields = _filter_values(request, "fields")
    data = [t.to_json(frozenset(fields) if fields else None) for t in page]
    if not page:
        # Like Graph, an empty page has no cursors.
        return {"data": data}
    paging: dict[str, Any] = {
        "cursors": {"before": encode_cursor(page[0].id), "after": encode_cursor(page[-1].id)}
    }
    if more_after:
        paging["next"] = _page_link(request, "after", paging["cursors"]["after"])
    if more_before:
        paging["previous"] = _page_link(request, "before", paging["cursors"]["before"])
    return {"data": data, "paging": paging}


@post("/{waba_id:str}/message_templates", status_code=200)
async def create_template(request: AnyRequest, waba_id: FromPath[str]) -> dict[str, Any]:
    """Create a template: PENDING now, APPROVED after the approval delay."""
    await _require_waba_token(request, waba_id)
    sandbox = _sandbox(request)
    create = parse_create(await request.body())
    # The approval webhook is due after the delay, whether a send starts the sender or not.
    sandbox.start_webhooks()
    template = sandbox.state.templates.create(waba_id, create, sandbox.state.clock.now())
    return {"id": template.id, "status": template.status, "category": template.category}


@delete("/{waba_id:str}/message_templates", status_code=200)
async def delete_template(request: AnyRequest, waba_id: FromPath[str]) -> dict[str, Any]:
    """Delete a template by `name` (every language), or one of them by `hsm_id`."""
    await _require_waba_token(request, waba_id)
    name = request.query_params.get("name")
    if not name:
        raise GraphError(MISSING_PARAMETER, "Parameter name is required")
    _sandbox(request).state.templates.delete(waba_id, name, request.query_params.get("hsm_id"))
    return {"success": True}


@get("/{phone_number_id:str}")
async def phone_number(request: AnyRequest, phone_number_id: FromPath[str]) -> dict[str, Any]:
    """A phone number's fields, e.g. `?fields=throughput`."""
    await _require_number_token(request, phone_number_id)
    state = _sandbox(request).state
    number = state.number(phone_number_id)
    known: dict[str, Any] = {
        "verified_name": "Wagate Sandbox",
        "display_phone_number": "+" + number.display_phone_number,
        "quality_rating": "GREEN",
        "code_verification_status": "VERIFIED",
        "platform_type": "CLOUD_API",
        # `mps` is the sandbox's own addition: its limit need not be one of Meta's
        # tiers (a test may limit it to 100/s), and a client that reads it paces to it.
        "throughput": {
            "level": state.throughput_level(phone_number_id),
            "mps": state.mps_of(phone_number_id),
        },
    }
    fields = _filter_values(request, "fields")
    chosen = {k: v for k, v in known.items() if fields is None or k in fields}
    return {**chosen, "id": phone_number_id}


@get("/_stats", sync_to_thread=False)
def stats(request: AnyRequest) -> dict[str, Any]:
    """Counters of requests, accepts, errors by code and duplicate sends, total and per number."""
    _require_admin(request)
    return _sandbox(request).state.stats()


@post("/_reset", status_code=200, sync_to_thread=False)
def reset(request: AnyRequest) -> dict[str, Any]:
    """Forget counters, state and learnt tokens."""
    _require_admin(request)
    _sandbox(request).reset()
    return {"success": True}


class NumberRegistration(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /_numbers`."""

    phone_number_id: str
    waba_id: str
    display_phone_number: str | None = None
    # The number's own throughput (msg/s); unset: the sandbox's --mps.
    mps: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] | None = None


@post("/_numbers", status_code=200)
async def register_number(request: AnyRequest) -> dict[str, Any]:
    """Attach a phone number to a WABA (until the next reset)."""
    _require_admin(request)
    try:
        body = msgspec.json.decode(await request.body(), type=NumberRegistration)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise invalid_parameter(str(exc)) from None
    state = _sandbox(request).state
    state.register_number(body.phone_number_id, body.waba_id, body.display_phone_number, body.mps)
    return {"success": True}


class TemplateStatusChange(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /_templates/{waba_id}`."""

    name: str
    language: str
    status: SettableStatus
    # Meta's `reason` in the webhook; default "NONE" ("INVALID_FORMAT" for a rejection).
    reason: str | None = None


@post("/_templates/{waba_id:str}", status_code=200)
async def set_template_status(request: AnyRequest, waba_id: FromPath[str]) -> dict[str, Any]:
    """Set a template's status as Meta's review or quality rating would, and report it by webhook.

    PAUSED, APPROVED (after a pause: an unpause), DISABLED or REJECTED; the sandbox
    posts `message_template_status_update` to its webhook URL as Meta does.
    """
    _require_admin(request)
    try:
        body = msgspec.json.decode(await request.body(), type=TemplateStatusChange)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise invalid_parameter(str(exc)) from None
    sandbox = _sandbox(request)
    sandbox.start_webhooks()
    template, event = sandbox.state.templates.set_status(
        waba_id, body.name, body.language, body.status, body.reason, sandbox.state.clock.now()
    )
    return {
        "success": True,
        "id": template.id,
        "status": template.status,
        "event": event.event if event is not None else None,
    }


@get("/_sends", sync_to_thread=False)
def sends(request: AnyRequest) -> dict[str, Any]:
    """The last accepted sends, oldest first (`at`: Unix seconds); `?phone_number_id=` filters."""
    _require_admin(request)
    wanted = request.query_params.get("phone_number_id")
    return {
        "data": [
            sent.to_json()
            for sent in _sandbox(request).state.sends
            if wanted is None or sent.phone_number_id == wanted
        ]
    }


def _build_litestar(sandbox: SandboxApp) -> Litestar:
    return Litestar(
        route_handlers=[
            list_templates,
            create_template,
            delete_template,
            phone_number,
            stats,
            reset,
            register_number,
            set_template_status,
            sends,
        ],
        exception_handlers={
            GraphError: _graph_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        on_startup=[sandbox.startup],
        on_shutdown=[sandbox.aclose],
        state=State({"sandbox": sandbox}),
        request_max_body_size=MAX_BODY,
        openapi_config=None,
        logging_config=None,
    )
