"""Decoding a send request and the rules its types cannot say, each mapped to a Graph code."""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec

from wagate.domain.errors import (
    GraphError,
    invalid_parameter,
    invalid_value,
    missing_parameter,
    not_one_of,
)
from wagate.domain.requests import (
    ActionParameter,
    BodyComponent,
    ButtonComponent,
    CardComponent,
    CarouselComponent,
    Component,
    CouponCodeParameter,
    CurrencyParameter,
    DateTimeParameter,
    DocumentParameter,
    HeaderComponent,
    ImageParameter,
    LimitedTimeOfferComponent,
    LimitedTimeOfferParameter,
    LocationParameter,
    MarketingMessageRequest,
    Media,
    Parameter,
    PayloadParameter,
    ProductParameter,
    TextParameter,
    VideoParameter,
)

_decoder = msgspec.json.Decoder(MarketingMessageRequest)

# How deep a send body may nest (objects and arrays). Only `flow_action_data` can
# nest freely; the deepest fixed path (a carousel card's flow button) is 12 levels.
MAX_JSON_DEPTH = 32
# Levels above `flow_action_data` (the root object included): 7 in a plain
# template (root, template, components, button, parameters, parameter, action),
# 11 in a carousel card.
_FLOW_DATA_DEPTH = 7
_CARD_FLOW_DATA_DEPTH = 11
_ENUM_ERROR = re.compile(r"^Invalid enum value '(.*)' - at `(\$[^`]*)`$", re.DOTALL)


def _enum_fields() -> dict[str, tuple[str, ...]]:
    """Each request field whose type is a Literal, with its values (from the types themselves)."""
    found: dict[str, tuple[str, ...]] = {}
    for struct in (MarketingMessageRequest, *_structs_of(MarketingMessageRequest)):
        for name, hint in typing.get_type_hints(struct).items():
            for option in (hint, *typing.get_args(hint)):
                if typing.get_origin(option) is typing.Literal:
                    values: dict[str, str] = {}
                    for value in typing.get_args(option):
                        values.setdefault(str(value).lower(), str(value))
                    found[name] = tuple(values.values())
    return found


def _structs_of(root: type[Any]) -> set[type[Any]]:
    seen: set[type[Any]] = set()
    pending = [root]
    while pending:
        for hint in typing.get_type_hints(pending.pop()).values():
            stack = [hint]
            while stack:
                current = stack.pop()
                stack.extend(typing.get_args(current))
                is_struct = isinstance(current, type) and issubclass(current, msgspec.Struct)
                if is_struct and current not in seen:
                    seen.add(current)
                    pending.append(current)
                    pending.extend(current.__subclasses__())
    return seen


_ENUM_FIELDS = _enum_fields()

HEADER_TEXT_MAX = 60

_HEADER_TYPES: tuple[type[Parameter], ...] = (
    TextParameter,
    ImageParameter,
    VideoParameter,
    DocumentParameter,
    LocationParameter,
    ProductParameter,
)
_CARD_HEADER_TYPES: tuple[type[Parameter], ...] = (
    ImageParameter,
    VideoParameter,
    ProductParameter,
)
_BODY_TYPES: tuple[type[Parameter], ...] = (TextParameter, CurrencyParameter, DateTimeParameter)
_BUTTON_TYPES: dict[str, tuple[type[Parameter], ...]] = {
    "quick_reply": (PayloadParameter,),
    "url": (TextParameter,),
    "copy_code": (CouponCodeParameter,),
    "catalog": (ActionParameter,),
    "mpm": (ActionParameter,),
    "flow": (ActionParameter,),
}


def decode_request(body: bytes) -> MarketingMessageRequest:
    """Decode and check a send request, or raise the GraphError Meta would answer."""
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _from_validation_error(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise invalid_parameter(f"Request body is not valid JSON in UTF-8: {exc}") from None
    except RecursionError:
        # Only `flow_action_data` (dict[str, Any]) can nest this deep.
        raise too_deep("$") from None
    check_components(request.template.components or [])
    return request


def too_deep(where: str) -> GraphError:
    """Code 131009 for a body nested deeper than MAX_JSON_DEPTH."""
    return invalid_value(f"JSON nested deeper than {MAX_JSON_DEPTH} levels - at `{where}`")


def _from_validation_error(text: str) -> GraphError:
    """Map msgspec's message to Meta's code: missing 131008, unknown 100, enum 100, else 131009."""
    if text.startswith("Object missing required field"):
        return missing_parameter(text)
    if text.startswith("Object contains unknown field"):
        return invalid_parameter(text)
    enum = _ENUM_ERROR.match(text)
    if enum is not None:
        got, path = enum.groups()
        field = path.rsplit(".", 1)[-1]
        allowed = _ENUM_FIELDS.get(field)
        if allowed is not None:
            error = not_one_of(field, allowed, got)
            if path == "$.type":
                error.details = f"Message must be a template message. {error.details}"
            return error
    if text.endswith("- at `$.type`"):
        return invalid_parameter(f"Message must be a template message. {text}")
    if text.startswith("Expected `object`, got") and "- at `$" not in text:
        return invalid_parameter(f"Request body must be a JSON object: {text}")
    return invalid_value(text)


def check_components(components: list[Component]) -> None:
    """Component rules: parameter types per component, one header/body, button shape."""
    _check_unique(components, "$.template.components")
    for i, component in enumerate(components):
        where = f"$.template.components[{i}]"
        if isinstance(component, CarouselComponent):
            for c, card in enumerate(component.cards):
                card_where = f"{where}.cards[{c}].components"
                _check_unique(card.components, card_where)
                for j, card_component in enumerate(card.components):
                    _check_component(card_component, f"{card_where}[{j}]", card=True)
        else:
            _check_component(component, where, card=False)


def _check_flow_data(parameter: ActionParameter, where: str, *, card: bool) -> None:
    """Bound the one free-form part of a send body, so every stored message reads back."""
    data = parameter.action.flow_action_data
    if not data:
        return
    base = _CARD_FLOW_DATA_DEPTH if card else _FLOW_DATA_DEPTH
    if base + _depth(data, MAX_JSON_DEPTH - base) > MAX_JSON_DEPTH:
        raise too_deep(f"{where}.action.flow_action_data")


def _depth(value: dict[str, Any] | list[Any], limit: int) -> int:
    """How many levels of objects and arrays `value` nests, counting at most `limit` + 1."""
    if limit <= 0:
        return 1
    deepest = 0
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, dict | list):
            found = _depth(child, limit - 1)
            if found > deepest:
                deepest = found
    return 1 + deepest


def _check_unique(components: list[Component] | list[CardComponent], where: str) -> None:
    seen: set[str] = set()
    for component in components:
        if isinstance(component, ButtonComponent):
            continue
        kind = str(type(component).__struct_config__.tag).lower()
        if kind in seen:
            raise invalid_parameter(f"Component `{kind}` appears more than once - at `{where}`")
        seen.add(kind)


def _check_component(component: Component, where: str, *, card: bool) -> None:
    if isinstance(component, HeaderComponent):
        allowed = _CARD_HEADER_TYPES if card else _HEADER_TYPES
        _check_types(component.parameters, allowed, "header", where)
        for p, parameter in enumerate(component.parameters):
            if isinstance(parameter, TextParameter) and len(parameter.text) > HEADER_TEXT_MAX:
                raise invalid_value(
                    f"Header text is longer than {HEADER_TEXT_MAX} characters"
                    f" - at `{where}.parameters[{p}].text`"
                )
    elif isinstance(component, BodyComponent):
        _check_types(component.parameters, _BODY_TYPES, "body", where)
        _check_naming(component.parameters, where)
    elif isinstance(component, ButtonComponent):
        _check_button(component, where, card=card)
    elif isinstance(component, LimitedTimeOfferComponent):
        _check_types(
            component.parameters, (LimitedTimeOfferParameter,), "limited_time_offer", where
        )
    for p, parameter in enumerate(getattr(component, "parameters", [])):
        media = _media_of(parameter)
        if media is not None and (media.id is None) == (media.link is None):
            raise invalid_value(
                f"Media needs exactly one of `id` or `link` - at `{where}.parameters[{p}]`"
            )


def _check_types(
    parameters: list[Parameter], allowed: tuple[type[Parameter], ...], name: str, where: str
) -> None:
    for p, parameter in enumerate(parameters):
        if not isinstance(parameter, allowed):
            names = ", ".join(str(t.__struct_config__.tag) for t in allowed)
            kind = type(parameter).__struct_config__.tag
            raise invalid_value(
                f"A {name} component takes parameters of type {names}, not `{kind}`"
                f" - at `{where}.parameters[{p}].type`"
            )


def _check_naming(parameters: list[Parameter], where: str) -> None:
    """Named (`{{first_name}}`) and positional (`{{1}}`) parameters cannot be mixed."""
    named = {
        getattr(p, "parameter_name", None) is not None
        for p in parameters
        if isinstance(p, TextParameter | CurrencyParameter | DateTimeParameter)
    }
    if len(named) > 1:
        raise invalid_value(
            "Parameters must all have `parameter_name` (named template) or none"
            f" (positional template) - at `{where}.parameters`"
        )


def _check_button(component: ButtonComponent, where: str, *, card: bool) -> None:
    index = component.index
    if isinstance(index, str):
        if not (index.isdigit() and len(index) <= 2):
            raise invalid_value(f"Button index must be 0-9, got {index!r} - at `{where}.index`")
        index = int(index)
    if not 0 <= index <= 9:
        raise invalid_value(f"Button index must be 0-9, got {index} - at `{where}.index`")
    _check_types(
        component.parameters,
        _BUTTON_TYPES[component.sub_type.lower()],
        f"{component.sub_type.lower()} button",
        where,
    )
    for p, parameter in enumerate(component.parameters):
        if isinstance(parameter, ActionParameter) and parameter.action.flow_action_data:
            _check_flow_data(parameter, f"{where}.parameters[{p}]", card=card)


def _media_of(parameter: Parameter) -> Media | None:
    if isinstance(parameter, ImageParameter):
        return parameter.image
    if isinstance(parameter, VideoParameter):
        return parameter.video
    if isinstance(parameter, DocumentParameter):
        return parameter.document
    return None
