"""The send endpoint's OpenAPI operation, declared from the msgspec types its door decodes.

Litestar never sees a send (the bare-ASGI door in `send.py` takes the path
first), so it cannot describe one. This declares the operation from the same
types, `MarketingMessageRequest`, `MarketingMessageResponse` and
`GraphErrorResponse`, and adds it to the document Litestar built: a
description, with no second handler behind it.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from litestar.enums import ParamType
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)

from wagate.adapters.http.send import SEND_PATH
from wagate.domain.requests import (
    GraphErrorResponse,
    MarketingMessageRequest,
    MarketingMessageResponse,
)

_COMPONENTS = "#/components/schemas/{name}"
PHONE_SEND = "MarketingMessagePhoneRequest"
BSUID_SEND = "MarketingMessageBsuidRequest"

# Every status the door answers besides 200, and when.
SEND_ERRORS: dict[int, str] = {
    400: "Invalid request (Graph error envelope)",
    401: "Missing or invalid API key (code 190)",
    408: "Body did not arrive in time (code 100)",
    413: "Body over the size limit (code 100)",
    415: "Content-Type is not JSON (code 100)",
    422: "Idempotency-Key reused with another body (code 100)",
    429: "The project's rate limit is reached (code 4); see Retry-After",
    500: "Not stored (e.g. the database failed; code 131000): safe to retry",
}

_TEXT = Schema(type=OpenAPIType.STRING)


def send_schemas() -> dict[str, Schema]:
    """The JSON schemas the operation refers to, by component name.

    Two body variants, as Kapso documents them: a phone send (`to`) and a BSUID
    send (`recipient`); both are the one `MarketingMessageRequest` type.
    """
    (_, components) = msgspec.json.schema_components(
        [MarketingMessageRequest, MarketingMessageResponse, GraphErrorResponse],
        ref_template=_COMPONENTS,
    )
    base: dict[str, Any] = components.pop(MarketingMessageRequest.__name__)
    components[PHONE_SEND] = {**base, "title": "Phone send", "required": [*base["required"], "to"]}
    components[BSUID_SEND] = {
        **base,
        "title": "BSUID send",
        "required": [*base["required"], "recipient"],
    }
    return cast(dict[str, Schema], components)


def _json(name: str) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=Reference(_COMPONENTS.format(name=name)))}


def send_operation() -> Operation:
    """`POST marketing_messages` as the door serves it: path, headers, body, every answer."""
    errors = _json(GraphErrorResponse.__name__)
    responses = {
        "200": OpenAPIResponse(
            description="Stored durably: it will be sent",
            content=_json(MarketingMessageResponse.__name__),
            headers={
                "Idempotent-Replayed": OpenAPIHeader(
                    schema=_TEXT, description="`true` when this answers an earlier request"
                )
            },
        ),
        **{
            str(status): OpenAPIResponse(description=description, content=errors)
            for status, description in SEND_ERRORS.items()
        },
    }
    responses["429"].headers = {
        "Retry-After": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER), description="Seconds to wait"
        )
    }
    return Operation(
        tags=["messages"],
        summary="Send a marketing message",
        description=(
            "Accept a template message for delivery; a 200 means it is stored durably.\n\n"
            "Kapso's and Meta's body: `to` (phone, typed any way with its country code) or "
            "`recipient` (a BSUID); `to` wins when both are sent. An `Idempotency-Key` header "
            "makes retries safe for 24 h."
        ),
        operation_id="sendMarketingMessage",
        parameters=[
            Parameter(name="version", param_in=ParamType.PATH, schema=_TEXT, required=True),
            Parameter(name="phone_number_id", param_in=ParamType.PATH, schema=_TEXT, required=True),
            Parameter(
                name="Idempotency-Key",
                param_in=ParamType.HEADER,
                schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
                description=(
                    "Makes retries safe: the same key and body within 24 h return the first "
                    "answer and store nothing; the same key with another body is refused (422)."
                ),
            ),
        ],
        request_body=RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        one_of=[
                            Reference(_COMPONENTS.format(name=PHONE_SEND)),
                            Reference(_COMPONENTS.format(name=BSUID_SEND)),
                        ]
                    )
                )
            },
        ),
        responses=cast(dict[str, OpenAPIResponse | Reference], responses),
    )


def document_send(openapi: OpenAPI) -> None:
    """Add the send operation and its schemas to a document Litestar built.

    msgspec's schemas replace Litestar's for the same types: they describe exactly
    what msgspec decodes and encodes.
    """
    assert openapi.components.schemas is not None
    openapi.components.schemas.update(send_schemas())
    openapi.paths = {**(openapi.paths or {}), SEND_PATH: PathItem(post=send_operation())}
