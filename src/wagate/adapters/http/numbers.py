"""The management API of phone numbers, Kapso-style: `/platform/v1/whatsapp/phone_numbers`.

Scoped to the project of the caller's API key: another project's number answers
as a missing one (code 100, subcode 33), as the send and read doors do. Bodies are
read only after the key is checked; answers are wrapped in `{"data": ...}`;
access tokens go in and never come out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, delete, get, patch, post
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPI
from litestar.params import Parameter

from wagate.adapters.http.docs import API_KEY_SECURITY
from wagate.adapters.http.management import (
    BODY_ERRORS,
    ERRORS,
    document_wrapped_bodies,
    project_of,
    read_wrapped,
    services_of,
)
from wagate.core import admin
from wagate.core.access import phone_number_not_found
from wagate.domain.errors import INVALID_PARAMETER, GraphError, invalid_parameter
from wagate.domain.model import PhoneNumber
from wagate.domain.requests import GraphErrorResponse
from wagate.ports import SystemClock

NUMBERS_PATH = "/platform/v1/whatsapp/phone_numbers"
NUMBER_PATH = NUMBERS_PATH + "/{phone_number_id:str}"
# The key that wraps a request body, as Kapso wraps its resources (`whatsapp_broadcast`).
BODY_KEY = "whatsapp_phone_number"

MetaId = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,64}$", description="Digits, as Meta's.")]
Mps = Annotated[int, msgspec.Meta(ge=1, description="Messages per second allowed (20, 80, 1000).")]
AccessToken = Annotated[
    str, msgspec.Meta(min_length=1, max_length=4096, description="Stored encrypted; never shown.")
]


class PhoneNumberCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A number to register: `meta` needs `waba_id` and `access_token`."""

    phone_number_id: MetaId
    upstream: Literal["sandbox", "meta"] = "sandbox"
    waba_id: MetaId | None = None
    access_token: AccessToken | None = None
    mps: Mps = admin.DEFAULT_MPS


class PhoneNumberUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What to change; what is left out stays."""

    access_token: AccessToken | None = None
    mps: Mps | None = None
    waba_id: MetaId | None = None


class PhoneNumberView(msgspec.Struct):
    """A phone number as the management API shows it (never its access token)."""

    id: str
    phone_number_id: str
    waba_id: str
    project_id: str
    upstream: str
    mps: int


class PhoneNumberAnswer(msgspec.Struct):
    """One number, wrapped."""

    data: PhoneNumberView


class PhoneNumberList(msgspec.Struct):
    """The project's numbers, wrapped."""

    data: list[PhoneNumberView]


class Removal(msgspec.Struct):
    """What a DELETE did."""

    id: str
    deleted: bool
    # Messages still queued or being sent, deleted unsent (only with `force=true`).
    deleted_undelivered: int


class RemovalAnswer(msgspec.Struct):
    """A removal, wrapped."""

    data: Removal


def _view(number: PhoneNumber) -> PhoneNumberView:
    return PhoneNumberView(
        id=number.phone_number_id,
        phone_number_id=number.phone_number_id,
        waba_id=number.waba_id,
        project_id=number.project_id,
        upstream=number.upstream,
        mps=number.mps,
    )


async def _body(request: Request[Any, Any, Any], kind: type[Any]) -> Any:
    """The request body as `kind`, wrapped in `whatsapp_phone_number` or bare; else code 100."""
    return await read_wrapped(request, kind, BODY_KEY)


@contextlib.asynccontextmanager
async def _as_graph_errors(
    request: Request[Any, Any, Any], phone_number_id: str, method: str
) -> AsyncIterator[None]:
    """The admin's refusals as Graph errors; a change drops this process's cached answers."""
    try:
        yield
    except admin.NumberNotFound:
        raise phone_number_not_found(phone_number_id, method) from None
    except admin.NumberBusy as exc:
        raise GraphError(
            INVALID_PARAMETER,
            f"Phone number {phone_number_id} has {exc.undelivered} undelivered message(s);"
            " wait for them or DELETE with ?force=true (they are deleted unsent)",
            http_status=409,
        ) from None
    except admin.AdminError as exc:
        raise invalid_parameter(str(exc)) from None
    finally:
        if method != "get":
            services_of(request).access.forget()


@get(
    NUMBERS_PATH,
    tags=["phone numbers"],
    operation_id="listPhoneNumbers",
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def list_phone_numbers(request: Request[Any, Any, Any]) -> PhoneNumberList:
    """The phone numbers of the key's project, ordered by id."""
    project_id = await project_of(request)
    numbers = await admin.list_numbers(services_of(request).store, project_id)
    return PhoneNumberList(data=[_view(number) for number in numbers])


@post(
    NUMBERS_PATH,
    tags=["phone numbers"],
    operation_id="createPhoneNumber",
    security=API_KEY_SECURITY,
    status_code=201,
    responses={
        **BODY_ERRORS,
        409: ResponseSpec(GraphErrorResponse, description="The id is taken"),
    },
)
async def create_phone_number(request: Request[Any, Any, Any]) -> PhoneNumberAnswer:
    """Register a phone number with the key's project (sandbox or Meta).

    Body: `{"whatsapp_phone_number": {"phone_number_id", "upstream", "waba_id",
    "access_token", "mps"}}`; a `meta` number needs `waba_id` and `access_token`.
    """
    project_id = await project_of(request)
    body: PhoneNumberCreate = await _body(request, PhoneNumberCreate)
    services = services_of(request)
    if await services.store.get_phone_number(body.phone_number_id) is not None:
        raise GraphError(
            INVALID_PARAMETER,
            f"Phone number {body.phone_number_id} is registered already",
            http_status=409,
        )
    async with _as_graph_errors(request, body.phone_number_id, "post"):
        number = await admin.add_number(
            services.store,
            SystemClock(),
            project_id=project_id,
            phone_number_id=body.phone_number_id,
            waba_id=body.waba_id,
            upstream=body.upstream,
            access_token=body.access_token or "",
            mps=body.mps,
            sandbox_allowed=services.settings.sandbox_mode() != "off",
        )
    return PhoneNumberAnswer(data=_view(number))


@get(
    NUMBER_PATH,
    tags=["phone numbers"],
    operation_id="getPhoneNumber",
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def get_phone_number(
    request: Request[Any, Any, Any], phone_number_id: str
) -> PhoneNumberAnswer:
    """One phone number of the key's project."""
    project_id = await project_of(request)
    async with _as_graph_errors(request, phone_number_id, "get"):
        number = await admin.show_number(services_of(request).store, phone_number_id, project_id)
    return PhoneNumberAnswer(data=_view(number))


@patch(
    NUMBER_PATH,
    tags=["phone numbers"],
    operation_id="updatePhoneNumber",
    security=API_KEY_SECURITY,
    responses=BODY_ERRORS,
)
async def update_phone_number(
    request: Request[Any, Any, Any], phone_number_id: str
) -> PhoneNumberAnswer:
    """Rotate the access token, change `mps` or `waba_id`; running workers use it within seconds.

    Body: `{"whatsapp_phone_number": {"access_token", "mps", "waba_id"}}`, any of them.
    """
    project_id = await project_of(request)
    body: PhoneNumberUpdate = await _body(request, PhoneNumberUpdate)
    async with _as_graph_errors(request, phone_number_id, "post"):
        number = await admin.update_number(
            services_of(request).store,
            phone_number_id,
            access_token=body.access_token,
            mps=body.mps,
            waba_id=body.waba_id,
            project_id=project_id,
        )
    return PhoneNumberAnswer(data=_view(number))


ForceFlag = Annotated[
    str | None,
    Parameter(
        description="`true`: remove even with undelivered messages (deleted unsent).",
        schema_extra={"type": "boolean", "default": False},
    ),
]


@delete(
    NUMBER_PATH,
    tags=["phone numbers"],
    operation_id="deletePhoneNumber",
    security=API_KEY_SECURITY,
    status_code=200,
    responses={
        **ERRORS,
        409: ResponseSpec(GraphErrorResponse, description="Messages are undelivered; see force"),
    },
)
async def delete_phone_number(
    request: Request[Any, Any, Any], phone_number_id: str, force: ForceFlag = None
) -> RemovalAnswer:
    """Remove a number with its messages and statuses; refused (409) while messages are
    queued or being sent, unless `?force=true`."""
    project_id = await project_of(request)
    if force not in (None, "true", "false"):
        raise invalid_parameter(f"`force` must be true or false, got {force!r}")
    async with _as_graph_errors(request, phone_number_id, "delete"):
        removed = await admin.remove_number(
            services_of(request).store,
            phone_number_id,
            force=force == "true",
            project_id=project_id,
        )
    return RemovalAnswer(data=Removal(phone_number_id, True, removed.deleted_undelivered))


NUMBER_ROUTES = [
    list_phone_numbers,
    create_phone_number,
    get_phone_number,
    update_phone_number,
    delete_phone_number,
]


def document_numbers(openapi: OpenAPI) -> None:
    """Declare the request bodies the POST and PATCH read themselves (after the key check)."""
    document_wrapped_bodies(
        openapi,
        BODY_KEY,
        [
            (NUMBERS_PATH, "post", PhoneNumberCreate),
            (NUMBERS_PATH + "/{phone_number_id}", "patch", PhoneNumberUpdate),
        ],
    )
