"""Message templates per WABA: the seeded set, creation with delayed approval, and send checks.

Templates are kept in Meta's creation format (`{"type": "BODY", "text": ...}`);
what a send must supply (parameter counts, named parameters, button parameters)
is derived once, when a template is stored, so the send path only compares.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from wagate.domain.errors import (
    INVALID_PARAMETER,
    MARKETING_ONLY,
    PARAMETER_COUNT_MISMATCH,
    PARAMETER_FORMAT_MISMATCH,
    TEMPLATE_DISABLED,
    TEMPLATE_NOT_FOUND,
    TEMPLATE_PAUSED,
    GraphError,
    invalid_parameter,
    invalid_value,
    missing_parameter,
)
from wagate.domain.requests import (
    LANGUAGE_CODE_PATTERN,
    TEMPLATE_NAME_PATTERN,
    BodyComponent,
    ButtonComponent,
    Component,
    HeaderComponent,
)

Category = Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
Status = Literal["APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED"]
ParameterFormat = Literal["POSITIONAL", "NAMED"]

CATEGORIES: Final = ("MARKETING", "UTILITY", "AUTHENTICATION")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_NAME = re.compile(TEMPLATE_NAME_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_CODE_PATTERN)
# Which send-time `sub_type` addresses each creation-time button type.
_BUTTON_SUB_TYPES: Final = {
    "URL": "url",
    "COPY_CODE": "copy_code",
    "QUICK_REPLY": "quick_reply",
    "CATALOG": "catalog",
    "MPM": "mpm",
    "FLOW": "flow",
}
# Meta's template ids are long numbers, unique across WABAs.
_ids = itertools.count(1_100_000_000_000_001)


@dataclass(frozen=True, slots=True)
class TemplateShape:
    """What a send of a template must supply, read from its components."""

    header_parameters: int = 0
    body_parameters: int = 0
    body_names: frozenset[str] = frozenset()
    # index -> send-time sub_type, for every button of the template
    buttons: dict[int, str] = field(default_factory=dict)
    # indexes of buttons that need a parameter at send time (dynamic URL, copy code)
    buttons_needing_parameter: frozenset[int] = frozenset()


@dataclass(slots=True)
class TemplateRecord:
    """One template of one WABA, in the shape Meta's `message_templates` returns."""

    id: str
    name: str
    language: str
    category: str
    status: str
    components: list[dict[str, Any]]
    parameter_format: ParameterFormat
    shape: TemplateShape
    # When a PENDING template becomes APPROVED; None stays PENDING.
    approve_at: float | None = None

    def refresh(self, now: float) -> None:
        """Approve the template once its approval time has passed."""
        if self.status == "PENDING" and self.approve_at is not None and now >= self.approve_at:
            self.status = "APPROVED"
            self.approve_at = None

    def to_json(self, fields: frozenset[str] | None = None) -> dict[str, Any]:
        """Meta's JSON for the template, restricted to `fields` (plus `id`) when given."""
        full: dict[str, Any] = {
            "name": self.name,
            "parameter_format": self.parameter_format,
            "components": self.components,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id,
        }
        if fields is None:
            return full
        return {key: value for key, value in full.items() if key in fields or key == "id"}


class TemplateCreate(msgspec.Struct):
    """The body of `POST /{waba_id}/message_templates` (Meta accepts many more fields)."""

    name: str
    language: str
    category: str
    components: list[dict[str, Any]]
    parameter_format: ParameterFormat | None = None


def shape_of(components: list[dict[str, Any]]) -> TemplateShape:
    """What a send must supply for these creation-format components."""
    header_parameters = 0
    body_positional: set[str] = set()
    body_names: set[str] = set()
    buttons: dict[int, str] = {}
    needing: set[int] = set()
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            header_format = str(component.get("format", "TEXT")).upper()
            if header_format == "TEXT":
                header_parameters = len(set(_PLACEHOLDER.findall(str(component.get("text", "")))))
            else:
                # A media or location header is always supplied at send time.
                header_parameters = 1
        elif kind == "BODY":
            for name in _PLACEHOLDER.findall(str(component.get("text", ""))):
                (body_positional if name.isdigit() else body_names).add(name)
        elif kind == "BUTTONS":
            for index, button in enumerate(component.get("buttons", [])):
                button_type = str(button.get("type", "")).upper()
                buttons[index] = _BUTTON_SUB_TYPES.get(button_type, button_type.lower())
                dynamic_url = button_type == "URL" and _PLACEHOLDER.search(
                    str(button.get("url", ""))
                )
                if dynamic_url or button_type == "COPY_CODE":
                    needing.add(index)
    return TemplateShape(
        header_parameters=header_parameters,
        body_parameters=len(body_positional) + len(body_names),
        body_names=frozenset(body_names),
        buttons=buttons,
        buttons_needing_parameter=frozenset(needing),
    )


def new_template(
    name: str,
    language: str,
    category: str,
    status: str,
    components: list[dict[str, Any]],
    parameter_format: ParameterFormat | None = None,
    approve_at: float | None = None,
) -> TemplateRecord:
    """A template record with a fresh id; the parameter format is inferred when not given."""
    shape = shape_of(components)
    if parameter_format is None:
        parameter_format = "NAMED" if shape.body_names else "POSITIONAL"
    return TemplateRecord(
        id=str(next(_ids)),
        name=name,
        language=language,
        category=category,
        status=status,
        components=components,
        parameter_format=parameter_format,
        shape=shape,
        approve_at=approve_at,
    )


def _body(text: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "BODY", "text": text}
    if example is not None:
        body["example"] = example
    return body


def seed_templates() -> list[TemplateRecord]:
    """The templates every WABA starts with (the contract other tools test against)."""
    return [
        new_template(
            "promo_template",
            "en_US",
            "MARKETING",
            "APPROVED",
            [_body("Our spring sale is on: 20% off everything this week.")],
        ),
        new_template(
            "seasonal_promo",
            "en_US",
            "MARKETING",
            "APPROVED",
            [
                {
                    "type": "HEADER",
                    "format": "TEXT",
                    "text": "{{1}} sale",
                    "example": {"header_text": ["Summer"]},
                },
                _body(
                    "Hi {{1}}, save {{2}} until {{3}}.",
                    {"body_text": [["Pablo", "25%", "Sunday"]]},
                ),
                {
                    "type": "BUTTONS",
                    "buttons": [
                        {
                            "type": "URL",
                            "text": "Shop now",
                            "url": "https://shop.example/{{1}}",
                            "example": ["https://shop.example/summer"],
                        },
                        {"type": "COPY_CODE", "example": "SAVE10"},
                    ],
                },
            ],
        ),
        new_template(
            "named_offer",
            "en_US",
            "MARKETING",
            "APPROVED",
            [
                _body(
                    "Hi {{first_name}}, here is {{discount}} off your next order.",
                    {
                        "body_text_named_params": [
                            {"param_name": "first_name", "example": "Pablo"},
                            {"param_name": "discount", "example": "15%"},
                        ]
                    },
                )
            ],
            parameter_format="NAMED",
        ),
        new_template(
            "order_update",
            "en_US",
            "UTILITY",
            "APPROVED",
            [_body("Your order {{1}} has shipped.", {"body_text": [["#1234"]]})],
        ),
        new_template(
            "paused_promo",
            "en_US",
            "MARKETING",
            "PAUSED",
            [_body("This promotion is paused for low quality.")],
        ),
        new_template(
            "draft_promo",
            "en_US",
            "MARKETING",
            "PENDING",
            [_body("This promotion is still in review.")],
        ),
    ]


def parse_create(body: bytes) -> TemplateCreate:
    """Decode and check a template creation body, or raise Meta's code 100."""
    try:
        create = msgspec.json.decode(body, type=TemplateCreate)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise invalid_parameter(f"Invalid template: {exc}") from None
    if not _NAME.match(create.name):
        raise invalid_parameter(
            "Template name may only hold lower-case letters, digits and underscores"
        )
    if not _LANGUAGE.match(create.language):
        raise invalid_parameter(f"Unknown template language {create.language!r}")
    create.category = create.category.upper()
    if create.category not in CATEGORIES:
        raise invalid_parameter(f"Category must be one of {', '.join(CATEGORIES)}")
    if not any(str(c.get("type", "")).upper() == "BODY" for c in create.components):
        raise invalid_parameter("A template needs a BODY component")
    return create


def encode_cursor(template_id: str) -> str:
    """An opaque paging cursor for a template id."""
    return base64.urlsafe_b64encode(template_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The template id a cursor points at, or Meta's code 100."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return int(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_parameter(f"Invalid paging cursor {cursor!r}") from None


# ---- the send-time check ------------------------------------------------------------


def check_sendable(template: TemplateRecord | None, name: str, language: str) -> TemplateRecord:
    """The template a marketing send may use, or the error Meta answers for it."""
    if template is None:
        raise GraphError(
            TEMPLATE_NOT_FOUND,
            f"template name ({name}) does not exist in {language} (or is not approved)",
        )
    if template.status == "PAUSED":
        raise GraphError(TEMPLATE_PAUSED, f"Template {name} ({language}) is paused")
    if template.status == "DISABLED":
        raise GraphError(TEMPLATE_DISABLED, f"Template {name} ({language}) is disabled")
    if template.status != "APPROVED":
        raise GraphError(
            TEMPLATE_NOT_FOUND,
            f"template name ({name}) in {language} is {template.status}, not approved",
        )
    if template.category != "MARKETING":
        raise GraphError(
            MARKETING_ONLY,
            f"Template {name} is a {template.category} template; this endpoint only sends"
            " MARKETING templates",
        )
    return template


def check_parameters(template: TemplateRecord, components: list[Component]) -> None:
    """The send supplies exactly the parameters the template asks for (132000/132012/131008)."""
    shape = template.shape
    header = next((c for c in components if isinstance(c, HeaderComponent)), None)
    body = next((c for c in components if isinstance(c, BodyComponent)), None)
    header_count = len(header.parameters) if header else 0
    if header_count != shape.header_parameters:
        raise GraphError(
            PARAMETER_COUNT_MISMATCH,
            f"header: expected {shape.header_parameters} parameters, received {header_count}",
        )
    _check_body(template, body.parameters if body else [])
    _check_buttons(shape, [c for c in components if isinstance(c, ButtonComponent)])


def _check_body(template: TemplateRecord, parameters: list[Any]) -> None:
    shape = template.shape
    names = [getattr(p, "parameter_name", None) for p in parameters]
    named = template.parameter_format == "NAMED"
    if any((name is None) == named for name in names):
        expected = "named (with parameter_name)" if named else "positional (no parameter_name)"
        raise GraphError(
            PARAMETER_FORMAT_MISMATCH, f"body: template {template.name} takes {expected} parameters"
        )
    if len(parameters) != shape.body_parameters:
        raise GraphError(
            PARAMETER_COUNT_MISMATCH,
            f"body: expected {shape.body_parameters} parameters, received {len(parameters)}",
        )
    if named and set(names) != shape.body_names:
        raise GraphError(
            PARAMETER_COUNT_MISMATCH,
            f"body: expected parameters named {sorted(shape.body_names)},"
            f" received {sorted(str(n) for n in names)}",
        )


def _check_buttons(shape: TemplateShape, buttons: list[ButtonComponent]) -> None:
    given: set[int] = set()
    for button in buttons:
        index = int(button.index)
        sub_type = shape.buttons.get(index)
        if sub_type is None:
            raise invalid_value(f"buttons: the template has no button at index {index}")
        if sub_type != button.sub_type.lower():
            raise invalid_value(
                f"buttons: button at index {index} is of type {sub_type}, not {button.sub_type}"
            )
        if button.parameters:
            given.add(index)
    missing = sorted(shape.buttons_needing_parameter - given)
    if missing:
        raise missing_parameter(
            f"buttons: Button at index {missing[0]} of type {shape.buttons[missing[0]]}"
            " requires a parameter"
        )


class TemplateStore:
    """Every WABA's templates, seeded lazily on a WABA's first use."""

    def __init__(
        self,
        approval_delay: float,
        *,
        max_wabas: int = 10_000,
        max_per_waba: int = 250,
        max_created: int = 10_000,
    ) -> None:
        """An empty store; created templates are approved after `approval_delay` seconds.

        At most `max_wabas` WABAs are seeded, each holds at most `max_per_waba`
        templates, and at most `max_created` are created in all.
        """
        self.approval_delay = approval_delay
        self.max_wabas = max_wabas
        self.max_per_waba = max_per_waba
        self.max_created = max_created
        self.created = 0
        # waba_id -> (name, language) -> template, in creation order
        self._wabas: dict[str, dict[tuple[str, str], TemplateRecord]] = {}

    def clear(self) -> None:
        """Forget every WABA; the next access seeds it again."""
        self._wabas.clear()
        self.created = 0

    def _of(self, waba_id: str) -> dict[tuple[str, str], TemplateRecord]:
        templates = self._wabas.get(waba_id)
        if templates is None:
            if len(self._wabas) >= self.max_wabas:
                raise GraphError(
                    INVALID_PARAMETER, f"Sandbox limit: at most {self.max_wabas} business accounts"
                )
            templates = {(t.name, t.language): t for t in seed_templates()}
            self._wabas[waba_id] = templates
        return templates

    def find(self, waba_id: str, name: str, language: str, now: float) -> TemplateRecord | None:
        """The template of that name and language, if any."""
        template = self._of(waba_id).get((name, language))
        if template is not None:
            template.refresh(now)
        return template

    def list(self, waba_id: str, now: float) -> list[TemplateRecord]:
        """All templates of a WABA, oldest first."""
        templates = list(self._of(waba_id).values())
        for template in templates:
            template.refresh(now)
        return templates

    def create(self, waba_id: str, create: TemplateCreate, now: float) -> TemplateRecord:
        """Store a new PENDING template that approves itself after the approval delay."""
        templates = self._of(waba_id)
        if (create.name, create.language) in templates:
            # Meta's answer for a second template of the same name and language.
            raise GraphError(
                INVALID_PARAMETER,
                f"Content in this language already exists: {create.name} ({create.language})",
                subcode=2388024,
            )
        if len(templates) >= self.max_per_waba:
            raise GraphError(
                INVALID_PARAMETER,
                f"Message template limit reached: a WABA holds at most {self.max_per_waba}",
            )
        if self.created >= self.max_created:
            raise GraphError(
                INVALID_PARAMETER, f"Sandbox limit: at most {self.max_created} created templates"
            )
        template = new_template(
            create.name,
            create.language,
            create.category,
            "PENDING",
            create.components,
            parameter_format=create.parameter_format,
            approve_at=now + self.approval_delay,
        )
        templates[(template.name, template.language)] = template
        self.created += 1
        return template

    def delete(self, waba_id: str, name: str, hsm_id: str | None) -> int:
        """Delete every language of `name` (only the one with id `hsm_id` when given)."""
        templates = self._of(waba_id)
        doomed = [
            key
            for key, template in templates.items()
            if template.name == name and (hsm_id is None or template.id == hsm_id)
        ]
        if not doomed:
            which = f"{name} (id {hsm_id})" if hsm_id else name
            raise GraphError(INVALID_PARAMETER, f"Message template {which} was not found")
        for key in doomed:
            del templates[key]
        # Deleting a seeded template frees a slot too: still bounded (6 seeds per WABA).
        self.created = max(0, self.created - len(doomed))
        return len(doomed)
