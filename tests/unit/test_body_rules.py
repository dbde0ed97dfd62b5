"""Each rule of a send body, checked without a server: the field it breaks, Meta's code.

The gateway answers every one of these before it touches the store, so each is decided
by `decode_request` and `resolve_recipient` alone; a representative few per code also
run over real HTTP on both backends (tests/integration/test_send_endpoint.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from wagate.domain.errors import GraphError
from wagate.domain.recipients import resolve_recipient
from wagate.domain.validation import decode_request

SEED: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "recipient_type": "individual",
    "recipient": "US.13491208655302741918",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}
IMAGE = {"type": "image", "image": {"link": "https://example.com/a.jpg"}}


def body(**changes: Any) -> dict[str, Any]:
    """The seed body with fields changed (None removes a field)."""
    result: dict[str, Any] = json.loads(json.dumps(SEED))
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def template(*components: dict[str, Any], name: str = "seasonal_promo") -> dict[str, Any]:
    """A template object with components."""
    return {"name": name, "language": {"code": "en_US"}, "components": list(components)}


def accepted_or_refused(raw: bytes) -> None:
    """What the gateway decides about a body before it stores anything."""
    request = decode_request(raw)
    resolve_recipient(request.to, request.recipient)


def refusal(raw: bytes) -> GraphError:
    """The GraphError a body is refused with."""
    with pytest.raises(GraphError) as caught:
        accepted_or_refused(raw)
    return caught.value


# (what is wrong, the body, Meta's code)
BAD_BODIES: list[tuple[str, dict[str, Any], int]] = [
    ("no recipient at all", body(recipient=None), 131008),
    ("messaging_product missing", body(messaging_product=None), 131008),
    ("messaging_product wrong", body(messaging_product="sms"), 100),
    ("type missing", body(type=None), 131008),
    ("type not template", body(type="text"), 100),
    ("template missing", body(template=None), 131008),
    ("recipient_type wrong", body(recipient_type="group"), 100),
    ("unknown top-level field", body(colour="blue"), 100),
    ("bsuid lower-case country", body(recipient="us.1349120865"), 131009),
    ("bsuid without dot", body(recipient="US13491208655302741918"), 131009),
    ("bsuid too long", body(recipient="US." + "1" * 129), 131009),
    ("to not a phone", body(recipient=None, to="call me"), 131009),
    ("to too short", body(recipient=None, to="+44 12"), 131009),
    ("to empty", body(recipient=None, to=""), 131009),
    ("to not a string", body(recipient=None, to=447700900123), 131009),
    ("callback data over 512", body(biz_opaque_callback_data="x" * 513), 131009),
    ("product_policy unknown", body(product_policy="LOOSE"), 100),
    ("to over 64 characters", body(recipient=None, to="+44 7700 900123" + " " * 60), 131009),
    ("activity sharing not bool", body(message_activity_sharing="yes"), 131009),
    ("context without id", body(context={}), 131008),
    (
        "template name upper case",
        body(template={"name": "Promo", "language": {"code": "en"}}),
        131009,
    ),
    ("template name missing", body(template={"language": {"code": "en_US"}}), 131008),
    ("language missing", body(template={"name": "promo_template"}), 131008),
    ("language code odd", body(template={"name": "p", "language": {"code": "english"}}), 131009),
    (
        "language policy other",
        body(template={"name": "p", "language": {"code": "en", "policy": "fallback"}}),
        100,
    ),
    ("unknown component type", body(template=template({"type": "footer"})), 131009),
    (
        "unknown template field",
        body(template={"name": "p", "language": {"code": "en"}, "extra": 1}),
        100,
    ),
    (
        "header text over 60",
        body(
            template=template(
                {"type": "header", "parameters": [{"type": "text", "text": "x" * 61}]}
            )
        ),
        131009,
    ),
    (
        "body takes no image",
        body(template=template({"type": "body", "parameters": [IMAGE]})),
        131009,
    ),
    (
        "header takes no currency",
        body(
            template=template(
                {
                    "type": "header",
                    "parameters": [
                        {
                            "type": "currency",
                            "currency": {"fallback_value": "1", "code": "USD", "amount_1000": 1},
                        }
                    ],
                }
            )
        ),
        131009,
    ),
    (
        "media with id and link",
        body(
            template=template(
                {
                    "type": "header",
                    "parameters": [{"type": "image", "image": {"id": "1", "link": "l"}}],
                }
            )
        ),
        131009,
    ),
    (
        "media with neither",
        body(template=template({"type": "header", "parameters": [{"type": "image", "image": {}}]})),
        131009,
    ),
    (
        "currency code not ISO",
        body(
            template=template(
                {
                    "type": "body",
                    "parameters": [
                        {
                            "type": "currency",
                            "currency": {"fallback_value": "1", "code": "usd", "amount_1000": 1},
                        }
                    ],
                }
            )
        ),
        131009,
    ),
    (
        "button index 10",
        body(template=template({"type": "button", "sub_type": "quick_reply", "index": 10})),
        131009,
    ),
    (
        "button index not a number",
        body(template=template({"type": "button", "sub_type": "quick_reply", "index": "first"})),
        131009,
    ),
    (
        "button without sub_type",
        body(template=template({"type": "button", "index": 0})),
        131008,
    ),
    (
        "url button takes text, not payload",
        body(
            template=template(
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": 0,
                    "parameters": [{"type": "payload", "payload": "p"}],
                }
            )
        ),
        131009,
    ),
    (
        "coupon code too long",
        body(
            template=template(
                {
                    "type": "button",
                    "sub_type": "copy_code",
                    "index": 0,
                    "parameters": [{"type": "coupon_code", "coupon_code": "A" * 16}],
                }
            )
        ),
        131009,
    ),
    (
        "coupon code not alphanumeric",
        body(
            template=template(
                {
                    "type": "button",
                    "sub_type": "copy_code",
                    "index": 0,
                    "parameters": [{"type": "coupon_code", "coupon_code": "SAVE-10"}],
                }
            )
        ),
        131009,
    ),
    (
        "named and positional mixed",
        body(
            template=template(
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "a", "parameter_name": "first_name"},
                        {"type": "text", "text": "b"},
                    ],
                }
            )
        ),
        131009,
    ),
    (
        "two bodies",
        body(template=template({"type": "body"}, {"type": "body"})),
        100,
    ),
    (
        "carousel card header takes no text",
        body(
            template=template(
                {
                    "type": "carousel",
                    "cards": [
                        {
                            "card_index": 0,
                            "components": [
                                {"type": "header", "parameters": [{"type": "text", "text": "x"}]}
                            ],
                        }
                    ],
                }
            )
        ),
        131009,
    ),
    ("carousel without cards", body(template=template({"type": "carousel", "cards": []})), 131009),
    (
        "limited time offer without expiry",
        body(
            template=template(
                {
                    "type": "limited_time_offer",
                    "parameters": [{"type": "limited_time_offer", "limited_time_offer": {}}],
                }
            )
        ),
        131008,
    ),
    (
        "parameter of unknown type",
        body(template=template({"type": "body", "parameters": [{"type": "emoji"}]})),
        131009,
    ),
]


def test_the_seed_body_is_accepted() -> None:
    accepted_or_refused(json.dumps(SEED).encode())


@pytest.mark.parametrize(
    ("payload", "code"), [(b, c) for _, b, c in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES]
)
def test_each_field_rule_is_refused_with_metas_code(payload: dict[str, Any], code: int) -> None:
    error = refusal(json.dumps(payload).encode())
    assert (error.code, error.http_status) == (code, 400), error.details
    assert error.details


MALFORMED_JSON = [b"{", b"", b"not json", b'{"a":1,}', '{"é":1'.encode("latin-1")]
NOT_AN_OBJECT = [b"[]", b"1", b'"text"', b"null"]


@pytest.mark.parametrize("raw", MALFORMED_JSON + NOT_AN_OBJECT)
def test_malformed_json_or_a_body_that_is_not_an_object_is_code_100(raw: bytes) -> None:
    error = refusal(raw)
    assert (error.code, error.http_status) == (100, 400), error.details
