"""What the management routes (`/platform/v1/...`) share: the caller's project, wrapped
bodies read after the key check, and the error answers they document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgspec
from litestar import Request
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, RequestBody, Schema

from wagate.adapters.http.bodies import BodyTooLarge, Receive, read_body
from wagate.adapters.http.headers import api_key_of
from wagate.domain.errors import INVALID_PARAMETER, GraphError, invalid_parameter
from wagate.domain.requests import GraphErrorResponse
from wagate.services import Services

ERRORS = {
    400: ResponseSpec(GraphErrorResponse, description="Invalid request or unknown object"),
    401: ResponseSpec(GraphErrorResponse, description="Missing or invalid API key (code 190)"),
}
BODY_ERRORS = {
    **ERRORS,
    408: ResponseSpec(GraphErrorResponse, description="Body did not arrive in time (code 100)"),
    413: ResponseSpec(GraphErrorResponse, description="Body over the size limit (code 100)"),
}


def services_of(request: Request[Any, Any, Any]) -> Services:
    """The process's services."""
    return cast(Services, request.app.state.services)


async def project_of(request: Request[Any, Any, Any]) -> str:
    """The project of the caller's key, or a 190/401."""
    api_key = api_key_of(request.headers.get("x-api-key"), request.headers.get("authorization"))
    return await services_of(request).access.project_of(api_key)


def page_limit(value: str | None, default: int, most: int) -> int:
    """A listing's `limit`: `default` when absent, else 1 to `most` (ASCII digits only),
    or code 100."""
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= most):
        raise invalid_parameter(f"`limit` must be an integer from 1 to {most}")
    return int(value)


_decoder = msgspec.json.Decoder()


async def read_wrapped(
    request: Request[Any, Any, Any],
    kind: type[Any],
    key: str | None,
    *,
    max_bytes: int | None = None,
) -> Any:
    """The request body as `kind`, wrapped in `{key: ...}` (as Kapso wraps its resources) or
    bare (always bare when `key` is None); else code 100 (413 when over `max_bytes`, by
    default WAGATE_MAX_BODY_BYTES)."""
    settings = services_of(request).settings
    limit = settings.max_body_bytes if max_bytes is None else max_bytes
    try:
        raw = await read_body(cast(Receive, request.receive), limit, settings.body_timeout_seconds)
    except BodyTooLarge:
        raise GraphError(
            INVALID_PARAMETER, f"Body is larger than {limit} bytes", http_status=413
        ) from None
    try:
        value = _decoder.decode(raw or b"{}")
        if key is not None and isinstance(value, dict) and set(value) == {key}:
            value = value[key]
        return msgspec.convert(value, kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise invalid_parameter(f"Invalid body: {exc}") from None


def document_wrapped_bodies(
    openapi: OpenAPI, key: str | None, operations: Sequence[tuple[str, str, type[Any]]]
) -> None:
    """Declare the bodies that (path, method) operations read themselves, after the key check,
    as a required `{key: kind}` (with `key` None: an optional, bare `kind`); Litestar cannot
    see them in the handlers' signatures."""
    ref = "#/components/schemas/{name}"
    (_, components) = msgspec.json.schema_components(
        [kind for _, _, kind in operations], ref_template=ref
    )
    assert openapi.components.schemas is not None
    openapi.components.schemas.update(cast(dict[str, Schema], components))
    paths = openapi.paths or {}
    for path, method, kind in operations:
        operation = getattr(paths[path], method)
        schema: dict[str, Any] = {"$ref": ref.format(name=kind.__name__)}
        if key is not None:
            schema = {"type": "object", "properties": {key: schema}, "required": [key]}
        operation.request_body = RequestBody(
            required=key is not None,
            content={"application/json": OpenAPIMediaType(schema=cast(Schema, schema))},
        )
