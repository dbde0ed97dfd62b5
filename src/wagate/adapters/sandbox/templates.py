"""Message templates per WABA: the seeded set, creation with delayed approval, status changes.

Templates are the domain's (`wagate.domain.templates`): kept in Meta's creation
format, their shape derived once when built, and checked at send by the same
rules the gateway applies at accept. A status change (a created template
approved after the delay, or an operator's pause, unpause, disable or rejection)
is recorded as a `TemplateEvent` for the webhook sender to report as Meta's
`message_template_status_update`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from wagate.domain.errors import (
    INVALID_PARAMETER,
    TEMPLATE_NOT_FOUND,
    GraphError,
    invalid_parameter,
)
from wagate.domain.requests import LANGUAGE_CODE_PATTERN, TEMPLATE_NAME_PATTERN
from wagate.domain.templates import (
    ParameterFormat,
    Template,
    template_from_meta,
    template_json,
    with_status,
)

Category = Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
Status = Literal["APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED"]
# What the operator's `POST /_templates/{waba_id}` may set.
SettableStatus = Literal["APPROVED", "PAUSED", "DISABLED", "REJECTED"]

CATEGORIES: Final = ("MARKETING", "UTILITY", "AUTHENTICATION")
_NAME = re.compile(TEMPLATE_NAME_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_CODE_PATTERN)
# Meta's template ids are long numbers, unique across WABAs.
_ids = itertools.count(1_100_000_000_000_001)
# Template events kept for the webhook sender; beyond it the oldest are dropped.
MAX_EVENTS: Final = 10_000
# Meta's words for a pause, an unpause and a disable (its webhook's `other_info`).
_PAUSES: Final = (
    (
        "FIRST_PAUSE",
        "Your WhatsApp message template has been paused for 3 hours because it had issues.",
    ),
    (
        "SECOND_PAUSE",
        "Your WhatsApp message template has been paused for 6 hours because it"
        " continued to have issues.",
    ),
)
_UNPAUSE: Final = ("UNPAUSE", "Your WhatsApp message template has been unpaused.")
_DISABLE: Final = (
    "DISABLED",
    "Your WhatsApp message template has been disabled because it continued to have issues.",
)


@dataclass(frozen=True, slots=True)
class TemplateEvent:
    """A template's status change, as Meta's `message_template_status_update` reports it."""

    waba_id: str
    at: float
    event: str  # APPROVED, PAUSED, DISABLED, REJECTED
    template_id: str
    name: str
    language: str
    category: str
    reason: str
    # `other_info` of a pause, an unpause or a disable
    title: str | None = None
    description: str | None = None


@dataclass(slots=True)
class TemplateRecord:
    """One template of one WABA: the domain template, when it approves itself, its pauses."""

    template: Template
    # When a PENDING template becomes APPROVED; None stays PENDING.
    approve_at: float | None = None
    # How often an operator paused it (the first pause is 3 h at Meta, the second 6 h).
    pauses: int = 0

    @property
    def id(self) -> str:
        """Meta's template id."""
        return self.template.id

    @property
    def name(self) -> str:
        """The template's name."""
        return self.template.name

    @property
    def language(self) -> str:
        """The template's language code."""
        return self.template.language

    @property
    def category(self) -> str:
        """MARKETING, UTILITY or AUTHENTICATION."""
        return self.template.category

    @property
    def status(self) -> str:
        """APPROVED, PENDING, REJECTED, PAUSED or DISABLED."""
        return self.template.status

    @status.setter
    def status(self, status: str) -> None:
        self.template = with_status(self.template, status)

    @property
    def components(self) -> list[dict[str, Any]]:
        """The components in Meta's creation format."""
        return list(self.template.components)

    @property
    def parameter_format(self) -> ParameterFormat:
        """POSITIONAL or NAMED."""
        return self.template.parameter_format

    def due(self, now: float) -> bool:
        """Whether the template is PENDING and its approval time has passed."""
        return self.status == "PENDING" and self.approve_at is not None and now >= self.approve_at

    def to_json(self, fields: frozenset[str] | None = None) -> dict[str, Any]:
        """Meta's JSON for the template, restricted to `fields` (plus `id`) when given."""
        full = template_json(self.template)
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


def new_template(
    name: str,
    language: str,
    category: str,
    status: str,
    components: list[dict[str, Any]],
    parameter_format: ParameterFormat | None = None,
    approve_at: float | None = None,
) -> TemplateRecord:
    """A template record with a fresh id; ValueError if Meta would not accept the template.

    The parameter format is inferred when not given.
    """
    entry: dict[str, Any] = {
        "id": str(next(_ids)),
        "name": name,
        "language": language,
        "category": category,
        "status": status,
        "components": components,
    }
    if parameter_format is not None:
        entry["parameter_format"] = parameter_format
    return TemplateRecord(template_from_meta(entry), approve_at=approve_at)


# A body of exactly 1,000 characters besides its one parameter: a parameter of 24
# characters fills Meta's 1,024, one of 25 is refused with 132005.
LONG_PROMO_TEXT: Final = (
    "Dear {{1}}, "
    + " ".join(["Our whole store is on sale this week, with new arrivals every day."] * 14)
    + " Reply STOP at any time to stop receiving these updates."
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
        # Seeds added for the send checks of issue 10 (media header, carousel, hydrated
        # length, a named header); the six above are unchanged.
        new_template(
            "image_promo",
            "en_US",
            "MARKETING",
            "APPROVED",
            [
                _media_header("IMAGE", "https://shop.example/spring.jpg"),
                _body("Hi {{1}}, our spring collection is here.", {"body_text": [["Pablo"]]}),
            ],
        ),
        new_template(
            "carousel_promo",
            "en_US",
            "MARKETING",
            "APPROVED",
            [
                _body("Picked for you this week."),
                {
                    "type": "CAROUSEL",
                    "cards": [
                        _card("sneakers", "Sneakers from {{1}}.", "$49"),
                        _card("jackets", "Jackets from {{1}}.", "$89"),
                    ],
                },
            ],
        ),
        new_template(
            "long_promo",
            "en_US",
            "MARKETING",
            "APPROVED",
            [_body(LONG_PROMO_TEXT, {"body_text": [["Pablo"]]})],
        ),
        new_template(
            "named_header_offer",
            "en_US",
            "MARKETING",
            "APPROVED",
            [
                {
                    "type": "HEADER",
                    "format": "TEXT",
                    "text": "{{brand}} week",
                    "example": {
                        "header_text_named_params": [{"param_name": "brand", "example": "Acme"}]
                    },
                },
                _body(
                    "Hi {{first_name}}, take {{discount}} off all week.",
                    {
                        "body_text_named_params": [
                            {"param_name": "first_name", "example": "Pablo"},
                            {"param_name": "discount", "example": "15%"},
                        ]
                    },
                ),
            ],
            parameter_format="NAMED",
        ),
    ]


def _media_header(media_format: str, example: str) -> dict[str, Any]:
    return {"type": "HEADER", "format": media_format, "example": {"header_handle": [example]}}


def _card(slug: str, text: str, example: str) -> dict[str, Any]:
    """A carousel card: an image, a body with one parameter, a quick reply and a dynamic URL."""
    return {
        "components": [
            _media_header("IMAGE", f"https://shop.example/{slug}.jpg"),
            _body(text, {"body_text": [[example]]}),
            {
                "type": "BUTTONS",
                "buttons": [
                    {"type": "QUICK_REPLY", "text": "More like this"},
                    {
                        "type": "URL",
                        "text": "Shop",
                        "url": "https://shop.example/p/{{1}}",
                        "example": [f"https://shop.example/p/{slug}"],
                    },
                ],
            },
        ]
    }


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


class TemplateStore:
    """Every WABA's templates, seeded lazily on a WABA's first use."""

    def __init__(
        self,
        approval_delay: float,
        *,
        max_wabas: int = 10_000,
        max_per_waba: int = 250,
        max_created: int = 10_000,
        record_events: bool = False,
    ) -> None:
        """An empty store; created templates are approved after `approval_delay` seconds.

        At most `max_wabas` WABAs are seeded, each holds at most `max_per_waba`
        templates, and at most `max_created` are created in all. With
        `record_events` (a webhook URL is set) every status change is kept for
        `take_events`, and `approve_due` approves templates on time without a read.
        """
        self.approval_delay = approval_delay
        self.max_wabas = max_wabas
        self.max_per_waba = max_per_waba
        self.max_created = max_created
        self.record_events = record_events
        self.created = 0
        # waba_id -> (name, language) -> template, in creation order
        self._wabas: dict[str, dict[tuple[str, str], TemplateRecord]] = {}
        # Created templates by approval time (a constant delay keeps creation order sorted).
        self._approvals: deque[tuple[str, TemplateRecord]] = deque()
        self._events: deque[TemplateEvent] = deque(maxlen=MAX_EVENTS)

    def clear(self) -> None:
        """Forget every WABA and pending event; the next access seeds a WABA again."""
        self._wabas.clear()
        self._approvals.clear()
        self._events.clear()
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
        if template is not None and template.due(now):
            self._approve(waba_id, template, now)
        return template

    def list(self, waba_id: str, now: float) -> list[TemplateRecord]:
        """All templates of a WABA, oldest first."""
        templates = list(self._of(waba_id).values())
        for template in templates:
            if template.due(now):
                self._approve(waba_id, template, now)
        return templates

    def approve_due(self, now: float) -> None:
        """Approve every created template whose approval time has passed, read or not."""
        approvals = self._approvals
        while approvals:
            waba_id, template = approvals[0]
            if template.approve_at is not None and template.approve_at > now:
                break
            approvals.popleft()
            if (
                template.due(now)
                and self._wabas.get(waba_id, {}).get((template.name, template.language)) is template
            ):
                self._approve(waba_id, template, now)

    def _approve(self, waba_id: str, template: TemplateRecord, now: float) -> None:
        template.approve_at = None
        self._change(waba_id, template, "APPROVED", now, None)

    def take_events(self) -> tuple[TemplateEvent, ...]:
        """The status changes not yet reported, oldest first."""
        events = tuple(self._events)
        self._events.clear()
        return events

    def set_status(
        self,
        waba_id: str,
        name: str,
        language: str,
        status: SettableStatus,
        reason: str | None,
        now: float,
    ) -> tuple[TemplateRecord, TemplateEvent | None]:
        """An operator's status change (None: the template had that status already).

        Meta's events: PAUSED (`other_info` FIRST_PAUSE, then SECOND_PAUSE), APPROVED
        (after a pause: `other_info` UNPAUSE), DISABLED, REJECTED.
        """
        template = self._of(waba_id).get((name, language))
        if template is None:
            raise GraphError(
                TEMPLATE_NOT_FOUND, f"template name ({name}) does not exist in {language}"
            )
        if template.due(now):
            self._approve(waba_id, template, now)
        if template.status == status:
            return template, None
        # An operator's decision ends a pending review.
        template.approve_at = None
        return template, self._change(waba_id, template, status, now, reason)

    def _change(
        self, waba_id: str, template: TemplateRecord, status: str, now: float, reason: str | None
    ) -> TemplateEvent:
        title: tuple[str, str] | None = None
        if status == "PAUSED":
            title = _PAUSES[min(template.pauses, len(_PAUSES) - 1)]
            template.pauses += 1
        elif status == "APPROVED" and template.status == "PAUSED":
            title = _UNPAUSE
        elif status == "DISABLED":
            title = _DISABLE
        if reason is None:
            # Meta's reason is a rejection's cause, "NONE" for every other change.
            reason = "INVALID_FORMAT" if status == "REJECTED" else "NONE"
        template.status = status
        event = TemplateEvent(
            waba_id=waba_id,
            at=now,
            event=status,
            template_id=template.id,
            name=template.name,
            language=template.language,
            category=template.category,
            reason=reason,
            title=title[0] if title else None,
            description=title[1] if title else None,
        )
        if self.record_events:
            self._events.append(event)
        return event

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
        try:
            template = new_template(
                create.name,
                create.language,
                create.category,
                "PENDING",
                create.components,
                parameter_format=create.parameter_format,
                approve_at=now + self.approval_delay,
            )
        except ValueError as exc:
            raise invalid_parameter(f"Invalid template: {exc}") from None
        templates[(template.name, template.language)] = template
        self.created += 1
        if self.record_events:
            self.approve_due(now)  # keeps the queue to the templates still in review
            self._approvals.append((waba_id, template))
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
        # Deleting a seeded template frees a slot too: still bounded (10 seeds per WABA).
        self.created = max(0, self.created - len(doomed))
        return len(doomed)
