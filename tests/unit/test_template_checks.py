"""A send is refused at once, with Meta's code, when it does not fit its template's shape."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wagate.adapters.sandbox.templates import LONG_PROMO_TEXT, seed_templates
from wagate.domain.errors import GraphError
from wagate.domain.templates import (
    Template,
    check_components,
    check_template,
    template_from_meta,
    template_json,
)
from wagate.domain.validation import decode_request

_ids = iter(range(1_000, 1_000_000))


def meta(
    name: str,
    components: list[dict[str, Any]],
    *,
    status: str = "APPROVED",
    category: str = "MARKETING",
    **extra: Any,
) -> dict[str, Any]:
    """An entry of Meta's template list."""
    return {
        "name": name,
        "language": "en_US",
        "status": status,
        "category": category,
        "id": str(next(_ids)),
        "components": components,
        **extra,
    }


def body(text: str) -> dict[str, Any]:
    return {"type": "BODY", "text": text}


def header(media_format: str, text: str | None = None) -> dict[str, Any]:
    component: dict[str, Any] = {"type": "HEADER", "format": media_format}
    if text is not None:
        component["text"] = text
    return component


def buttons(*items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "BUTTONS", "buttons": list(items)}


URL_BUTTON = {"type": "URL", "text": "Shop", "url": "https://shop.example/{{1}}"}
STATIC_URL_BUTTON = {"type": "URL", "text": "Shop", "url": "https://shop.example/"}
COPY_CODE = {"type": "COPY_CODE", "example": "SAVE10"}
QUICK_REPLY = {"type": "QUICK_REPLY", "text": "More"}
PHONE = {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+15550100001"}

SEASONAL = template_from_meta(
    meta(
        "seasonal",
        [
            header("TEXT", "{{1}} sale"),
            body("Hi {{1}}, save {{2}} until {{3}}."),
            buttons(URL_BUTTON, COPY_CODE),
        ],
    )
)
NAMED = template_from_meta(
    meta(
        "named",
        [
            header("TEXT", "{{brand}} week"),
            body("Hi {{first_name}}, here is {{discount}} off."),
        ],
    )
)
IMAGE = template_from_meta(meta("image", [header("IMAGE"), body("Hi {{1}}.")]))


def card(text: str = "From {{1}}.") -> dict[str, Any]:
    return {"components": [header("IMAGE"), body(text), buttons(QUICK_REPLY, URL_BUTTON)]}


CAROUSEL = template_from_meta(
    meta("carousel", [body("Our picks."), {"type": "CAROUSEL", "cards": [card(), card()]}])
)


def text(value: str, name: str | None = None) -> dict[str, Any]:
    parameter: dict[str, Any] = {"type": "text", "text": value}
    if name is not None:
        parameter["parameter_name"] = name
    return parameter


def media(kind: str) -> dict[str, Any]:
    return {"type": kind, kind: {"link": f"https://cdn.example/x.{kind}"}}


def part(kind: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "parameters": list(parameters)}


def button(sub_type: str, index: int | str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "button", "sub_type": sub_type, "index": index, "parameters": list(parameters)}


def coupon(code: str = "SAVE10") -> dict[str, Any]:
    return {"type": "coupon_code", "coupon_code": code}


def check(template: Template, components: list[dict[str, Any]]) -> None:
    """Decode a send as the gateway does first, then check it against the template."""
    request = decode_request(
        msgspec.json.encode(
            {
                "messaging_product": "whatsapp",
                "to": "+1 555 010 0001",
                "type": "template",
                "template": {
                    "name": template.name,
                    "language": {"code": template.language},
                    "components": components,
                },
            }
        )
    )
    check_components(template, request.template.components or [])


def refused(template: Template, components: list[dict[str, Any]]) -> GraphError:
    with pytest.raises(GraphError) as error:
        check(template, components)
    return error.value


SEASONAL_SEND = [
    part("header", text("Summer")),
    part("body", text("Ana"), text("25%"), text("Sunday")),
    button("url", 0, text("summer")),
    button("copy_code", "1", coupon()),
]
NAMED_SEND = [
    part("header", text("Acme", "brand")),
    part("body", text("Ana", "first_name"), text("15%", "discount")),
]


def card_send(index: int, *components: dict[str, Any]) -> dict[str, Any]:
    return {"card_index": index, "components": list(components)}


def full_card(index: int) -> dict[str, Any]:
    return card_send(
        index,
        part("header", media("image")),
        part("body", text("$49")),
        button("url", 1, text("sneakers")),
    )


CAROUSEL_SEND = [{"type": "carousel", "cards": [full_card(0), full_card(1)]}]


# ---- sends that fit pass --------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "components"),
    [
        (SEASONAL, SEASONAL_SEND),
        (NAMED, NAMED_SEND),
        (IMAGE, [part("header", media("image")), part("body", text("Ana"))]),
        (CAROUSEL, CAROUSEL_SEND),
        # a quick reply's payload is optional, and cards may come in any order
        (
            CAROUSEL,
            [
                {
                    "type": "carousel",
                    "cards": [
                        full_card(1),
                        {
                            **full_card(0),
                            "components": [
                                *full_card(0)["components"],
                                button("quick_reply", 0, {"type": "payload", "payload": "more"}),
                            ],
                        },
                    ],
                }
            ],
        ),
        # pywa's upper-case spelling
        (IMAGE, [{"type": "HEADER", "parameters": [media("image")]}, part("BODY", text("A"))]),
    ],
)
def test_a_send_that_fits_its_template_passes(
    template: Template, components: list[dict[str, Any]]
) -> None:
    check(template, components)


# ---- existence and status ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "category", "code", "http_status", "details"),
    [
        ("PENDING", "MARKETING", 132001, 404, "template spring (en_US) is PENDING, not APPROVED"),
        ("REJECTED", "MARKETING", 132001, 404, "template spring (en_US) is REJECTED, not APPROVED"),
        ("PAUSED", "MARKETING", 132015, 400, "template spring (en_US) is paused"),
        ("DISABLED", "MARKETING", 132016, 400, "template spring (en_US) is disabled"),
        (
            "APPROVED",
            "UTILITY",
            134100,
            400,
            "template spring is a UTILITY template; this endpoint only sends MARKETING templates",
        ),
    ],
)
def test_a_template_that_cannot_be_sent_is_refused_with_metas_code(
    status: str, category: str, code: int, http_status: int, details: str
) -> None:
    template = template_from_meta(meta("spring", [body("Hi")], status=status, category=category))

    with pytest.raises(GraphError) as error:
        check_template(template, "spring", "en_US")

    assert (error.value.code, error.value.http_status, error.value.details) == (
        code,
        http_status,
        details,
    )
    assert error.value.message.startswith(f"(#{code}) ")


def test_a_missing_template_is_132001_with_http_404() -> None:
    with pytest.raises(GraphError) as error:
        check_template(None, "spring", "pt_BR")

    assert (error.value.code, error.value.http_status) == (132001, 404)
    assert error.value.details == "template name (spring) does not exist in pt_BR"


def test_an_approved_marketing_template_is_returned() -> None:
    assert check_template(SEASONAL, "seasonal", "en_US") is SEASONAL


# ---- every component check: its code, HTTP status and detail ---------------------------

SEASONAL_BODY = part("body", text("Ana"), text("25%"), text("Sunday"))
SEASONAL_BUTTONS = SEASONAL_SEND[2:]


@pytest.mark.parametrize(
    ("template", "components", "code", "details"),
    [
        # parameter counts: 132000
        (
            SEASONAL,
            [SEASONAL_SEND[0], part("body", text("Ana"), text("25%")), *SEASONAL_BUTTONS],
            132000,
            "body expects 3 parameters, got 2",
        ),
        (SEASONAL, SEASONAL_SEND[1:], 132000, "header expects 1 parameter, got 0"),
        (
            SEASONAL,
            [part("header", text("Summer"), text("Winter")), *SEASONAL_SEND[1:]],
            132000,
            "header expects 1 parameter, got 2",
        ),
        (
            IMAGE,
            [part("header", media("image"), media("image")), part("body", text("A"))],
            132000,
            "header expects 1 parameter, got 2",
        ),
        (
            template_from_meta(meta("plain", [body("Hi")])),
            [part("header", text("Summer"))],
            132000,
            "header expects 0 parameters, got 1",
        ),
        (
            template_from_meta(meta("plain", [body("Hi")])),
            [part("body", text("Ana"))],
            132000,
            "body expects 0 parameters, got 1",
        ),
        (
            NAMED,
            [NAMED_SEND[0], part("body", text("Ana", "first_name"), text("15%", "dicount"))],
            132000,
            "body has no parameter named 'dicount' (it has discount, first_name)",
        ),
        (
            NAMED,
            [NAMED_SEND[0], part("body", text("Ana", "first_name"), text("Bo", "first_name"))],
            132000,
            "body parameter 'first_name' is given twice",
        ),
        # named vs positional, and parameter types: 132012
        (
            NAMED,
            [NAMED_SEND[0], part("body", text("Ana"), text("15%"))],
            132012,
            "body takes named parameters (parameter_name), got a positional one",
        ),
        (
            NAMED,
            [part("header", text("Acme")), NAMED_SEND[1]],
            132012,
            "header takes named parameters (parameter_name), got a positional one",
        ),
        (
            SEASONAL,
            [SEASONAL_SEND[0], part("body", text("Ana", "a"), text("B", "b"), text("C", "c"))],
            132012,
            "body takes positional parameters, got parameter_name 'a'",
        ),
        (
            IMAGE,
            [part("header", media("video")), part("body", text("A"))],
            132012,
            "header is IMAGE, got a video parameter",
        ),
        (
            IMAGE,
            [part("header", text("Summer")), part("body", text("A"))],
            132012,
            "header is IMAGE, got a text parameter",
        ),
        (
            IMAGE,
            [part("body", text("A"))],
            132012,
            "header is IMAGE, got no image parameter",
        ),
        (
            SEASONAL,
            [part("header", media("image")), *SEASONAL_SEND[1:]],
            132012,
            "header is TEXT, got an image parameter",
        ),
        # buttons: 131009 for addressing, 132000 for extra parameters, 131008 for missing ones
        (
            SEASONAL,
            [*SEASONAL_SEND, button("quick_reply", 2)],
            131009,
            "template has no button at index 2 (it has 2)",
        ),
        (
            SEASONAL,
            [*SEASONAL_SEND[:2], button("quick_reply", 0), SEASONAL_SEND[3]],
            131009,
            "button 0 is url, not quick_reply",
        ),
        (
            SEASONAL,
            [*SEASONAL_SEND, button("URL", 0, text("again"))],
            131009,
            "button 0 is given twice",
        ),
        (
            SEASONAL,
            [*SEASONAL_SEND[:2], button("url", 0, text("a"), text("b")), SEASONAL_SEND[3]],
            132000,
            "button 0 (url) expects 1 parameter, got 2",
        ),
        (
            template_from_meta(meta("static", [body("Hi"), buttons(STATIC_URL_BUTTON)])),
            [button("url", 0, text("summer"))],
            132000,
            "button 0 (url) expects 0 parameters, got 1",
        ),
        (SEASONAL, SEASONAL_SEND[:3], 131008, "button 1 (copy_code) needs a parameter"),
        (
            SEASONAL,
            [*SEASONAL_SEND[:2], SEASONAL_SEND[3]],
            131008,
            "button 0 (url) needs a parameter",
        ),
        (
            SEASONAL,
            [*SEASONAL_SEND[:3], button("copy_code", 1)],
            131008,
            "button 1 (copy_code) needs a parameter",
        ),
        (
            template_from_meta(meta("call", [body("Hi"), buttons(PHONE)])),
            [button("url", 0, text("x"))],
            131009,
            "button 0 is phone_number, not url",
        ),
        # filled-in lengths: 132005
        (
            SEASONAL,
            [part("header", text("x" * 56)), *SEASONAL_SEND[1:]],
            132005,
            "header text with its parameters is 61 characters, more than 60",
        ),
        (
            template_from_meta(meta("long", [body("a" * 1000 + "{{1}}")])),
            [part("body", text("b" * 25))],
            132005,
            "body text with its parameters is 1,025 characters, more than 1,024",
        ),
        (
            template_from_meta(meta("twice", [body("a" * 1000 + "{{1}}{{1}}")])),
            [
                part(
                    "body",
                    {
                        "type": "currency",
                        "currency": {
                            "fallback_value": "$" + "9" * 12,
                            "code": "USD",
                            "amount_1000": 1,
                        },
                    },
                )
            ],
            132005,
            "body text with its parameters is 1,026 characters, more than 1,024",
        ),
        # carousels: 132000 for the card count, 131009 for card_index, each card checked
        (
            CAROUSEL,
            [{"type": "carousel", "cards": [full_card(0)]}],
            132000,
            "carousel expects 2 cards, got 1",
        ),
        (CAROUSEL, [], 132000, "carousel expects 2 cards, got 0"),
        (
            SEASONAL,
            [*SEASONAL_SEND, *CAROUSEL_SEND],
            132000,
            "carousel expects 0 cards, got 2",
        ),
        (
            CAROUSEL,
            [{"type": "carousel", "cards": [full_card(0), full_card(3)]}],
            131009,
            "carousel has no card at card_index 3 (it has 2)",
        ),
        (
            CAROUSEL,
            [{"type": "carousel", "cards": [full_card(0), full_card(0)]}],
            131009,
            "card_index 0 is given twice",
        ),
        (
            CAROUSEL,
            [
                {
                    "type": "carousel",
                    "cards": [
                        full_card(0),
                        card_send(
                            1,
                            part("header", media("video")),
                            part("body", text("$49")),
                            button("url", 1, text("x")),
                        ),
                    ],
                }
            ],
            132012,
            "card 1: header is IMAGE, got a video parameter",
        ),
        (
            CAROUSEL,
            [
                {
                    "type": "carousel",
                    "cards": [
                        card_send(
                            0,
                            part("header", media("image")),
                            part("body"),
                            button("url", 1, text("x")),
                        ),
                        full_card(1),
                    ],
                }
            ],
            132000,
            "card 0: body expects 1 parameter, got 0",
        ),
        (
            CAROUSEL,
            [
                {
                    "type": "carousel",
                    "cards": [
                        full_card(0),
                        card_send(1, part("header", media("image")), part("body", text("$1"))),
                    ],
                }
            ],
            131008,
            "card 1: button 1 (url) needs a parameter",
        ),
        # a limited-time offer
        (
            SEASONAL,
            [
                *SEASONAL_SEND,
                part(
                    "limited_time_offer",
                    {"type": "limited_time_offer", "limited_time_offer": {"expiration_time_ms": 1}},
                ),
            ],
            132000,
            "limited_time_offer expects 0 parameters, got 1",
        ),
        (
            template_from_meta(
                meta(
                    "offer",
                    [
                        {
                            "type": "LIMITED_TIME_OFFER",
                            "limited_time_offer": {"text": "Ends soon", "has_expiration": True},
                        },
                        body("Hi"),
                    ],
                )
            ),
            [],
            131008,
            "limited_time_offer needs its expiration_time_ms parameter",
        ),
    ],
)
def test_a_send_that_does_not_fit_is_refused_with_metas_code_and_what_is_wrong(
    template: Template, components: list[dict[str, Any]], code: int, details: str
) -> None:
    error = refused(template, components)

    assert (error.code, error.http_status, error.details) == (code, 400, details)


def test_a_header_parameter_over_60_characters_is_refused_before_the_template_is_read() -> None:
    # domain.validation owns the 60-character rule for one parameter (131009); the
    # template check adds only the filled-in header, text and parameter together.
    with pytest.raises(GraphError) as error:
        check(SEASONAL, [part("header", text("x" * 61)), *SEASONAL_SEND[1:]])
    assert error.value.code == 131009

    check(SEASONAL, [part("header", text("x" * 55)), *SEASONAL_SEND[1:]])  # 60 with " sale"


def test_a_body_may_fill_exactly_1024_characters() -> None:
    long = template_from_meta(meta("long", [body("a" * 1000 + "{{1}}")]))

    check(long, [part("body", text("b" * 24))])


def test_the_seeded_long_promo_fills_1024_with_a_24_character_parameter() -> None:
    [long_promo] = [t.template for t in seed_templates() if t.name == "long_promo"]
    assert long_promo.shape.body is not None
    assert long_promo.shape.body.fixed_length == 1000
    assert LONG_PROMO_TEXT.count("{{1}}") == 1

    check(long_promo, [part("body", text("x" * 24))])
    assert refused(long_promo, [part("body", text("x" * 25))]).code == 132005


# ---- reading Meta's list -------------------------------------------------------------


def test_every_seed_reads_back_as_metas_list_entry() -> None:
    for record in seed_templates():
        entry = template_json(record.template)
        assert template_from_meta(entry) == record.template
        assert msgspec.json.decode(msgspec.json.encode(entry)) == entry


def test_the_parameter_format_is_named_when_the_body_uses_names() -> None:
    assert NAMED.parameter_format == "NAMED"
    assert SEASONAL.parameter_format == "POSITIONAL"
    assert template_json(NAMED)["parameter_format"] == "NAMED"


def test_the_shape_is_derived_once_from_the_components() -> None:
    shape = SEASONAL.shape
    assert shape.header_format == "TEXT"
    assert shape.header_parameters == 1
    assert shape.body is not None
    assert shape.body.keys == ("1", "2", "3")
    assert [(b.index, b.sub_type, b.needs_parameter) for b in shape.buttons] == [
        (0, "url", True),
        (1, "copy_code", True),
    ]
    assert shape.required_buttons == (0, 1)
    assert [c.header_format for c in CAROUSEL.shape.cards] == ["IMAGE", "IMAGE"]
    assert IMAGE.shape.header_parameters == 1


def test_a_templates_components_are_its_own_copy() -> None:
    components = [body("Hi {{1}}")]
    template = template_from_meta(meta("copy", components))
    components[0]["text"] = "changed"

    assert template.components[0]["text"] == "Hi {{1}}"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ([], "a template must be a JSON object, got list"),
        ({**meta("x", [body("Hi")]), "name": ""}, "`name` must be a non-empty string"),
        ({**meta("x", [body("Hi")]), "id": None}, "`id` must be a non-empty string"),
        ({**meta("x", [body("Hi")]), "language": 7}, "`language` must be a non-empty string"),
        ({**meta("x", [body("Hi")]), "status": None}, "`status` must be a non-empty string"),
        ({**meta("x", []), "components": "BODY"}, "`components` must be a list of objects"),
        (meta("x", [{"text": "Hi"}]), "every component needs a string `type`"),
        (meta("x", [body("Hi"), body("Ho")]), "more than one BODY component"),
        (meta("x", [{"type": "BODY"}]), "a BODY of text needs a string `text`"),
        (meta("x", [header("TEXT")]), "a HEADER of text needs a string `text`"),
        (meta("x", [{"type": "BUTTONS"}]), "BUTTONS needs a list of `buttons`"),
        (meta("x", [buttons({"text": "Go"})]), "button 0 needs a string `type`"),
        (meta("x", [{"type": "CAROUSEL", "cards": []}]), "CAROUSEL needs a non-empty list"),
        (meta("x", [{"type": "CAROUSEL", "cards": [{}]}]), "card 0 needs a list of `components`"),
        (
            meta(
                "x",
                [
                    {
                        "type": "CAROUSEL",
                        "cards": [{"components": [{"type": "CAROUSEL", "cards": [card()]}]}],
                    }
                ],
            ),
            "a carousel card cannot hold a carousel",
        ),
        (
            meta("x", [body("Hi {{name}}, {{1}}")]),
            "mixes named ({{name}}) and positional ({{1}}) placeholders",
        ),
        (
            meta("x", [body("Hi {{name}}")], parameter_format="POSITIONAL"),
            "parameter_format is POSITIONAL but its placeholders are not",
        ),
        (
            meta("x", [body("Hi")], parameter_format="FREE"),
            "parameter_format must be POSITIONAL or NAMED, got 'FREE'",
        ),
    ],
)
def test_a_malformed_entry_is_a_value_error_that_says_what_is_wrong(
    entry: Any, problem: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        template_from_meta(entry)


def test_unknown_component_and_button_types_meta_adds_later_are_kept_not_refused() -> None:
    template = template_from_meta(
        meta(
            "future",
            [
                body("Hi"),
                {"type": "FOOTER", "text": "Bye"},
                {"type": "CALL_PERMISSION_REQUEST"},
                buttons({"type": "VOICE_CALL", "text": "Call"}),
            ],
        )
    )

    check(template, [])
    assert refused(template, [button("url", 0, text("x"))]).details == (
        "button 0 is voice_call, not url"
    )


# ---- properties: a send built from a template's own parts always fits -----------------

_words = st.text(alphabet="abcdefghij XYZ", min_size=0, max_size=20)
_names = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=0, max_size=4, unique=True
)


@st.composite
def templates_and_sends(draw: st.DrawFn) -> tuple[Template, list[dict[str, Any]]]:
    """A random template in Meta's format, and a send that supplies exactly what it asks."""
    named = draw(st.booleans())
    keys = draw(_names) if named else [str(i) for i in range(1, draw(st.integers(0, 4)) + 1)]
    values = [draw(_words) for _ in keys]
    components: list[dict[str, Any]] = []
    send: list[dict[str, Any]] = []
    header_kind = draw(st.sampled_from(["none", "text", "IMAGE", "VIDEO", "DOCUMENT"]))
    if header_kind == "text":
        # Longer than any generated name, so it never collides with one of the body's.
        key = "header_brand" if named else "1"
        components.append(header("TEXT", f"{{{{{key}}}}} sale"))
        send.append(part("header", text("Acme", key if named else None)))
    elif header_kind != "none":
        components.append(header(header_kind))
        send.append(part("header", media(header_kind.lower())))
    separator = draw(st.sampled_from([" ", ", ", " and "]))
    components.append(body("Hi " + separator.join(f"{{{{{k}}}}}" for k in keys) + "."))
    if keys:
        send.append(
            part(
                "body", *(text(v, k if named else None) for k, v in zip(keys, values, strict=True))
            )
        )
    kinds = draw(st.lists(st.sampled_from(["url", "static", "copy", "reply", "phone"]), max_size=4))
    template_buttons = []
    for index, kind in enumerate(kinds):
        if kind == "url":
            template_buttons.append(URL_BUTTON)
            send.append(button("url", index, text("x")))
        elif kind == "static":
            template_buttons.append(STATIC_URL_BUTTON)
        elif kind == "copy":
            template_buttons.append(COPY_CODE)
            send.append(button("copy_code", index, coupon()))
        elif kind == "reply":
            template_buttons.append(QUICK_REPLY)
            if draw(st.booleans()):
                send.append(button("quick_reply", index, {"type": "payload", "payload": "p"}))
        else:
            template_buttons.append(PHONE)
    if template_buttons:
        components.append(buttons(*template_buttons))
    cards = 0 if named else draw(st.integers(0, 3))  # the cards' bodies are positional
    if cards:
        components.append({"type": "CAROUSEL", "cards": [card() for _ in range(cards)]})
        send.append({"type": "carousel", "cards": [full_card(i) for i in range(cards)]})
    return template_from_meta(meta("generated", components)), send


@settings(max_examples=300, deadline=None)
@given(case=templates_and_sends())
def test_a_send_built_from_the_templates_own_parts_always_passes(
    case: tuple[Template, list[dict[str, Any]]],
) -> None:
    template, send = case
    check(template, send)


@settings(max_examples=200, deadline=None)
@given(case=templates_and_sends(), data=st.data())
def test_leaving_out_any_one_body_parameter_is_a_count_mismatch(
    case: tuple[Template, list[dict[str, Any]]], data: st.DataObject
) -> None:
    template, send = case
    bodies = [c for c in send if c["type"] == "body"]
    if not bodies:
        return
    parameters = bodies[0]["parameters"]
    dropped = data.draw(st.integers(0, len(parameters) - 1))
    shorter = [
        {**c, "parameters": parameters[:dropped] + parameters[dropped + 1 :]}
        if c is bodies[0]
        else c
        for c in send
    ]

    error = refused(template, shorter)

    assert error.code == 132000
    assert (
        error.details
        == f"body expects {len(parameters)} "
        + ("parameter" if len(parameters) == 1 else "parameters")
        + f", got {len(parameters) - 1}"
    )


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(_words, st.sampled_from(["{{1}}", "{{2}}", "{{3}}"])), max_size=12),
    values=st.lists(_words, min_size=3, max_size=3),
)
def test_the_measured_length_is_the_length_of_the_filled_in_text(
    parts: list[str], values: list[str]
) -> None:
    source = "".join(parts)
    template = template_from_meta(meta("measured", [body(source)]))
    assert template.shape.body is not None
    keys = template.shape.body.keys
    filled = {key: values[int(key) - 1] for key in keys}

    expected = re.sub(r"\{\{(\d)\}\}", lambda m: filled[m.group(1)], source)

    assert template.shape.body.length_with(filled) == len(expected)
