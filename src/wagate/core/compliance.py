"""What a new send must pass before it is stored: its template, and its recipient.

Each check answers from this process's memory (`core.templates` and
`core.recipients` say how each is kept current), so the send path costs no database
read for them.
"""

from __future__ import annotations

from wagate.core.recipients import RecipientBook
from wagate.core.templates import TemplateBook
from wagate.domain.model import KeyOwner, PhoneNumber
from wagate.domain.recipients import Recipient
from wagate.domain.requests import MarketingMessageRequest


class SendChecks:
    """The acceptor's `SendChecks`: opt-outs and limits first, then the template."""

    def __init__(
        self, templates: TemplateBook | None = None, recipients: RecipientBook | None = None
    ) -> None:
        """Check sends against `templates` and `recipients` (None: that check is off)."""
        self.templates = templates
        self.recipients = recipients

    async def check(
        self,
        number: PhoneNumber,
        request: MarketingMessageRequest,
        recipient: Recipient,
        owner: KeyOwner | None,
    ) -> None:
        """Raise the GraphError Meta would answer this send with; return if it may go."""
        if self.recipients is not None:
            policy = owner.marketing_limit if owner is not None else "hold"
            await self.recipients.check(number.waba_id, recipient.address, policy)
        if self.templates is not None:
            await self.templates.check(number, request.template)
