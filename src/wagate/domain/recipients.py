"""Who a message goes to: a phone number parsed the way people type it, or a BSUID."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import phonenumbers

from wagate.domain.errors import MISSING_PARAMETER, GraphError, invalid_value

RecipientKind = Literal["phone", "bsuid"]

# What people type around the digits: spaces, dashes, dots, brackets, a leading plus.
_TYPED_PHONE = re.compile(r"^\+?[0-9 ()./\-]+$")


@dataclass(frozen=True, slots=True)
class Recipient:
    """A recipient as sent (`input`) and normalised (`address`: E.164 digits or the BSUID)."""

    input: str
    address: str
    kind: RecipientKind


# Parsing costs ~15 us; the same recipients recur across campaigns and retries.
@lru_cache(maxsize=65_536)
def normalise_phone(raw: str) -> str:
    """The E.164 digits (Meta's `wa_id`) of a typed phone number, or a 131009 error.

    Numbers are international: without a leading `+` the digits are read as
    country code plus number (Meta's rule for `to`); a leading `00` is the
    international call prefix.
    """
    text = raw.strip()
    if not _TYPED_PHONE.match(text):
        raise invalid_value(f"Parameter `to` is not a phone number: {raw!r}")
    digits = "".join(ch for ch in text if ch.isdigit())
    if not text.startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException as exc:
        raise invalid_value(f"Parameter `to` is not a phone number: {raw!r} ({exc})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise invalid_value(
            f"Parameter `to` is not a possible phone number: {raw!r}; "
            "send it with its country code, e.g. +44 7700 900123"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]


def resolve_recipient(to: str | None, recipient: str | None) -> Recipient:
    """The recipient of a send: `to` wins over `recipient`; one of them is required."""
    if to is not None:
        return Recipient(input=to, address=normalise_phone(to), kind="phone")
    if recipient is not None:
        return Recipient(input=recipient, address=recipient, kind="bsuid")
    raise GraphError(
        MISSING_PARAMETER,
        "Parameter `to` is required (or `recipient` with a BSUID for BSUID sends)",
    )
