"""Managing suppressions: what the management API and `wagate suppressions` do.

A suppression is a WABA's (Meta's opt-outs are per business account): the phone number
a caller names stands for its WABA, and every call may be scoped to a project (the API
key's), another project's number then looking missing, as everywhere. Recipients are
read as a send reads them (`domain.suppressions.parse_recipient`). What changed is told
to `on_change` after its commit, so this process's send path can learn it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wagate.core.access import MAX_PHONE_NUMBER_ID_LENGTH
from wagate.core.admin import AdminError, NumberNotFound
from wagate.domain.suppressions import (
    RESUME,
    STOP,
    InvalidRecipient,
    Suppression,
    parse_recipient,
    quoted,
)
from wagate.ports import Clock, Directory, SuppressionStore

log = logging.getLogger("wagate.suppressions")

DEFAULT_PAGE, MAX_PAGE = 20, 100
# Recipients one call may add: one transaction, one answer that lists every refusal.
MAX_IMPORT = 1_000

# (waba_id, [(recipient, "stop" | "resume"), ...]): the rows a call changed.
OnChange = Callable[[str, Sequence[tuple[str, str]]], None]


class BadRecipient(AdminError):
    """A recipient that is neither a phone number nor a BSUID."""


class SuppressionNotFound(AdminError):
    """The recipient is not suppressed (on the WABA of the number named)."""


@dataclass(frozen=True, slots=True)
class Added:
    """A suppression after an add; `added` False: it was suppressed already (since then)."""

    suppression: Suppression
    added: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """A recipient of an import that was not stored: its 0-based position and why."""

    index: int
    recipient: str
    error: str


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import did: newly suppressed, suppressed already, refused."""

    added: int
    already_suppressed: int
    invalid: list[Refused]


@dataclass(frozen=True, slots=True)
class Lifted:
    """What a removal did: recipients (normalised) lifted, and those not suppressed."""

    removed: list[str]
    not_suppressed: list[str]


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    """A page, newest first; `after` (since, recipient) asks for the next, older page."""

    suppressions: list[Suppression]
    after: tuple[int, str] | None


def check_recipient(raw: str) -> str:
    """A recipient as stored (E.164 digits or a BSUID), else BadRecipient saying why."""
    try:
        return parse_recipient(raw).address
    except InvalidRecipient as exc:
        raise BadRecipient(str(exc)) from None


def check_recipients(raws: Sequence[str]) -> list[str]:
    """Every recipient as stored, else BadRecipient naming the first bad one."""
    if not raws:
        raise AdminError("give at least one recipient")
    return [check_recipient(raw) for raw in raws]


def check_limit(limit: int) -> int:
    """A page size, 1 to MAX_PAGE, else an AdminError."""
    if not 1 <= limit <= MAX_PAGE:
        raise AdminError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


class SuppressionAdmin:
    """Add, lift, look up and list the suppressed recipients of a number's WABA."""

    def __init__(
        self,
        numbers: Directory,
        store: SuppressionStore,
        clock: Clock,
        *,
        on_change: OnChange | None = None,
    ) -> None:
        self._numbers = numbers
        self._store = store
        self._clock = clock
        self.on_change = on_change

    async def add(
        self, phone_number_id: str, recipient: str, *, project_id: str | None = None
    ) -> Added:
        """Suppress one recipient; one suppressed already stays so, since its first time."""
        address = check_recipient(recipient)
        waba_id = await self.waba_of(phone_number_id, project_id)
        added = await self._store.add_suppressions(waba_id, [address], self._now_ms())
        self._tell(waba_id, added, STOP)
        found = await self._store.get_suppression(waba_id, address)
        if found is None:  # lifted again between the two calls: answer what was done
            now = self._now_ms()
            found = Suppression(waba_id, address, now, now)
        return Added(found, bool(added))

    async def add_many(
        self, phone_number_id: str, recipients: Sequence[str], *, project_id: str | None = None
    ) -> Imported:
        """Suppress up to MAX_IMPORT recipients in one transaction; the invalid ones are
        reported by position and the rest stored."""
        if not 1 <= len(recipients) <= MAX_IMPORT:
            raise AdminError(f"an import holds 1 to {MAX_IMPORT} recipients, got {len(recipients)}")
        waba_id = await self.waba_of(phone_number_id, project_id)
        valid: list[str] = []
        invalid: list[Refused] = []
        for index, raw in enumerate(recipients):
            try:
                valid.append(check_recipient(raw))
            except BadRecipient as exc:
                shown = raw if len(raw) <= 200 else raw[:200] + "..."
                invalid.append(Refused(index, shown, str(exc)))
        added = await self._store.add_suppressions(waba_id, valid, self._now_ms()) if valid else []
        self._tell(waba_id, added, STOP)
        return Imported(len(added), len(valid) - len(added), invalid)

    async def remove(
        self, phone_number_id: str, recipient: str, *, project_id: str | None = None
    ) -> str:
        """Lift one recipient's suppression; its stored form. SuppressionNotFound if it
        was not suppressed."""
        lifted = await self.remove_many(phone_number_id, [recipient], project_id=project_id)
        if lifted.not_suppressed:
            raise SuppressionNotFound(
                f"recipient {quoted(recipient)} is not suppressed"
                f" (see `wagate suppressions list {phone_number_id}`)"
            )
        return lifted.removed[0]

    async def remove_many(
        self, phone_number_id: str, recipients: Sequence[str], *, project_id: str | None = None
    ) -> Lifted:
        """Lift the suppressions of these recipients (all valid, else BadRecipient and
        nothing changes), in one transaction."""
        if len(recipients) > MAX_IMPORT:
            raise AdminError(f"remove at most {MAX_IMPORT} recipients at once")
        addresses = list(dict.fromkeys(check_recipients(recipients)))
        waba_id = await self.waba_of(phone_number_id, project_id)
        removed = await self._store.remove_suppressions(waba_id, addresses, self._now_ms())
        self._tell(waba_id, removed, RESUME)
        lifted = set(removed)
        return Lifted(
            [a for a in addresses if a in lifted], [a for a in addresses if a not in lifted]
        )

    async def find(
        self, phone_number_id: str, recipient: str, *, project_id: str | None = None
    ) -> Suppression | None:
        """One recipient's suppression, if it is suppressed."""
        address = check_recipient(recipient)
        waba_id = await self.waba_of(phone_number_id, project_id)
        return await self._store.get_suppression(waba_id, address)

    async def page(
        self,
        phone_number_id: str,
        *,
        limit: int = DEFAULT_PAGE,
        after: tuple[int, str] | None = None,
        project_id: str | None = None,
    ) -> SuppressionPage:
        """A page of the suppressions of the number's WABA, newest first."""
        check_limit(limit)
        waba_id = await self.waba_of(phone_number_id, project_id)
        found = await self._store.list_suppressions(waba_id, limit=limit, after=after)
        last = found[-1] if len(found) == limit else None
        return SuppressionPage(found, None if last is None else (last.since, last.recipient))

    async def waba_of(self, phone_number_id: str, project_id: str | None = None) -> str:
        """The WABA of a number (with `project_id`: only of that project's), else
        NumberNotFound."""
        # No stored id has a NUL (PostgreSQL text cannot hold one) or is that long.
        usable = (
            "\x00" not in phone_number_id and len(phone_number_id) <= MAX_PHONE_NUMBER_ID_LENGTH
        )
        number = await self._numbers.get_phone_number(phone_number_id) if usable else None
        if number is None or (project_id is not None and number.project_id != project_id):
            raise NumberNotFound(f"no phone number {phone_number_id!r} (see `wagate numbers list`)")
        return number.waba_id

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    def _tell(self, waba_id: str, recipients: Sequence[str], value: str) -> None:
        """Tell `on_change` what a commit changed. Its failure is logged, not raised: the
        change is stored, and failing the caller would only have it retry what is done."""
        if self.on_change is None or not recipients:
            return
        try:
            self.on_change(waba_id, [(recipient, value) for recipient in recipients])
        except Exception:
            log.exception("on_change failed after a suppression change of WABA %s", waba_id)
