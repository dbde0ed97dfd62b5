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
    Example,
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

from wagate.adapters.http.docs import API_KEY_SECURITY, TRACE_HEADER, trace_header
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
    400: (
        "Invalid request (Graph error envelope), or a check at accept refused it: the"
        " template's parameters (132000, 132005, 132012), its status (132015 paused, 132016"
        " disabled, 134100 not marketing, 134101 still syncing), the recipient (131050"
        " opted out, 131049 limited) or the project's frequency cap (1000003)"
    ),
    401: "Missing or invalid API key (code 190)",
    404: "The template does not exist in that language or is not approved (code 132001)",
    408: "Body did not arrive in time (code 100)",
    413: "Body over the size limit (code 100)",
    415: "Content-Type is not JSON (code 100)",
    422: "Idempotency-Key reused with another body (code 100)",
    429: "The project's rate limit is reached (code 4); see Retry-After",
    500: "Not stored (e.g. the database failed; code 131000): safe to retry",
}

_TEXT = Schema(type=OpenAPIType.STRING)
_INTEGER = Schema(type=OpenAPIType.INTEGER)
_TEMPLATE = {"name": "promo_template", "language": {"code": "en_US"}}

# The documented bodies, one per variant; a test validates each against the schema.
SEND_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "phone": (
        "A phone number, typed any way with its country code",
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "+44 7700 900123",
            "type": "template",
            "template": _TEMPLATE,
        },
    ),
    "bsuid": (
        "A business-scoped user id (BSUID)",
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "recipient": "US.13491208655302741918",
            "type": "template",
            "template": _TEMPLATE,
        },
    ),
    "phone_and_bsuid": (
        "Both: `to` wins",
        {
            "messaging_product": "whatsapp",
            "to": "447700900123",
            "recipient": "US.13491208655302741918",
            "type": "template",
            "template": _TEMPLATE,
        },
    ),
    "parameters": (
        "A template with parameters, a tracking value and a fallback policy",
        {
            "messaging_product": "whatsapp",
            "to": "+1 (555) 123-4567",
            "type": "template",
            "template": {
                "name": "seasonal_promo",
                "language": {"code": "en_US"},
                "components": [
                    {"type": "header", "parameters": [{"type": "text", "text": "Summer"}]},
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "Ana"},
                            {"type": "text", "text": "20%"},
                            {"type": "text", "text": "Sunday"},
                        ],
                    },
                    {
                        "type": "button",
                        "sub_type": "url",
                        "index": "0",
                        "parameters": [{"type": "text", "text": "summer"}],
                    },
                    {
                        "type": "button",
                        "sub_type": "copy_code",
                        "index": 1,
                        "parameters": [{"type": "coupon_code", "coupon_code": "SUMMER20"}],
                    },
                ],
            },
            "biz_opaque_callback_data": "campaign-42",
            "product_policy": "CLOUD_API_FALLBACK",
        },
    ),
}
ANSWER_EXAMPLE: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "+44 7700 900123", "wa_id": "447700900123"}],
    "messages": [
        {"id": "wamid.HBgMNDQ3NzAwOTAwMTIzFQIAERgSQTE0QkJENTg0RkY2", "message_status": "accepted"}
    ],
}
ERROR_EXAMPLE: dict[str, Any] = {
    "error": {
        "message": "(#131008) Required parameter is missing",
        "type": "OAuthException",
        "code": 131008,
        "error_data": {
            "messaging_product": "whatsapp",
            "details": "`template.name` is required",
        },
        "fbtrace_id": "AbC1dE2fG3hI00000001",
    }
}


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
    properties = base["properties"]
    # In its own variant the recipient is required and not null.
    phone = {**properties, "to": _not_null(properties["to"])}
    bsuid = {**properties, "recipient": _not_null(properties["recipient"])}
    components[PHONE_SEND] = {
        **base,
        "title": "Phone send",
        "properties": phone,
        "required": [*base["required"], "to"],
    }
    components[BSUID_SEND] = {
        **base,
        "title": "BSUID send",
        "properties": bsuid,
        "required": [*base["required"], "recipient"],
    }
    return cast(dict[str, Schema], components)


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema (`anyOf: [T, null]`) without its null."""
    [kept] = [s for s in schema["anyOf"] if s.get("type") != "null"]
    return dict(kept)


def _json(name: str, example: Any = None) -> dict[str, OpenAPIMediaType]:
    schema = Reference(_COMPONENTS.format(name=name))
    return {"application/json": OpenAPIMediaType(schema=schema, example=example)}


def send_operation() -> Operation:
    """`POST marketing_messages` as the door serves it: path, headers, body, every answer."""
    limits = {
        "X-RateLimit-Limit": OpenAPIHeader(
            schema=_INTEGER, description="The project's requests per minute (limited projects)"
        ),
        "X-RateLimit-Remaining": OpenAPIHeader(
            schema=_INTEGER, description="Requests left now (limited projects)"
        ),
    }
    responses = {
        "200": OpenAPIResponse(
            description="Stored durably: it will be sent",
            content=_json(MarketingMessageResponse.__name__, example=ANSWER_EXAMPLE),
            headers={
                "idempotent-replayed": OpenAPIHeader(
                    schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
                    description="`true` when this answers an earlier request with the same"
                    " Idempotency-Key (nothing new was stored); absent otherwise",
                ),
                TRACE_HEADER: trace_header(),
                **limits,
            },
        ),
        **{
            str(status): OpenAPIResponse(
                description=description,
                content=_json(GraphErrorResponse.__name__, example=ERROR_EXAMPLE),
                headers={TRACE_HEADER: trace_header()},
            )
            for status, description in SEND_ERRORS.items()
        },
    }
    responses["429"].headers = {
        TRACE_HEADER: trace_header(),
        "Retry-After": OpenAPIHeader(schema=_INTEGER, description="Seconds to wait"),
        **limits,
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
        security=API_KEY_SECURITY,
        parameters=[
            Parameter(
                name="version",
                param_in=ParamType.PATH,
                schema=Schema(type=OpenAPIType.STRING, pattern=r"^v\d{1,3}\.\d{1,2}$"),
                required=True,
                description=(
                    "A Graph API version such as `v24.0`: any `vN.N` is accepted (else code "
                    "100) and otherwise ignored; the worker calls Meta with "
                    "WAGATE_META_GRAPH_VERSION."
                ),
            ),
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
                    # anyOf, not oneOf: a body with both `to` and `recipient` is valid
                    # (`to` wins) and matches both variants.
                    schema=Schema(
                        any_of=[
                            Reference(_COMPONENTS.format(name=PHONE_SEND)),
                            Reference(_COMPONENTS.format(name=BSUID_SEND)),
                        ]
                    ),
                    examples={
                        name: Example(summary=summary, value=value)
                        for name, (summary, value) in SEND_EXAMPLES.items()
                    },
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
