"""A business's message templates, and the rules a send of one must satisfy, in Meta's codes.

A `Template` is built once from an entry of Meta's template list
(`GET /{waba_id}/message_templates`, creation format: `{"type": "BODY",
"text": ...}`); what a send must supply (header format, placeholders, buttons,
carousel cards) is derived then, so `check_components` only compares on the hot
send path. The gateway runs these checks at accept from its template cache and
the sandbox runs them at send, so the two refuse the same sends with the same code.

`decode_request` (`domain.validation`) runs first and has already refused what
no template allows: a parameter type a component never takes, a text header
parameter over 60 characters, media without exactly one of `id`/`link`, a
button index outside 0-9, mixed named and positional body parameters (131009).

Every check, its code, HTTP status and an example `details`::

    check                               code    HTTP  example detail
    ----------------------------------  ------  ----  ----------------------------------------------
    no template of that name and        132001  404   template name (spring) does not exist in en_US
    language
    template PENDING, REJECTED, ...     132001  404   template spring (en_US) is PENDING, not
                                                      APPROVED
    template PAUSED                     132015  400   template spring (en_US) is paused
    template DISABLED                   132016  400   template spring (en_US) is disabled
    template not MARKETING              134100  400   template order_update is a UTILITY template;
                                                      this endpoint only sends MARKETING templates
    header parameter of the wrong type  132012  400   header is IMAGE, got a video parameter
    media header left out               132012  400   header is IMAGE, got no image parameter
    named vs positional parameters      132012  400   body takes named parameters (parameter_name),
                                                      got a positional one
    parameter count, header or body     132000  400   body expects 3 parameters, got 2
    a parameter name the template       132000  400   body has no parameter named 'dicount' (it has
    lacks                                             discount, first_name)
    a parameter name given twice        132000  400   body parameter 'discount' is given twice
    header text + parameters over 60    132005  400   header text with its parameters is 61
                                                      characters, more than 60
    body text + parameters over 1,024   132005  400   body text with its parameters is 1,025
                                                      characters, more than 1,024
    button index the template lacks     131009  400   template has no button at index 2 (it has 2)
    button sub_type not the template's  131009  400   button 0 is url, not quick_reply
    the same button index twice         131009  400   button 0 is given twice
    button given more parameters        132000  400   button 0 (url) expects 1 parameter, got 2
    dynamic URL, copy-code or MPM       131008  400   button 1 (copy_code) needs a parameter
    button without its parameter
    carousel card count                 132000  400   carousel expects 2 cards, got 1
    card_index the carousel lacks       131009  400   carousel has no card at card_index 3 (it has
                                                      2)
    the same card_index twice           131009  400   card_index 0 is given twice
    each card: the checks above         same          card 1: header is IMAGE, got a video parameter
    limited_time_offer the template     132000  400   limited_time_offer expects 0 parameters, got 1
    lacks
    expiring offer without its expiry   131008  400   limited_time_offer needs its
                                                      expiration_time_ms parameter

Why these codes: 132000/132012/132005/132001/132015/132016/134100 are Meta's
own for these cases (API-FACTS section 2). A media header left out is 132012,
not 132000, because Meta answers it so (`header: Format mismatch, expected
IMAGE, received UNKNOWN`). Button addressing keeps the sandbox's earlier codes
(131009 for a parameter value Meta cannot place, 131008 for a required one
missing), for which API-FACTS names no template-specific code.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from wagate.domain.errors import (
    INVALID_PARAMETER_VALUE,
    MARKETING_ONLY,
    MISSING_PARAMETER,
    PARAMETER_COUNT_MISMATCH,
    PARAMETER_FORMAT_MISMATCH,
    TEMPLATE_DISABLED,
    TEMPLATE_NOT_FOUND,
    TEMPLATE_PAUSED,
    TRANSLATION_TOO_LONG,
    GraphError,
)
from wagate.domain.requests import (
    BodyComponent,
    ButtonComponent,
    CardComponent,
    CarouselComponent,
    Component,
    CurrencyParameter,
    DateTimeParameter,
    DocumentParameter,
    HeaderComponent,
    ImageParameter,
    LimitedTimeOfferComponent,
    LocationParameter,
    Parameter,
    ProductParameter,
    TextParameter,
    VideoParameter,
)
from wagate.domain.validation import HEADER_TEXT_MAX

ParameterFormat = Literal["POSITIONAL", "NAMED"]
PARAMETER_FORMATS: Final = ("POSITIONAL", "NAMED")
HEADER_FORMATS: Final = ("TEXT", "IMAGE", "VIDEO", "DOCUMENT", "LOCATION", "PRODUCT")
# Meta's limit on a body once its parameters are filled in.
BODY_TEXT_MAX: Final = 1024

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
# The send-time parameter a media (or location, product) header takes.
_HEADER_PARAMETERS: Final[dict[str, type[Parameter]]] = {
    "IMAGE": ImageParameter,
    "VIDEO": VideoParameter,
    "DOCUMENT": DocumentParameter,
    "LOCATION": LocationParameter,
    "PRODUCT": ProductParameter,
}
# Which send-time `sub_type` addresses each creation-time button type; any other
# type (PHONE_NUMBER, OTP, VOICE_CALL ...) is addressed by no send-time component.
_BUTTON_SUB_TYPES: Final = {
    "URL": "url",
    "COPY_CODE": "copy_code",
    "QUICK_REPLY": "quick_reply",
    "CATALOG": "catalog",
    "MPM": "mpm",
    "FLOW": "flow",
}
# Buttons whose send-time component may carry one parameter (a quick reply's payload,
# a catalog's thumbnail, a flow's token and data are optional); a dynamic URL too.
_BUTTONS_WITH_PARAMETER: Final = frozenset({"COPY_CODE", "QUICK_REPLY", "CATALOG", "MPM", "FLOW"})
# Buttons that cannot be sent without theirs: the coupon, the multi-product sections.
_BUTTONS_NEEDING_PARAMETER: Final = frozenset({"COPY_CODE", "MPM"})


# ---- the derived shape --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placeholders:
    """A text with `{{1}}` or `{{name}}` placeholders, measured once for filling in."""

    text: str
    # Distinct keys in send order: "1", "2" ... by number, or names in order of appearance.
    keys: tuple[str, ...] = ()
    # Characters outside the placeholders, and how often each key appears.
    fixed_length: int = 0
    repeats: tuple[int, ...] = ()

    def length_with(self, values: Mapping[str, str]) -> int:
        """The text's length with each placeholder replaced by its value."""
        length = self.fixed_length
        for key, repeat in zip(self.keys, self.repeats, strict=True):
            length += repeat * len(values.get(key, ""))
        return length


@dataclass(frozen=True, slots=True)
class Button:
    """One button of a template, as a send addresses it."""

    index: int
    type: str  # the creation type: URL, COPY_CODE, QUICK_REPLY, PHONE_NUMBER ...
    sub_type: str  # the send-time sub_type that addresses it: url, copy_code ...
    max_parameters: int  # 0 or 1
    needs_parameter: bool


@dataclass(frozen=True, slots=True)
class Shape:
    """What a send of a template, or of one carousel card, must supply."""

    header_format: str | None = None  # TEXT, IMAGE, ...; None: no header
    header_text: Placeholders | None = None  # a TEXT header's text
    body: Placeholders | None = None
    buttons: tuple[Button, ...] = ()  # by index
    required_buttons: tuple[int, ...] = ()  # indexes of buttons that need a parameter
    cards: tuple[Shape, ...] = ()  # a carousel's cards; empty: no carousel
    limited_time_offer: bool = False
    offer_expires: bool = False  # the send must give the offer's expiry

    @property
    def header_parameters(self) -> int:
        """How many parameters the header takes: its placeholders, or one media."""
        if self.header_format is None:
            return 0
        if self.header_text is not None:
            return len(self.header_text.keys)
        return 1


@dataclass(frozen=True, slots=True)
class Template:
    """One approved-or-not template of a business, in Meta's list format, with its shape."""

    id: str
    name: str
    language: str
    category: str
    status: str
    components: tuple[dict[str, Any], ...] = field(hash=False)
    parameter_format: ParameterFormat
    shape: Shape


# ---- building a template --------------------------------------------------------------


def template_from_meta(entry: Mapping[str, Any]) -> Template:
    """A template from one entry of Meta's template list; ValueError if it is malformed."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"a template must be a JSON object, got {type(entry).__name__}")
    name = _text_field(entry, "name", "template")
    where = f"template {name}"
    template_id = entry.get("id")
    if isinstance(template_id, int) and not isinstance(template_id, bool):
        template_id = str(template_id)
    if not isinstance(template_id, str) or not template_id:
        raise ValueError(f"{where}: `id` must be a non-empty string")
    raw_components = entry.get("components")
    if not isinstance(raw_components, list) or not all(
        isinstance(c, Mapping) for c in raw_components
    ):
        raise ValueError(f"{where}: `components` must be a list of objects")
    # A copy in plain JSON types: the template is immutable, whatever the caller does next.
    components: tuple[dict[str, Any], ...] = tuple(
        msgspec.json.decode(msgspec.json.encode(list(raw_components)))
    )
    shape, keys = _shape(components, where, card=False)
    named = {key for key in keys if not key.isdigit()}
    positional = keys - named
    if named and positional:
        raise ValueError(
            f"{where}: mixes named ({{{{{min(named)}}}}}) and positional"
            f" ({{{{{min(positional)}}}}}) placeholders"
        )
    declared = entry.get("parameter_format")
    parameter_format: ParameterFormat
    if declared is None:
        parameter_format = "NAMED" if named else "POSITIONAL"
    elif isinstance(declared, str) and declared.upper() in PARAMETER_FORMATS:
        parameter_format = "NAMED" if declared.upper() == "NAMED" else "POSITIONAL"
        if (parameter_format == "NAMED" and positional) or (
            parameter_format == "POSITIONAL" and named
        ):
            raise ValueError(
                f"{where}: parameter_format is {parameter_format} but its placeholders are not"
            )
    else:
        raise ValueError(f"{where}: parameter_format must be POSITIONAL or NAMED, got {declared!r}")
    return Template(
        id=template_id,
        name=name,
        language=_text_field(entry, "language", where),
        category=_text_field(entry, "category", where).upper(),
        status=_text_field(entry, "status", where).upper(),
        components=components,
        parameter_format=parameter_format,
        shape=shape,
    )


def template_json(template: Template) -> dict[str, Any]:
    """The template as Meta's template list shows it."""
    return {
        "name": template.name,
        "parameter_format": template.parameter_format,
        "components": list(template.components),
        "language": template.language,
        "status": template.status,
        "category": template.category,
        "id": template.id,
    }


def with_status(template: Template, status: str) -> Template:
    """The same template with another status (its shape is not derived again)."""
    return dataclasses.replace(template, status=status)


def _text_field(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: `{key}` must be a non-empty string")
    return value


def _placeholders(text: str) -> Placeholders:
    found = _PLACEHOLDER.findall(text)
    if not found:
        return Placeholders(text, fixed_length=len(text))
    repeats: dict[str, int] = {}
    for key in found:
        repeats[key] = repeats.get(key, 0) + 1
    keys = list(repeats)
    if all(key.isdigit() for key in keys):
        keys.sort(key=int)
    fixed = len(_PLACEHOLDER.sub("", text))
    return Placeholders(text, tuple(keys), fixed, tuple(repeats[key] for key in keys))


def _shape(
    components: Sequence[Mapping[str, Any]], where: str, *, card: bool
) -> tuple[Shape, set[str]]:
    """The shape of creation-format components, and every placeholder key they use."""
    header_format: str | None = None
    header_text: Placeholders | None = None
    body: Placeholders | None = None
    buttons: tuple[Button, ...] = ()
    cards: list[Shape] = []
    offer = expires = False
    keys: set[str] = set()
    seen: set[str] = set()
    for component in components:
        kind = component.get("type")
        if not isinstance(kind, str):
            raise ValueError(f"{where}: every component needs a string `type`")
        kind = kind.upper()
        if kind in seen and kind != "BUTTONS":
            raise ValueError(f"{where}: more than one {kind} component")
        seen.add(kind)
        if kind == "HEADER":
            header_format = str(component.get("format", "TEXT")).upper()
            if header_format == "TEXT":
                header_text = _placeholders(_component_text(component, where, "HEADER"))
                keys.update(header_text.keys)
        elif kind == "BODY":
            body = _placeholders(_component_text(component, where, "BODY"))
            keys.update(body.keys)
        elif kind == "BUTTONS":
            buttons = _buttons(component.get("buttons"), where)
        elif kind == "CAROUSEL":
            if card:
                raise ValueError(f"{where}: a carousel card cannot hold a carousel")
            raw_cards = component.get("cards")
            if not isinstance(raw_cards, list) or not raw_cards:
                raise ValueError(f"{where}: CAROUSEL needs a non-empty list of `cards`")
            for c, raw_card in enumerate(raw_cards):
                card_components = raw_card.get("components") if isinstance(raw_card, dict) else None
                if not isinstance(card_components, list) or not all(
                    isinstance(x, Mapping) for x in card_components
                ):
                    raise ValueError(f"{where}: card {c} needs a list of `components`")
                card_shape, card_keys = _shape(card_components, f"{where}, card {c}", card=True)
                cards.append(card_shape)
                keys.update(card_keys)
        elif kind == "LIMITED_TIME_OFFER":
            offer = True
            details = component.get("limited_time_offer")
            expires = isinstance(details, Mapping) and details.get("has_expiration") is True
        # FOOTER and types Meta adds later take nothing at send time.
    return (
        Shape(
            header_format=header_format,
            header_text=header_text,
            body=body,
            buttons=buttons,
            required_buttons=tuple(b.index for b in buttons if b.needs_parameter),
            cards=tuple(cards),
            limited_time_offer=offer,
            offer_expires=expires,
        ),
        keys,
    )


def _component_text(component: Mapping[str, Any], where: str, kind: str) -> str:
    text = component.get("text")
    if not isinstance(text, str):
        raise ValueError(f"{where}: a {kind} of text needs a string `text`")
    return text


def _buttons(raw: Any, where: str) -> tuple[Button, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: BUTTONS needs a list of `buttons`")
    buttons: list[Button] = []
    for index, button in enumerate(raw):
        kind = button.get("type") if isinstance(button, Mapping) else None
        if not isinstance(kind, str):
            raise ValueError(f"{where}: button {index} needs a string `type`")
        kind = kind.upper()
        dynamic = False
        if kind == "URL":
            # A URL's suffix is `{{1}}` in named templates too: it takes no part in the format.
            dynamic = _PLACEHOLDER.search(str(button.get("url", ""))) is not None
        takes = dynamic or kind in _BUTTONS_WITH_PARAMETER
        buttons.append(
            Button(
                index=index,
                type=kind,
                sub_type=_BUTTON_SUB_TYPES.get(kind, kind.lower()),
                max_parameters=1 if takes else 0,
                needs_parameter=dynamic or kind in _BUTTONS_NEEDING_PARAMETER,
            )
        )
    return tuple(buttons)


# ---- the send-time checks -----------------------------------------------------------


def check_template(template: Template | None, name: str, language: str) -> Template:
    """The template a marketing send may use, or the error Meta answers for it."""
    if template is None:
        raise GraphError(TEMPLATE_NOT_FOUND, f"template name ({name}) does not exist in {language}")
    status = template.status
    if status != "APPROVED":
        if status == "PAUSED":
            raise GraphError(TEMPLATE_PAUSED, f"template {name} ({language}) is paused")
        if status == "DISABLED":
            raise GraphError(TEMPLATE_DISABLED, f"template {name} ({language}) is disabled")
        raise GraphError(
            TEMPLATE_NOT_FOUND, f"template {name} ({language}) is {status}, not APPROVED"
        )
    if template.category != "MARKETING":
        raise GraphError(
            MARKETING_ONLY,
            f"template {name} is a {template.category} template; this endpoint only sends"
            " MARKETING templates",
        )
    return template


def check_components(template: Template, components: list[Component]) -> None:
    """The send supplies exactly what the template asks for, or the GraphError Meta answers."""
    header: HeaderComponent | None = None
    body: BodyComponent | None = None
    buttons: list[ButtonComponent] = []
    carousel: CarouselComponent | None = None
    offer: LimitedTimeOfferComponent | None = None
    for component in components:
        if isinstance(component, ButtonComponent):
            buttons.append(component)
        elif isinstance(component, BodyComponent):
            body = component
        elif isinstance(component, HeaderComponent):
            header = component
        elif isinstance(component, CarouselComponent):
            carousel = component
        elif isinstance(component, LimitedTimeOfferComponent):
            offer = component
    shape = template.shape
    named = template.parameter_format == "NAMED"
    _check_parts(shape, header, body, buttons, named, "")
    if carousel is not None or shape.cards:
        _check_carousel(shape.cards, carousel, named)
    if offer is not None or shape.offer_expires:
        _check_offer(shape, offer)


def _check_parts(
    shape: Shape,
    header: HeaderComponent | None,
    body: BodyComponent | None,
    buttons: list[ButtonComponent],
    named: bool,
    where: str,
) -> None:
    _check_header(shape, header.parameters if header is not None else [], named, where)
    body_parameters = body.parameters if body is not None else []
    if shape.body is None:
        if body_parameters:
            raise _count(where, "body", 0, len(body_parameters))
    else:
        _check_text(shape.body, body_parameters, named, where, "body", BODY_TEXT_MAX)
    if buttons or shape.required_buttons:
        _check_buttons(shape, buttons, where)


def _check_header(shape: Shape, parameters: list[Parameter], named: bool, where: str) -> None:
    header_format = shape.header_format
    if header_format is None:
        if parameters:
            raise _count(where, "header", 0, len(parameters))
        return
    if shape.header_text is not None:
        for parameter in parameters:
            if not isinstance(parameter, TextParameter):
                raise _wrong_header(where, header_format, _tag(parameter))
        _check_text(shape.header_text, parameters, named, where, "header", HEADER_TEXT_MAX)
        return
    wanted = _HEADER_PARAMETERS.get(header_format)
    wanted_tag = header_format.lower() if wanted is None else _tag(wanted)
    if not parameters:
        raise GraphError(
            PARAMETER_FORMAT_MISMATCH,
            f"{where}header is {header_format}, got no {wanted_tag} parameter",
        )
    for parameter in parameters:
        if wanted is None or type(parameter) is not wanted:
            raise _wrong_header(where, header_format, _tag(parameter))
    if len(parameters) != 1:
        raise _count(where, "header", 1, len(parameters))


def _check_text(
    text: Placeholders,
    parameters: list[Parameter],
    named: bool,
    where: str,
    part: str,
    limit: int,
) -> None:
    """Named or positional as the template, as many as its placeholders, within `limit` filled."""
    if not parameters and not text.keys and text.fixed_length <= limit:
        return  # a text without placeholders (most marketing bodies): nothing to fill
    values: dict[str, str] = {}
    for parameter in parameters:
        name: str | None = getattr(parameter, "parameter_name", None)
        if (name is not None) != named:
            if named:
                detail = f"{part} takes named parameters (parameter_name), got a positional one"
            else:
                detail = f"{part} takes positional parameters, got parameter_name {name!r}"
            raise GraphError(PARAMETER_FORMAT_MISMATCH, where + detail)
    keys = text.keys
    if len(parameters) != len(keys):
        raise _count(where, part, len(keys), len(parameters))
    if named:
        for parameter in parameters:
            name = getattr(parameter, "parameter_name", None)
            assert name is not None  # checked above
            if name not in keys:
                raise GraphError(
                    PARAMETER_COUNT_MISMATCH,
                    f"{where}{part} has no parameter named {name!r} (it has"
                    f" {', '.join(sorted(keys))})",
                )
            if name in values:
                raise GraphError(
                    PARAMETER_COUNT_MISMATCH, f"{where}{part} parameter {name!r} is given twice"
                )
            values[name] = _value(parameter)
    else:
        for key, parameter in zip(keys, parameters, strict=True):
            values[key] = _value(parameter)
    length = text.length_with(values)
    if length > limit:
        raise GraphError(
            TRANSLATION_TOO_LONG,
            f"{where}{part} text with its parameters is {length:,} characters, more than {limit:,}",
        )


def _check_buttons(shape: Shape, buttons: list[ButtonComponent], where: str) -> None:
    template_buttons = shape.buttons
    given: set[int] = set()
    for button in buttons:
        index = int(button.index)
        if index >= len(template_buttons):
            raise GraphError(
                INVALID_PARAMETER_VALUE,
                f"{where}template has no button at index {index} (it has {len(template_buttons)})",
            )
        expected = template_buttons[index]
        sub_type = button.sub_type.lower()
        if sub_type != expected.sub_type:
            raise GraphError(
                INVALID_PARAMETER_VALUE,
                f"{where}button {index} is {expected.sub_type}, not {sub_type}",
            )
        if index in given:
            raise GraphError(INVALID_PARAMETER_VALUE, f"{where}button {index} is given twice")
        given.add(index)
        count = len(button.parameters)
        if count > expected.max_parameters:
            raise _count(where, f"button {index} ({sub_type})", expected.max_parameters, count)
        if count == 0 and expected.needs_parameter:
            raise _needs_parameter(where, expected)
    for index in shape.required_buttons:
        if index not in given:
            raise _needs_parameter(where, template_buttons[index])


def _check_carousel(
    cards: tuple[Shape, ...], carousel: CarouselComponent | None, named: bool
) -> None:
    sent = carousel.cards if carousel is not None else []
    if len(sent) != len(cards):
        raise GraphError(
            PARAMETER_COUNT_MISMATCH, f"carousel expects {len(cards)} cards, got {len(sent)}"
        )
    seen: set[int] = set()
    for card in sent:
        index = card.card_index
        if index >= len(cards):
            raise GraphError(
                INVALID_PARAMETER_VALUE,
                f"carousel has no card at card_index {index} (it has {len(cards)})",
            )
        if index in seen:
            raise GraphError(INVALID_PARAMETER_VALUE, f"card_index {index} is given twice")
        seen.add(index)
        _check_card(cards[index], card.components, named, f"card {index}: ")


def _check_card(shape: Shape, components: list[CardComponent], named: bool, where: str) -> None:
    header: HeaderComponent | None = None
    body: BodyComponent | None = None
    buttons: list[ButtonComponent] = []
    for component in components:
        if isinstance(component, ButtonComponent):
            buttons.append(component)
        elif isinstance(component, BodyComponent):
            body = component
        else:
            header = component
    _check_parts(shape, header, body, buttons, named, where)


def _check_offer(shape: Shape, offer: LimitedTimeOfferComponent | None) -> None:
    count = len(offer.parameters) if offer is not None else 0
    allowed = 1 if shape.limited_time_offer else 0
    if count > allowed:
        raise _count("", "limited_time_offer", allowed, count)
    if shape.offer_expires and count == 0:
        raise GraphError(
            MISSING_PARAMETER, "limited_time_offer needs its expiration_time_ms parameter"
        )


def _value(parameter: Parameter) -> str:
    """What a body or header parameter puts in place of its placeholder."""
    if isinstance(parameter, TextParameter):
        return parameter.text
    if isinstance(parameter, CurrencyParameter):
        return parameter.currency.fallback_value
    if isinstance(parameter, DateTimeParameter):
        return parameter.date_time.fallback_value
    return ""


def _tag(parameter: Parameter | type[Parameter]) -> str:
    return str(parameter.__struct_config__.tag)


def _count(where: str, part: str, expected: int, got: int) -> GraphError:
    noun = "parameter" if expected == 1 else "parameters"
    return GraphError(
        PARAMETER_COUNT_MISMATCH, f"{where}{part} expects {expected} {noun}, got {got}"
    )


def _wrong_header(where: str, header_format: str, got: str) -> GraphError:
    article = "an" if got[:1] in "aeiou" else "a"
    return GraphError(
        PARAMETER_FORMAT_MISMATCH,
        f"{where}header is {header_format}, got {article} {got} parameter",
    )


def _needs_parameter(where: str, button: Button) -> GraphError:
    return GraphError(
        MISSING_PARAMETER, f"{where}button {button.index} ({button.sub_type}) needs a parameter"
    )
