"""Suppressions: recipients of a WABA who must not get marketing messages.

Meta's opt-outs (`user_preferences` webhooks, value `stop`/`resume`) are per business
account, and so is a suppression an operator adds: the `suppressions` table holds
both, the newest `timestamp` of a recipient deciding. A recipient is kept as a send
keeps it (`domain.recipients`): a phone number's E.164 digits (Meta's `wa_id`) or a
BSUID, so a typed `+44 7700 900123` and Meta's `447700900123` are one recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from wagate.domain.errors import GraphError
from wagate.domain.recipients import Recipient, RecipientKind, resolve_recipient
from wagate.domain.requests import BSUID_PATTERN

Preference = Literal["stop", "resume"]
STOP: Preference = "stop"
RESUME: Preference = "resume"

_BSUID = re.compile(BSUID_PATTERN)
# What an error message quotes of a refused recipient: enough to find it, never a flood.
QUOTED_CHARS = 80


@dataclass(frozen=True, slots=True)
class Suppression:
    """A suppressed recipient of a WABA; `since`: the stop's time (Unix ms)."""

    waba_id: str
    recipient: str
    since: int
    updated_at: int

    @property
    def kind(self) -> RecipientKind:
        """`bsuid` for a business-scoped user id, else `phone`."""
        return recipient_kind(self.recipient)


class InvalidRecipient(ValueError):
    """A recipient that is neither a phone number nor a BSUID; says which and why."""


def recipient_kind(address: str) -> RecipientKind:
    """What a stored recipient is: a BSUID or a phone number's digits."""
    return "bsuid" if _BSUID.match(address) else "phone"


def quoted(raw: str) -> str:
    """A recipient as an error message shows it: `repr`, cut short."""
    return repr(raw if len(raw) <= QUOTED_CHARS else raw[:QUOTED_CHARS] + "...")


def parse_recipient(raw: str) -> Recipient:
    """A recipient as a send would take it: a BSUID as given (`recipient`), anything else
    as a typed phone number (`to`), normalised to its digits; else InvalidRecipient."""
    text = raw.strip()
    try:
        if _BSUID.match(text):
            return resolve_recipient(None, text)
        return resolve_recipient(text, None)
    except GraphError as exc:
        raise InvalidRecipient(
            f"recipient {quoted(raw)} is neither a phone number with its country code"
            " (e.g. +44 7700 900123) nor a BSUID (e.g. US.13491208655302741918): "
            + exc.details.replace("Parameter `to` ", "it ")
        ) from None
