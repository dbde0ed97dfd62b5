"""What a new send must pass before it is stored: its template, and its recipient.

Each check answers from this process's memory (see `core.templates` for how the
templates there are kept current), so the send path costs no database read for it.
"""

from __future__ import annotations

from wagate.core.templates import TemplateBook
from wagate.domain.model import PhoneNumber
from wagate.domain.recipients import Recipient
from wagate.domain.requests import MarketingMessageRequest


class SendChecks:
    """The `SendChecks` of the acceptor: templates (when a book is given)."""

    def __init__(self, templates: TemplateBook | None = None) -> None:
        """Check sends against `templates` (None: no template checks)."""
        self.templates = templates

    async def check(
        self, number: PhoneNumber, request: MarketingMessageRequest, recipient: Recipient
    ) -> None:
        """Raise the GraphError Meta would answer this send with; return if it may go."""
        if self.templates is not None:
            await self.templates.check(number, request.template)
