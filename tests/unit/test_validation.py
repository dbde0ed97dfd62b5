"""Decoding a send body: Graph's own words for enum values, and a bound on nesting."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wagate.domain.errors import GraphError
from wagate.domain.validation import MAX_JSON_DEPTH, decode_request

SEED: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "recipient": "US.13491208655302741918",
    "type": "template",
    "template": {"name": "promo_template", "language": {"code": "en_US"}},
}


def refusal(body: dict[str, Any] | bytes) -> GraphError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(GraphError) as caught:
        decode_request(raw)
    return caught.value


# Graph's own words for a value outside an enum: (changes to a valid body, message).
ENUM_VIOLATIONS: list[tuple[dict[str, Any], str]] = [
    (
        {"messaging_product": "sms"},
        '(#100) Param messaging_product must be one of {WHATSAPP} - got "sms".',
    ),
    (
        {"recipient_type": "group"},
        '(#100) Param recipient_type must be one of {INDIVIDUAL} - got "group".',
    ),
    ({"type": "text"}, '(#100) Param type must be one of {TEMPLATE} - got "text".'),
    (
        {"product_policy": "BOGUS"},
        '(#100) Param product_policy must be one of {CLOUD_API_FALLBACK, STRICT} - got "BOGUS".',
    ),
    (
        {"template": {"name": "p", "language": {"code": "en", "policy": "fallback"}}},
        '(#100) Param policy must be one of {DETERMINISTIC} - got "fallback".',
    ),
    (
        {
            "template": {
                "name": "p",
                "language": {"code": "en"},
                "components": [{"type": "button", "sub_type": "call", "index": 0}],
            }
        },
        "(#100) Param sub_type must be one of "
        '{CATALOG, COPY_CODE, FLOW, MPM, QUICK_REPLY, URL} - got "call".',
    ),
]


@pytest.mark.parametrize(("changes", "message"), ENUM_VIOLATIONS)
def test_a_value_outside_an_enum_is_code_100_in_graphs_words(
    changes: dict[str, Any], message: str
) -> None:
    error = refusal({**SEED, **changes})
    assert (error.code, error.http_status, error.message) == (100, 400, message)
    assert "must be one of" in error.details


def test_a_wrong_type_is_still_a_template_message_hint() -> None:
    assert "Message must be a template message" in refusal({**SEED, "type": "text"}).details


def test_a_value_of_the_wrong_json_type_stays_131009() -> None:
    assert refusal({**SEED, "messaging_product": 5}).code == 131009


def flow_body(data: str, *, card: bool = False) -> bytes:
    """A send body with one flow button whose `flow_action_data` is the JSON `data`."""
    button = (
        '{"type":"button","sub_type":"flow","index":0,"parameters":'
        '[{"type":"action","action":{"flow_token":"t","flow_action_data":' + data + "}}]}"
    )
    components = button
    if card:
        components = (
            '{"type":"carousel","cards":[{"card_index":0,"components":[{"type":"header",'
            '"parameters":[{"type":"image","image":{"link":"https://e.com/a.png"}}]},'
            + button
            + "]}]}"
        )
    return (
        '{"messaging_product":"whatsapp","recipient":"US.1","type":"template",'
        '"template":{"name":"p","language":{"code":"en"},"components":[' + components + "]}}"
    ).encode()


def nested(levels: int) -> str:
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("card", [False, True])
def test_a_body_may_nest_exactly_max_json_depth_levels(card: bool) -> None:
    levels = 1
    while depth_of(json.loads(flow_body(nested(levels + 1), card=card))) <= MAX_JSON_DEPTH:
        levels += 1
    deepest = flow_body(nested(levels), card=card)
    assert depth_of(json.loads(deepest)) == MAX_JSON_DEPTH
    decode_request(deepest)
    error = refusal(flow_body(nested(levels + 1), card=card))
    assert error.code == 131009
    assert f"JSON nested deeper than {MAX_JSON_DEPTH} levels" in error.details


@pytest.mark.parametrize("levels", [960, 5_000, 100_000])
def test_absurd_nesting_is_131009_not_a_crash(levels: int) -> None:
    error = refusal(flow_body(nested(levels)))
    assert error.code == 131009
    assert "nested deeper" in error.details


def test_deep_arrays_count_as_levels_too() -> None:
    error = refusal(flow_body('{"a":' + "[" * 40 + "]" * 40 + "}"))
    assert error.code == 131009
