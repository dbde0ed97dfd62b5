"""What Meta's template webhooks say about a template, and the status each event leaves it in.

Three fields of the WABA's webhooks change a template (API-FACTS section 3):
`message_template_status_update` (an `event` such as APPROVED, PAUSED, DISABLED),
`template_category_update` (`new_category`) and `message_template_quality_update`
(`new_quality_score`). Each becomes one `TemplateUpdate` of the template named by its
id, name and language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The status a template is in after each event; an event missing here (FLAGGED,
# IN_APPEAL, LIMIT_EXCEEDED) does not change whether it can be sent.
STATUS_AFTER: Final = {
    "APPROVED": "APPROVED",
    "REINSTATED": "APPROVED",
    "PENDING": "PENDING",
    "REJECTED": "REJECTED",
    "PAUSED": "PAUSED",
    "DISABLED": "DISABLED",
    "ARCHIVED": "ARCHIVED",
    "LOCKED": "LOCKED",
    "DELETED": "DELETED",
    "PENDING_DELETION": "DELETED",
}
TEMPLATE_FIELDS: Final = frozenset(
    {
        "message_template_status_update",
        "template_category_update",
        "message_template_quality_update",
    }
)


@dataclass(frozen=True, slots=True)
class TemplateUpdate:
    """One change of one template of a WABA; None: that attribute is unchanged."""

    waba_id: str
    template_id: str
    name: str | None
    language: str | None
    status: str | None = None
    category: str | None = None
    quality: str | None = None
    at_ms: int = 0


def status_after(event: str) -> str | None:
    """The status an event of `message_template_status_update` leaves a template in."""
    return STATUS_AFTER.get(event.upper())
