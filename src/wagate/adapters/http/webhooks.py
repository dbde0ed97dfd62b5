"""The management API of customer webhooks, Kapso-style.

`/platform/v1/whatsapp/phone_numbers/{phone_number_id}/webhooks` lists and creates a
number's webhooks; one webhook is `/platform/v1/whatsapp/webhooks/{webhook_id}`, or the
same under its number's path (where another number's webhook is missing). Scoped to the
project of the caller's key like the number routes: another project's webhook, or
number, answers as a missing object (code 100, subcode 33). Secrets are shown in full
only in the answer that made them (create, or a rotating PATCH); masked everywhere else.
Times are ISO 8601 in UTC, as Kapso's platform API writes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, patch, post
from litestar.openapi.spec import OpenAPI
from litestar.params import Parameter
from litestar.types import Method

from wagate.adapters.http.docs import API_KEY_SECURITY
from wagate.adapters.http.management import (
    BODY_ERRORS,
    ERRORS,
    document_wrapped_bodies,
    page_limit,
    project_of,
    read_wrapped,
    services_of,
)
from wagate.adapters.http.reads import decode_cursor, encode_cursor
from wagate.core import admin
from wagate.core import webhook_admin as hooks
from wagate.core.access import phone_number_not_found
from wagate.domain.errors import invalid_parameter
from wagate.domain.notifications import AttemptView, DeliveryView, EventType
from wagate.domain.notifications import EndpointKind as Kind

NUMBER_WEBHOOKS_PATH = "/platform/v1/whatsapp/phone_numbers/{phone_number_id:str}/webhooks"
WEBHOOK_PATH = "/platform/v1/whatsapp/webhooks/{webhook_id:str}"
NUMBER_WEBHOOK_PATH = NUMBER_WEBHOOKS_PATH + "/{webhook_id:str}"
# The key that wraps a request body, as Kapso's `whatsapp_webhook`.
BODY_KEY = "whatsapp_webhook"
TAGS = ["webhooks"]

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, description="http(s) URL.")]
Events = Annotated[
    list[EventType],
    msgspec.Meta(min_length=1, description="Events to send (default: the four message events)."),
]
Headers = Annotated[
    dict[str, str],
    msgspec.Meta(
        max_length=hooks.MAX_HEADERS,
        description="Custom headers sent with every webhook; never wagate's own.",
    ),
]
Secret = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=hooks.MAX_SECRET_CHARS,
        description="Signing secret (`whsec_...` for `standard`); generated when left out.",
    ),
]


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A webhook to add to a number; only `url` is required."""

    url: Url
    kind: Kind = "kapso"
    events: Events | None = None
    active: bool = True
    headers: Headers | None = None
    secret_key: Secret | None = None


class WebhookUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; what is left out stays. `rotate_secret`: generate a new secret."""

    url: Url | None = None
    kind: Kind | None = None
    events: Events | None = None
    active: bool | None = None
    headers: Headers | None = None
    secret_key: Secret | None = None
    rotate_secret: bool = False


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Which dead delivery to send again (left out: every dead one)."""

    delivery_id: str | None = None


class WebhookView(msgspec.Struct):
    """A webhook as the management API shows it: its secret masked unless just made."""

    id: str
    phone_number_id: str
    url: str
    kind: str
    events: list[str]
    active: bool
    headers: dict[str, str]
    secret_key: str
    paused: bool
    paused_at: str | None
    failing_since: str | None
    created_at: str
    updated_at: str


class WebhookAnswer(msgspec.Struct):
    """One webhook, wrapped."""

    data: WebhookView


class WebhookList(msgspec.Struct):
    """A number's webhooks, oldest first, wrapped."""

    data: list[WebhookView]


class DeliveryItem(msgspec.Struct):
    """One event for one webhook, and how its sending went."""

    id: str
    webhook_id: str
    event: str
    state: str
    attempts: int
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    last_status_code: int | None
    last_error: str | None
    data: dict[str, Any]


class AttemptItem(msgspec.Struct):
    """One POST to a webhook."""

    delivery_id: str
    webhook_id: str
    at: str
    latency_ms: int
    status_code: int | None
    error: str | None


class Cursors(msgspec.Struct):
    """`before`: pass it as `?before=` for the next, older page (absent on the last page)."""

    before: str | None = None


class Paging(msgspec.Struct):
    """Where the next page starts."""

    cursors: Cursors


class DeliveryPage(msgspec.Struct):
    """A page of deliveries, newest first, wrapped."""

    data: list[DeliveryItem]
    paging: Paging


class AttemptPage(msgspec.Struct):
    """A page of attempts, newest first, wrapped."""

    data: list[AttemptItem]
    paging: Paging


class TestQueued(msgspec.Struct):
    """The test event queued for a webhook."""

    webhook_id: str
    delivery_id: str
    event: str


class TestAnswer(msgspec.Struct):
    """A queued test, wrapped."""

    data: TestQueued


class Replayed(msgspec.Struct):
    """How many dead deliveries are pending again."""

    webhook_id: str
    replayed: int


class ReplayAnswer(msgspec.Struct):
    """A replay, wrapped."""

    data: Replayed


class WebhookRemoval(msgspec.Struct):
    """What a DELETE did."""

    id: str
    deleted: bool


class WebhookRemovalAnswer(msgspec.Struct):
    """A removal, wrapped."""

    data: WebhookRemoval


def iso(ms: int) -> str:
    """Unix milliseconds as ISO 8601 in UTC, to the millisecond (`2026-12-03T19:49:48.123Z`)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_or_none(ms: int | None) -> str | None:
    return None if ms is None else iso(ms)


def webhook_view(shown: hooks.ShownWebhook) -> WebhookView:
    """A webhook's JSON; its secret as `shown` allows."""
    endpoint = shown.endpoint
    return WebhookView(
        id=endpoint.id,
        phone_number_id=endpoint.phone_number_id,
        url=endpoint.url,
        kind=endpoint.kind,
        events=list(endpoint.events),
        active=endpoint.active,
        headers=dict(endpoint.headers),
        secret_key=shown.secret_key,
        paused=endpoint.paused_at is not None,
        paused_at=_iso_or_none(endpoint.paused_at),
        failing_since=_iso_or_none(endpoint.failing_since),
        created_at=iso(endpoint.created_at),
        updated_at=iso(endpoint.updated_at),
    )


def _delivery_item(view: DeliveryView) -> DeliveryItem:
    return DeliveryItem(
        id=view.id,
        webhook_id=view.endpoint_id,
        event=view.type,
        state=view.state,
        attempts=view.attempts,
        created_at=iso(view.created_at),
        next_attempt_at=_iso_or_none(view.next_attempt_at),
        delivered_at=_iso_or_none(view.delivered_at),
        last_status_code=view.last_status_code,
        last_error=view.last_error,
        data=msgspec.json.decode(view.data),
    )


def _attempt_item(view: AttemptView) -> AttemptItem:
    return AttemptItem(
        delivery_id=view.delivery_id,
        webhook_id=view.endpoint_id,
        at=iso(view.at),
        latency_ms=view.latency_ms,
        status_code=view.status_code,
        error=view.error,
    )


def _operation_ids(flat: str, nested: str) -> Callable[[Any, Method, list[Any]], str]:
    """One handler serves the flat and the per-number path; each gets its own operation id."""

    def operation_id(_: Any, __: Method, components: list[Any]) -> str:
        return nested if "phone_numbers" in components else flat

    return operation_id


def _number_in_path(request: Request[Any, Any, Any]) -> str | None:
    """The phone number of a per-number path (None on the flat path)."""
    value = request.path_params.get("phone_number_id")
    return None if value is None else str(value)


@contextlib.asynccontextmanager
async def _as_graph_errors(subject_id: str, method: str) -> AsyncIterator[None]:
    """The use cases' refusals as Graph errors: a missing number or webhook looks like
    Meta's missing object, whoever's it is."""
    try:
        yield
    except (admin.NumberNotFound, hooks.WebhookNotFound):
        raise phone_number_not_found(subject_id, method) from None
    except admin.AdminError as exc:
        raise invalid_parameter(str(exc)) from None


# ---- a number's webhooks -------------------------------------------------------------


@get(
    NUMBER_WEBHOOKS_PATH,
    tags=TAGS,
    operation_id="listWebhooks",
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def list_webhooks(request: Request[Any, Any, Any], phone_number_id: str) -> WebhookList:
    """A phone number's webhooks, oldest first, secrets masked."""
    project_id = await project_of(request)
    services = services_of(request)
    async with _as_graph_errors(phone_number_id, "get"):
        found = await hooks.list_webhooks(
            services.store, services.notifications, phone_number_id, project_id
        )
    return WebhookList(data=[webhook_view(shown) for shown in found])


@post(
    NUMBER_WEBHOOKS_PATH,
    tags=TAGS,
    operation_id="createWebhook",
    security=API_KEY_SECURITY,
    status_code=201,
    responses=BODY_ERRORS,
)
async def create_webhook(request: Request[Any, Any, Any], phone_number_id: str) -> WebhookAnswer:
    """Add a webhook to a phone number; the answer carries its secret, in full, this once.

    Body: `{"whatsapp_webhook": {"url", "kind", "events", "active", "headers",
    "secret_key"}}`; only `url` is required (kind `kapso`, the four message events,
    active, a generated secret).
    """
    project_id = await project_of(request)
    body: WebhookCreate = await read_wrapped(request, WebhookCreate, BODY_KEY)
    services = services_of(request)
    async with _as_graph_errors(phone_number_id, "post"):
        shown = await hooks.create_webhook(
            services.store,
            services.notifications,
            services.clock,
            phone_number_id=phone_number_id,
            url=body.url,
            kind=body.kind,
            events=body.events,
            active=body.active,
            headers=body.headers,
            secret_key=body.secret_key,
            project_id=project_id,
        )
    return WebhookAnswer(data=webhook_view(shown))


# ---- one webhook ---------------------------------------------------------------------

ONE = [WEBHOOK_PATH, NUMBER_WEBHOOK_PATH]


def _actions(suffix: str) -> list[str]:
    return [path + suffix for path in ONE]


@get(
    ONE,
    tags=TAGS,
    operation_id=_operation_ids("getWebhook", "getPhoneNumberWebhook"),
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def get_webhook(request: Request[Any, Any, Any], webhook_id: str) -> WebhookAnswer:
    """One webhook of the key's project, secret masked."""
    project_id = await project_of(request)
    async with _as_graph_errors(webhook_id, "get"):
        shown = await hooks.show_webhook(
            services_of(request).notifications,
            webhook_id,
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    return WebhookAnswer(data=webhook_view(shown))


@patch(
    ONE,
    tags=TAGS,
    operation_id=_operation_ids("updateWebhook", "updatePhoneNumberWebhook"),
    security=API_KEY_SECURITY,
    responses=BODY_ERRORS,
)
async def update_webhook(request: Request[Any, Any, Any], webhook_id: str) -> WebhookAnswer:
    """Change a webhook; a new `secret_key` (or `rotate_secret: true`) is shown in this answer.

    A `standard` webhook's old secret keeps signing beside the new one for 24 hours;
    Kapso's and Meta's formats carry one signature, so theirs changes at once.
    """
    project_id = await project_of(request)
    body: WebhookUpdate = await read_wrapped(request, WebhookUpdate, BODY_KEY)
    services = services_of(request)
    async with _as_graph_errors(webhook_id, "post"):
        shown = await hooks.update_webhook(
            services.notifications,
            services.clock,
            webhook_id,
            url=body.url,
            kind=body.kind,
            events=body.events,
            active=body.active,
            headers=body.headers,
            secret_key=body.secret_key,
            rotate_secret=body.rotate_secret,
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    return WebhookAnswer(data=webhook_view(shown))


@delete(
    ONE,
    tags=TAGS,
    operation_id=_operation_ids("deleteWebhook", "deletePhoneNumberWebhook"),
    security=API_KEY_SECURITY,
    status_code=200,
    responses=ERRORS,
)
async def delete_webhook(request: Request[Any, Any, Any], webhook_id: str) -> WebhookRemovalAnswer:
    """Remove a webhook with its pending deliveries and its attempts."""
    project_id = await project_of(request)
    async with _as_graph_errors(webhook_id, "delete"):
        await hooks.remove_webhook(
            services_of(request).notifications,
            webhook_id,
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    return WebhookRemovalAnswer(data=WebhookRemoval(webhook_id, True))


@post(
    _actions("/test"),
    tags=TAGS,
    operation_id=_operation_ids("testWebhook", "testPhoneNumberWebhook"),
    security=API_KEY_SECURITY,
    status_code=202,
    responses=ERRORS,
)
async def test_webhook(request: Request[Any, Any, Any], webhook_id: str) -> TestAnswer:
    """Queue a `whatsapp.webhook.test` event for this webhook; see it under `/deliveries`."""
    project_id = await project_of(request)
    services = services_of(request)
    async with _as_graph_errors(webhook_id, "post"):
        delivery_id = await hooks.send_test(
            services.store,
            services.notifications,
            services.notifications,
            services.clock,
            webhook_id,
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    return TestAnswer(data=TestQueued(webhook_id, delivery_id, "whatsapp.webhook.test"))


StateFilter = Annotated[
    str | None,
    Parameter(
        query="state",
        description="Only deliveries in this state (`dead`: the dead letters).",
        schema_extra={"enum": list(hooks.DELIVERY_STATES)},
    ),
]
PageSize = Annotated[
    str | None,
    Parameter(
        description=f"Page size, 1-{hooks.MAX_PAGE} (default 20).",
        schema_extra={"type": "integer", "minimum": 1, "maximum": hooks.MAX_PAGE, "default": 20},
    ),
]
BeforeCursor = Annotated[
    str | None, Parameter(description="Cursor from `paging.cursors.before`: the older page.")
]


def _before(value: str | None) -> int | None:
    return None if value is None else decode_cursor(value, "before")


@get(
    _actions("/deliveries"),
    tags=TAGS,
    operation_id=_operation_ids("listWebhookDeliveries", "listPhoneNumberWebhookDeliveries"),
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def list_deliveries(
    request: Request[Any, Any, Any],
    webhook_id: str,
    # `state` is a name Litestar keeps for the app's state.
    state_filter: StateFilter = None,
    limit: PageSize = None,
    before: BeforeCursor = None,
) -> DeliveryPage:
    """A webhook's deliveries, newest first; `?state=dead` lists its dead letters."""
    project_id = await project_of(request)
    services = services_of(request)
    async with _as_graph_errors(webhook_id, "get"):
        page = await hooks.list_deliveries(
            services.notifications,
            services.notifications,
            webhook_id,
            state=state_filter,
            limit=page_limit(limit, 20, hooks.MAX_PAGE),
            before=_before(before),
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    cursor = None if page.before is None else encode_cursor(page.before)
    return DeliveryPage(
        data=[_delivery_item(view) for view in page.deliveries],
        paging=Paging(Cursors(before=cursor)),
    )


@get(
    _actions("/attempts"),
    tags=TAGS,
    operation_id=_operation_ids("listWebhookAttempts", "listPhoneNumberWebhookAttempts"),
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def list_attempts(
    request: Request[Any, Any, Any],
    webhook_id: str,
    limit: PageSize = None,
    before: BeforeCursor = None,
) -> AttemptPage:
    """A webhook's attempts (each POST: status code, error, latency), newest first."""
    project_id = await project_of(request)
    services = services_of(request)
    size = page_limit(limit, 20, hooks.MAX_PAGE)
    async with _as_graph_errors(webhook_id, "get"):
        found = await hooks.list_attempts(
            services.notifications,
            services.notifications,
            webhook_id,
            limit=size,
            before=_before(before),
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    cursor = encode_cursor(found[-1].seq) if len(found) == size else None
    return AttemptPage(
        data=[_attempt_item(view) for view in found], paging=Paging(Cursors(before=cursor))
    )


@post(
    _actions("/replay"),
    tags=TAGS,
    operation_id=_operation_ids("replayWebhookDeliveries", "replayPhoneNumberWebhookDeliveries"),
    security=API_KEY_SECURITY,
    status_code=200,
    responses=BODY_ERRORS,
)
async def replay_deliveries(request: Request[Any, Any, Any], webhook_id: str) -> ReplayAnswer:
    """Send dead deliveries again, from their first attempt: `{"delivery_id"}` one, no body all."""
    project_id = await project_of(request)
    body: ReplayRequest = await read_wrapped(request, ReplayRequest, None)
    services = services_of(request)
    async with _as_graph_errors(webhook_id, "post"):
        replayed = await hooks.replay(
            services.notifications,
            services.notifications,
            services.clock,
            webhook_id,
            body.delivery_id,
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    return ReplayAnswer(data=Replayed(webhook_id, replayed))


@post(
    _actions("/pause"),
    tags=TAGS,
    operation_id=_operation_ids("pauseWebhook", "pausePhoneNumberWebhook"),
    security=API_KEY_SECURITY,
    status_code=200,
    responses=ERRORS,
)
async def pause_webhook(request: Request[Any, Any, Any], webhook_id: str) -> WebhookAnswer:
    """Hold a webhook's deliveries: events still queue for it, and go when it resumes."""
    project_id = await project_of(request)
    services = services_of(request)
    async with _as_graph_errors(webhook_id, "post"):
        shown = await hooks.pause_webhook(
            services.notifications,
            services.notifications,
            services.clock,
            webhook_id,
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    return WebhookAnswer(data=webhook_view(shown))


@post(
    _actions("/resume"),
    tags=TAGS,
    operation_id=_operation_ids("resumeWebhook", "resumePhoneNumberWebhook"),
    security=API_KEY_SECURITY,
    status_code=200,
    responses=ERRORS,
)
async def resume_webhook(request: Request[Any, Any, Any], webhook_id: str) -> WebhookAnswer:
    """Send a paused webhook's waiting deliveries now (also after wagate paused it for failing)."""
    project_id = await project_of(request)
    services = services_of(request)
    async with _as_graph_errors(webhook_id, "post"):
        shown = await hooks.resume_webhook(
            services.notifications,
            services.clock,
            webhook_id,
            project_id=project_id,
            phone_number_id=_number_in_path(request),
        )
    return WebhookAnswer(data=webhook_view(shown))


WEBHOOK_ROUTES = [
    list_webhooks,
    create_webhook,
    get_webhook,
    update_webhook,
    delete_webhook,
    test_webhook,
    list_deliveries,
    list_attempts,
    replay_deliveries,
    pause_webhook,
    resume_webhook,
]


def document_webhooks(openapi: OpenAPI) -> None:
    """Declare the bodies the create, update and replay routes read after the key check."""
    plain = [path.replace(":str", "") for path in ONE]
    operations: list[tuple[str, str, type[Any]]] = [
        (NUMBER_WEBHOOKS_PATH.replace(":str", ""), "post", WebhookCreate),
        *((path, "patch", WebhookUpdate) for path in plain),
    ]
    document_wrapped_bodies(openapi, BODY_KEY, operations)
    # A replay's body is optional and bare: none replays every dead delivery.
    document_wrapped_bodies(
        openapi, None, [(path + "/replay", "post", ReplayRequest) for path in plain]
    )
