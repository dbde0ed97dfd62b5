"""The management API of suppressions: recipients a number's WABA must not send marketing
messages to.

`/platform/v1/whatsapp/phone_numbers/{phone_number_id}/suppressions` lists (newest first,
or one `?recipient=`) and adds (one, or up to 1,000 at once); `.../suppressions/{recipient}`
lifts one. Scoped to the project of the caller's key like the webhook routes: another
project's number answers as a missing object (code 100, subcode 33). A suppression is the
WABA's, as Meta's opt-outs are: every number of the WABA sees the same list. Times are
ISO 8601 in UTC.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPI, RequestBody
from litestar.params import Parameter

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
from wagate.adapters.http.webhooks import Cursors, Paging, iso
from wagate.core import admin
from wagate.core import suppressions as sup
from wagate.core.access import phone_number_not_found
from wagate.domain.errors import INVALID_PARAMETER, GraphError, invalid_parameter
from wagate.domain.requests import GraphErrorResponse
from wagate.domain.suppressions import Suppression

SUPPRESSIONS_PATH = "/platform/v1/whatsapp/phone_numbers/{phone_number_id:str}/suppressions"
SUPPRESSION_PATH = SUPPRESSIONS_PATH + "/{recipient:str}"
TAGS = ["suppressions"]
# 1,000 recipients of up to ~140 characters (a parent BSUID) in JSON: far over the
# default body limit, which a single add keeps.
IMPORT_MAX_BODY_BYTES = 256 * 1024
_CURSOR_KIND = "sup"
_INT64 = range(-(2**63), 2**63)
# The longest recipient the table holds (`suppressions.recipient`).
_MAX_RECIPIENT_CHARS = 160
_NOT_SUPPRESSED = ResponseSpec(GraphErrorResponse, description="Not suppressed (code 100)")


class SuppressionItem(msgspec.Struct, forbid_unknown_fields=True):
    """A recipient: phone number (E.164, as typed) or BSUID, as a send's `to` / `recipient`."""

    recipient: str


class SuppressionsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One recipient (`suppression`) or up to 1,000 (`suppressions`); not both."""

    suppression: SuppressionItem | None = None
    suppressions: (
        Annotated[list[SuppressionItem], msgspec.Meta(max_length=sup.MAX_IMPORT)] | None
    ) = None


class SuppressionView(msgspec.Struct):
    """A suppressed recipient: `since` the stop, `updated_at` the row's last write."""

    recipient: str
    kind: str
    since: str
    updated_at: str


class AddedView(SuppressionView):
    """A suppression after an add; `added` false: it was suppressed already (`since` then)."""

    added: bool


class SuppressionAnswer(msgspec.Struct):
    """One suppression, wrapped."""

    data: AddedView


class InvalidView(msgspec.Struct):
    """A recipient of an import that was not stored: its 0-based index and why."""

    index: int
    recipient: str
    error: str


class ImportView(msgspec.Struct):
    """What an import did."""

    added: int
    already_suppressed: int
    invalid: list[InvalidView]


class ImportAnswer(msgspec.Struct):
    """An import, wrapped."""

    data: ImportView


class SuppressionPage(msgspec.Struct):
    """A page of suppressions, newest first, wrapped."""

    data: list[SuppressionView]
    paging: Paging


class Removed(msgspec.Struct):
    """What a DELETE did: the recipient (as stored) is no longer suppressed."""

    recipient: str
    removed: bool


class RemovalAnswer(msgspec.Struct):
    """A removal, wrapped."""

    data: Removed


def suppression_view(suppression: Suppression) -> SuppressionView:
    """A suppression as the API shows it."""
    return SuppressionView(
        recipient=suppression.recipient,
        kind=suppression.kind,
        since=iso(suppression.since),
        updated_at=iso(suppression.updated_at),
    )


def encode_cursor(after: tuple[int, str]) -> str:
    """An opaque cursor for the page after (since, recipient)."""
    since, recipient = after
    text = f"{_CURSOR_KIND}:{since}:{recipient}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (since, recipient) a cursor stands for, or a code 100 error."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, since, recipient = text.split(":", 2)
        if (
            kind == _CURSOR_KIND
            and since.lstrip("-").isascii()
            and since.lstrip("-").isdigit()
            and int(since) in _INT64
            and 0 < len(recipient) <= _MAX_RECIPIENT_CHARS
            and "\x00" not in recipient
        ):
            return int(since), recipient
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    shown = cursor if len(cursor) <= 80 else cursor[:80] + "..."
    raise invalid_parameter(f"`before` is not a cursor this API returned: {shown!r}")


@contextlib.asynccontextmanager
async def _as_graph_errors(phone_number_id: str, method: str) -> AsyncIterator[None]:
    """The use case's refusals as Graph errors: another project's number looks missing."""
    try:
        yield
    except admin.NumberNotFound:
        raise phone_number_not_found(phone_number_id, method) from None
    except sup.SuppressionNotFound as exc:
        raise GraphError(INVALID_PARAMETER, str(exc), http_status=404) from None
    except admin.AdminError as exc:
        raise invalid_parameter(str(exc)) from None


PageSize = Annotated[
    str | None,
    Parameter(
        description=f"Page size, 1-{sup.MAX_PAGE} (default {sup.DEFAULT_PAGE}).",
        schema_extra={
            "type": "integer",
            "minimum": 1,
            "maximum": sup.MAX_PAGE,
            "default": sup.DEFAULT_PAGE,
        },
    ),
]
BeforeCursor = Annotated[
    str | None, Parameter(description="Cursor from `paging.cursors.before`: the older page.")
]
RecipientFilter = Annotated[
    str | None,
    Parameter(
        description="Only this recipient (phone number or BSUID): one item if it is suppressed,"
        " none if not."
    ),
]


@get(
    SUPPRESSIONS_PATH,
    tags=TAGS,
    operation_id="listSuppressions",
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def list_suppressions(
    request: Request[Any, Any, Any],
    phone_number_id: str,
    limit: PageSize = None,
    before: BeforeCursor = None,
    recipient: RecipientFilter = None,
) -> SuppressionPage:
    """The suppressed recipients of the number's WABA, newest first; `?recipient=` looks one
    up."""
    project_id = await project_of(request)
    suppressions = services_of(request).suppressions
    size = page_limit(limit, sup.DEFAULT_PAGE, sup.MAX_PAGE)
    after = None if before is None else decode_cursor(before)
    async with _as_graph_errors(phone_number_id, "get"):
        if recipient is not None:
            found = await suppressions.find(phone_number_id, recipient, project_id=project_id)
            return SuppressionPage(
                data=[] if found is None else [suppression_view(found)],
                paging=Paging(Cursors()),
            )
        page = await suppressions.page(
            phone_number_id, limit=size, after=after, project_id=project_id
        )
    cursor = None if page.after is None else encode_cursor(page.after)
    return SuppressionPage(
        data=[suppression_view(s) for s in page.suppressions], paging=Paging(Cursors(cursor))
    )


@post(
    SUPPRESSIONS_PATH,
    tags=TAGS,
    operation_id="addSuppressions",
    security=API_KEY_SECURITY,
    status_code=200,
    request_max_body_size=IMPORT_MAX_BODY_BYTES,
    responses=BODY_ERRORS,
)
async def add_suppressions(
    request: Request[Any, Any, Any], phone_number_id: str
) -> SuppressionAnswer | ImportAnswer:
    """Suppress a recipient (`{"suppression": {"recipient"}}`), or import up to 1,000
    (`{"suppressions": [{"recipient"}, ...]}`: one transaction; each invalid one is reported
    by its index, the valid ones are stored). A suppressed recipient is refused at send
    (code 131050); adding one again keeps its first `since`.
    """
    project_id = await project_of(request)
    body: SuppressionsRequest = await read_wrapped(
        request, SuppressionsRequest, None, max_bytes=IMPORT_MAX_BODY_BYTES
    )
    if (body.suppression is None) == (body.suppressions is None):
        raise invalid_parameter(
            'Give one of `suppression` ({"recipient": ...}) or `suppressions`'
            f" (a list of up to {sup.MAX_IMPORT})"
        )
    suppressions = services_of(request).suppressions
    async with _as_graph_errors(phone_number_id, "post"):
        if body.suppression is not None:
            added = await suppressions.add(
                phone_number_id, body.suppression.recipient, project_id=project_id
            )
            view = msgspec.structs.asdict(suppression_view(added.suppression))
            return SuppressionAnswer(data=AddedView(**view, added=added.added))
        recipients = [item.recipient for item in body.suppressions or []]
        imported = await suppressions.add_many(phone_number_id, recipients, project_id=project_id)
    return ImportAnswer(
        data=ImportView(
            added=imported.added,
            already_suppressed=imported.already_suppressed,
            invalid=[InvalidView(r.index, r.recipient, r.error) for r in imported.invalid],
        )
    )


@delete(
    SUPPRESSION_PATH,
    tags=TAGS,
    operation_id="deleteSuppression",
    security=API_KEY_SECURITY,
    status_code=200,
    responses={**ERRORS, 404: _NOT_SUPPRESSED},
)
async def delete_suppression(
    request: Request[Any, Any, Any], phone_number_id: str, recipient: str
) -> RemovalAnswer:
    """Lift a recipient's suppression (phone number or BSUID in the path, URL-encoded); 404
    if it is not suppressed. A later opt-out from Meta suppresses it again."""
    project_id = await project_of(request)
    async with _as_graph_errors(phone_number_id, "delete"):
        address = await services_of(request).suppressions.remove(
            phone_number_id, recipient, project_id=project_id
        )
    return RemovalAnswer(data=Removed(address, True))


SUPPRESSION_ROUTES = [list_suppressions, add_suppressions, delete_suppression]


def document_suppressions(openapi: OpenAPI) -> None:
    """Declare the body the add route reads after the key check (required, bare)."""
    path = SUPPRESSIONS_PATH.replace(":str", "")
    document_wrapped_bodies(openapi, None, [(path, "post", SuppressionsRequest)])
    operation = (openapi.paths or {})[path].post
    if operation is not None and isinstance(operation.request_body, RequestBody):
        operation.request_body.required = True
