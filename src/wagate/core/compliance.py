"""What a new send must pass before it is stored: its template, and its recipient.

Each check answers from this process's memory (`core.templates` and
`core.recipients` say how each is kept current), so the send path costs no database
read for them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from wagate.core.recipients import RecipientBook
from wagate.core.templates import TemplateBook
from wagate.domain.errors import FREQUENCY_CAP_REACHED, GraphError
from wagate.domain.model import KeyOwner, PhoneNumber
from wagate.domain.recipients import Recipient
from wagate.domain.requests import MarketingMessageRequest
from wagate.ports import Clock, FrequencyCaps

# The frequency cap's window: a rolling day.
CAP_WINDOW_MS = 24 * 3600 * 1000


class SendChecks:
    """The acceptor's `SendChecks`: opt-outs and limits first, then the template, then the
    project's frequency cap (last: a send refused otherwise does not count against it)."""

    def __init__(
        self,
        templates: TemplateBook | None = None,
        recipients: RecipientBook | None = None,
        caps: FrequencyCaps | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Check sends against `templates`, `recipients` and `caps` (None: that check is
        off; `caps` needs the `clock`)."""
        self.templates = templates
        self.recipients = recipients
        self.caps = caps
        self.clock = clock

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
        cap = owner.frequency_cap if owner is not None else None
        if cap is not None and self.caps is not None and self.clock is not None:
            # Counted before the message is stored: a commit that fails after this has
            # used one of the day's sends (the cap errs on the side of fewer messages).
            now_ms = int(self.clock.now() * 1000)
            next_at = await self.caps.take(
                number.project_id, recipient.address, cap, now_ms, CAP_WINDOW_MS
            )
            if next_at is not None:
                when = datetime.fromtimestamp(next_at / 1000, UTC).isoformat(timespec="seconds")
                raise GraphError(
                    FREQUENCY_CAP_REACHED,
                    f"Recipient {recipient.address} got {cap} marketing message(s) in the last"
                    f" 24 h, the project's frequency cap; the next may go at {when}",
                )
