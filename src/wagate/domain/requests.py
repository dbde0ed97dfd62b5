"""The marketing_messages request and response, as typed msgspec structs.

Field rules follow API-FACTS sections 1 and 2 and Meta's v23 OpenAPI
(`MarketingMessageRequestPayload`, `TemplateObject`). Rules a type cannot say
(which parameter types a component takes, one of `id`/`link`) live in
`wagate.domain.validation`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

BSUID_PATTERN = r"^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$"
TEMPLATE_NAME_PATTERN = r"^[a-z0-9_]{1,512}$"
# Meta's locale codes: "en", "en_US", "es_LA", "zh_HK", "fil", "pt_BR" ...
LANGUAGE_CODE_PATTERN = r"^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$"

Bsuid = Annotated[str, Meta(pattern=BSUID_PATTERN, description="Business-scoped user id")]
NonEmpty = Annotated[str, Meta(min_length=1)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Every request object refuses fields it does not know, so a typo is an error."""


# ---- parameter payloads -------------------------------------------------------------


class Media(_Strict):
    """An image, video or document: exactly one of an uploaded media `id` or a `link`."""

    id: NonEmpty | None = None
    link: NonEmpty | None = None
    caption: str | None = None
    filename: str | None = None


class Currency(_Strict):
    """A localised amount; `amount_1000` is the amount times 1,000."""

    fallback_value: str
    code: Annotated[str, Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code")]
    amount_1000: int


class DateTime(_Strict):
    """A date shown as `fallback_value`."""

    fallback_value: str


class Location(_Strict):
    """A location header."""

    latitude: float | str
    longitude: float | str
    name: str | None = None
    address: str | None = None


class Product(_Strict):
    """A catalog product header."""

    product_retailer_id: NonEmpty
    catalog_id: NonEmpty | None = None


class ProductItem(_Strict):
    """One product of a multi-product message section."""

    product_retailer_id: NonEmpty


class Section(_Strict):
    """A section of a multi-product message button."""

    title: str
    product_items: list[ProductItem]


class Action(_Strict):
    """The action of a catalog, multi-product or flow button."""

    thumbnail_product_retailer_id: str | None = None
    sections: list[Section] | None = None
    flow_token: str | None = None
    flow_action_data: dict[str, Any] | None = None


class LimitedTimeOffer(_Strict):
    """When a limited-time offer ends, in Unix milliseconds."""

    expiration_time_ms: int


# ---- parameters: a tagged union on `type` ------------------------------------------


class _Parameter(_Strict, tag_field="type"):
    """Base of every parameter; `type` names the variant."""


class TextParameter(_Parameter, tag="text"):
    """Text; `parameter_name` is set for templates with named parameters."""

    text: str
    parameter_name: Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,100}$")] | None = None


class CurrencyParameter(_Parameter, tag="currency"):
    """A currency amount."""

    currency: Currency
    parameter_name: str | None = None


class DateTimeParameter(_Parameter, tag="date_time"):
    """A date."""

    date_time: DateTime
    parameter_name: str | None = None


class ImageParameter(_Parameter, tag="image"):
    """An image header."""

    image: Media


class VideoParameter(_Parameter, tag="video"):
    """A video header."""

    video: Media


class DocumentParameter(_Parameter, tag="document"):
    """A document header."""

    document: Media


class LocationParameter(_Parameter, tag="location"):
    """A location header."""

    location: Location


class ProductParameter(_Parameter, tag="product"):
    """A product header (also a carousel card's header)."""

    product: Product


class PayloadParameter(_Parameter, tag="payload"):
    """The payload a quick-reply button returns."""

    payload: str


class CouponCodeParameter(_Parameter, tag="coupon_code"):
    """The code a copy-code button copies: letters and digits, at most 15."""

    coupon_code: Annotated[str, Meta(pattern=r"^[A-Za-z0-9]{1,15}$")]


class ActionParameter(_Parameter, tag="action"):
    """The action of a catalog, multi-product or flow button."""

    action: Action


class LimitedTimeOfferParameter(_Parameter, tag="limited_time_offer"):
    """The expiry of a limited-time offer."""

    limited_time_offer: LimitedTimeOffer


Parameter = (
    TextParameter
    | CurrencyParameter
    | DateTimeParameter
    | ImageParameter
    | VideoParameter
    | DocumentParameter
    | LocationParameter
    | ProductParameter
    | PayloadParameter
    | CouponCodeParameter
    | ActionParameter
    | LimitedTimeOfferParameter
)

# ---- components: a tagged union on `type` ------------------------------------------


class _Component(_Strict, tag_field="type"):
    """Base of every component; `type` names the variant (lower case at send time)."""


class HeaderComponent(_Component, tag="header"):
    """Header parameters: text (<= 60 characters), media, location or product."""

    parameters: list[Parameter]


class BodyComponent(_Component, tag="body"):
    """Body parameters: text, currency or date_time."""

    parameters: list[Parameter] = []


# Meta takes sub_type in either case; pywa sends it in upper case.
ButtonSubType = Literal[
    "quick_reply",
    "url",
    "copy_code",
    "catalog",
    "mpm",
    "flow",
    "QUICK_REPLY",
    "URL",
    "COPY_CODE",
    "CATALOG",
    "MPM",
    "FLOW",
]


class ButtonComponent(_Component, tag="button"):
    """Parameters of the button at `index` (0-9, sent as a number or a string)."""

    sub_type: ButtonSubType
    index: int | str
    parameters: list[Parameter] = []


class LimitedTimeOfferComponent(_Component, tag="limited_time_offer"):
    """The offer's expiry."""

    parameters: list[Parameter]


# Meta also takes a component's `type` in upper case (its creation-time spelling);
# pywa's typed parameters send it so. These variants keep what the client sent.


class HeaderComponentUpper(HeaderComponent, tag="HEADER"):
    """`HEADER`, as pywa sends it."""


class BodyComponentUpper(BodyComponent, tag="BODY"):
    """`BODY`, as pywa sends it."""


class ButtonComponentUpper(ButtonComponent, tag="BUTTON"):
    """`BUTTON`."""


CardComponent = (
    HeaderComponent
    | BodyComponent
    | ButtonComponent
    | HeaderComponentUpper
    | BodyComponentUpper
    | ButtonComponentUpper
)


class Card(_Strict):
    """One card of a carousel."""

    card_index: Annotated[int, Meta(ge=0, le=9)]
    components: list[CardComponent]


class CarouselComponent(_Component, tag="carousel"):
    """The cards of a carousel template."""

    cards: Annotated[list[Card], Meta(min_length=1, max_length=10)]


class LimitedTimeOfferComponentUpper(LimitedTimeOfferComponent, tag="LIMITED_TIME_OFFER"):
    """`LIMITED_TIME_OFFER`."""


class CarouselComponentUpper(CarouselComponent, tag="CAROUSEL"):
    """`CAROUSEL`."""


Component = (
    HeaderComponent
    | BodyComponent
    | ButtonComponent
    | LimitedTimeOfferComponent
    | CarouselComponent
    | HeaderComponentUpper
    | BodyComponentUpper
    | ButtonComponentUpper
    | LimitedTimeOfferComponentUpper
    | CarouselComponentUpper
)

# ---- the template and the request --------------------------------------------------


class Language(_Strict):
    """The template's language; `policy` may only be `deterministic`."""

    code: Annotated[str, Meta(pattern=LANGUAGE_CODE_PATTERN, examples=["en_US"])]
    policy: Literal["deterministic"] | None = None


class Template(_Strict):
    """Which approved template to send and the values of its parameters."""

    name: Annotated[str, Meta(pattern=TEMPLATE_NAME_PATTERN, examples=["promo_template"])]
    language: Language
    components: list[Component] | None = None


class Context(_Strict):
    """A Cloud API field some clients send: the message this one replies to."""

    message_id: NonEmpty


class MarketingMessageRequest(_Strict):
    """The body of `POST /{phone_number_id}/marketing_messages`.

    `to` is required unless `recipient` (a BSUID) is given; if both are, `to` wins.
    """

    messaging_product: Literal["whatsapp"]
    type: Literal["template"]
    template: Template
    recipient_type: Literal["individual"] | None = None
    to: NonEmpty | None = None
    recipient: Bsuid | None = None
    # Echoed back in status webhooks; no NUL, which PostgreSQL text cannot hold.
    biz_opaque_callback_data: Annotated[str, Meta(max_length=512, pattern=r"^[^\x00]*$")] | None = (
        None
    )
    product_policy: Literal["CLOUD_API_FALLBACK", "STRICT"] | None = None
    message_activity_sharing: bool | None = None
    context: Context | None = None
    recipient_identity_key_hash: str | None = None


# ---- the response ------------------------------------------------------------------

MessageStatus = Literal["accepted", "held_for_quality_assessment", "paused"]


class Contact(msgspec.Struct, omit_defaults=True):
    """Who the message goes to: `wa_id` for phone sends, `user_id` for BSUID sends."""

    input: str
    wa_id: str | None = None
    user_id: str | None = None


class MessageRef(msgspec.Struct):
    """The id of the accepted message and its status."""

    id: str
    message_status: MessageStatus = "accepted"


class MarketingMessageResponse(msgspec.Struct, kw_only=True):
    """The 200 answer of the send endpoint."""

    messaging_product: Literal["whatsapp"] = "whatsapp"
    contacts: list[Contact]
    messages: list[MessageRef]


# ---- the Graph error envelope ------------------------------------------------------


class GraphErrorData(msgspec.Struct, kw_only=True):
    """Meta's `error_data`."""

    messaging_product: Literal["whatsapp"] = "whatsapp"
    details: str


class GraphErrorBody(msgspec.Struct, omit_defaults=True):
    """The inside of Meta's error envelope."""

    message: str
    type: str
    code: int
    error_data: GraphErrorData
    fbtrace_id: str
    error_subcode: int | None = None
    is_transient: bool | None = None


class GraphErrorResponse(msgspec.Struct):
    """Meta's error envelope: `{"error": {...}}`."""

    error: GraphErrorBody
