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


# Longer than any number typed with spaces and brackets; refused before any parsing.
MAX_TO_LENGTH = 64
_NOT_DIGITS = re.compile(r"[^0-9]")


def normalise_phone(raw: str) -> str:
    """The E.164 digits (Meta's `wa_id`) of a typed phone number, or a 131009 error.

    Numbers are international: without a leading `+` the digits are read as
    country code plus number (Meta's rule for `to`); a leading `00` is the
    international call prefix.
    """
    if len(raw) > MAX_TO_LENGTH:
        raise invalid_value(
            f"Parameter `to` is longer than {MAX_TO_LENGTH} characters; send a phone number"
        )
    text = raw.strip()
    if text.isascii() and text.isdigit():  # already digits, as most API clients send it
        digits = text
    elif _TYPED_PHONE.match(text):
        digits = _NOT_DIGITS.sub("", text)
    else:
        raise invalid_value(f"Parameter `to` is not a phone number: {raw!r}")
    if not text.startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    if digits.startswith("0"):
        # No country code starts with 0: this is a number as dialled at home (07700 900123).
        raise invalid_value(
            f"Parameter `to` looks like a local number without its country code: {raw!r}; "
            "send it in international (E.164) form, e.g. +44 7700 900123 for 07700 900123"
        )
    try:
        return _e164(digits)
    except (phonenumbers.NumberParseException, ValueError):
        raise invalid_value(
            f"Parameter `to` is not a possible phone number: {raw!r}; "
            "send it with its country code, e.g. +44 7700 900123"
        ) from None


# Parsing costs ~15 us and the same recipients recur across campaigns and retries.
# Keyed on the digits (at most 64), not on what was typed: memory stays bounded and
# `+44 7700 900123` and `447700900123` share one entry.
@lru_cache(maxsize=65_536)
def _e164(digits: str) -> str:
    parsed = phonenumbers.parse("+" + digits, None)
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(digits)
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
