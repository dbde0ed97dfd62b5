"""Decoding a send request and the rules its types cannot say, each mapped to a Graph code."""

from __future__ import annotations

import msgspec

from wagate.domain.errors import GraphError, invalid_parameter, invalid_value, missing_parameter
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
    check_components(request.template.components or [])
    return request


def _from_validation_error(text: str) -> GraphError:
    """Map msgspec's message to Meta's code: missing 131008, unknown 100, else 131009."""
    if text.startswith("Object missing required field"):
        return missing_parameter(text)
    if text.startswith("Object contains unknown field"):
        return invalid_parameter(text)
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
        _check_button(component, where)
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


def _check_button(component: ButtonComponent, where: str) -> None:
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


def _media_of(parameter: Parameter) -> Media | None:
    if isinstance(parameter, ImageParameter):
        return parameter.image
    if isinstance(parameter, VideoParameter):
        return parameter.video
    if isinstance(parameter, DocumentParameter):
        return parameter.document
    return None
