"""The send checks' templates: each WABA's, in this process's memory, kept current.

A send is checked against its template before it is stored (issue 10): Meta's own
answer, at once, instead of a `failed` webhook later. The checks read memory only;
what fills it:

- **first use of a WABA**: its stored rows (another process may have listed them; if
  older than `refresh_s`, listed again behind that send), or, when none are, a listing
  from the upstream (all pages), stored for every process. A send waits for that first
  listing at most `wait_s`; past that it gets 134101 ("template still syncing"), as Meta
  answers while it loads a new template, never a false 132001.
- **a miss** (a name not known, or known but not APPROVED yet): the WABA is listed
  again, at most once per `miss_s` per WABA, so a flood of bad names costs the upstream
  one call per `miss_s`, not one per send.
- **Meta's template webhooks** (`message_template_status_update`, category and quality
  updates): applied in the ingesting process at once, and stored.
- **every `poll_s`**: the rows any process wrote since the last look (a pause another
  process ingested, a listing it made), for the WABAs this process holds.
- **every `refresh_s`** after its listing, the next send of a WABA lists it again in
  the background.

When the upstream cannot list a WABA that has nothing stored (Meta down, a token
without the permission), the sends of that WABA are not checked here: the upstream
checks them when they leave, as it would have without this cache. The failure is
logged, and the listing is tried again after `retry_s`.

Memory is bounded: at most `max_wabas` WABAs are held (the least recently used is
dropped, and read again from the database on its next send).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wagate.domain.errors import TEMPLATE_SYNCING, GraphError
from wagate.domain.model import PhoneNumber
from wagate.domain.requests import Template as TemplateObject
from wagate.domain.template_events import TemplateUpdate
from wagate.domain.templates import (
    Template,
    check_components,
    check_template,
    template_from_meta,
)
from wagate.ports import Clock, Templates, TemplateSource, TemplatesUnavailable

log = logging.getLogger("wagate.templates")

# How far back each poll looks before its last look: clocks of the machines that write
# the rows may be this far apart.
POLL_OVERLAP_MS = 10_000


# What a listing may have changed since: a name not known, deleted, or still in review. A
# PAUSED, DISABLED or REJECTED template is what Meta says it is (its webhooks say when not).
_MAY_APPEAR = frozenset({"PENDING", "DELETED", "IN_APPEAL"})


@dataclass(frozen=True, slots=True)
class TemplateSettings:
    """How the book fills and refreshes."""

    refresh_s: float = 300.0
    miss_s: float = 30.0
    wait_s: float = 5.0
    retry_s: float = 30.0
    poll_s: float = 1.0
    max_wabas: int = 10_000


@dataclass(slots=True)
class _Waba:
    """One WABA's templates as this process knows them."""

    templates: dict[tuple[str, str], Template] = field(default_factory=dict)
    # When the upstream last listed them (the process's clock, seconds); None: never.
    listed_at: float | None = None
    # Whether anything is known (a listing, or stored rows); False: sends go unchecked.
    known: bool = False
    # Not before this time: the next listing after a miss, or after a failure.
    next_listing_at: float = 0.0
    listing: asyncio.Task[None] | None = None
    # When the last listing was taken in (the process's clock): a poll that read the
    # store before then may hold rows older than it, and leaves this WABA to the next.
    held_at: float = -math.inf


class TemplateBook:
    """Every WABA's templates this process checks sends against."""

    def __init__(
        self,
        store: Templates,
        source: TemplateSource,
        clock: Clock,
        base_url_of: Callable[[PhoneNumber], str],
        version: str,
        settings: TemplateSettings | None = None,
    ) -> None:
        """Templates stored in `store`, listed from `source` at `base_url_of(number)`."""
        self.store = store
        self.source = source
        self.clock = clock
        self.base_url_of = base_url_of
        self.version = version
        self.settings = settings or TemplateSettings()
        self._wabas: OrderedDict[str, _Waba] = OrderedDict()
        self._loading: dict[str, asyncio.Task[_Waba]] = {}
        self._last_poll_ms: int | None = None
        self.listings = 0

    # ---- the send check --------------------------------------------------------------

    async def check(self, number: PhoneNumber, template: TemplateObject) -> None:
        """Raise Meta's GraphError for a send `template` its WABA refuses; else return."""
        name, language = template.name, template.language.code
        waba = await self._waba(number)
        if waba.listed_at is None or self.clock.now() - waba.listed_at >= self.settings.refresh_s:
            self._list_in_background(number, waba)
        if not waba.known:
            return
        found = waba.templates.get((name, language))
        if found is None or found.status in _MAY_APPEAR:
            waba = await self._listed_on_miss(number, waba)
            found = waba.templates.get((name, language))
        check_components(check_template(found, name, language), list(template.components or []))

    async def _waba(self, number: PhoneNumber) -> _Waba:
        waba = self._wabas.get(number.waba_id)
        if waba is not None:
            self._wabas.move_to_end(number.waba_id)
            return waba
        loading = self._loading.get(number.waba_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(number))
            self._loading[number.waba_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(number.waba_id, None))
        try:
            return await asyncio.wait_for(asyncio.shield(loading), self.settings.wait_s)
        except TimeoutError:
            raise _syncing(number.waba_id) from None

    async def _load(self, number: PhoneNumber) -> _Waba:
        """The stored rows (a stale listing is listed again behind the next send, see
        `check`), or a first listing from the upstream when nothing is stored."""
        waba = _Waba()
        stored, synced_at_ms = await self.store.templates_of(number.waba_id)
        if synced_at_ms:  # 0: a webhook found the listing stale
            waba.listed_at = min(self.clock.now(), synced_at_ms / 1000)
            waba.next_listing_at = waba.listed_at + self.settings.miss_s
        if stored:
            waba.templates = {(t.name, t.language): t for t in stored}
            waba.known = True
        else:
            await self._list(number, waba)
        self._hold(number.waba_id, waba)
        return waba

    def _hold(self, waba_id: str, waba: _Waba) -> None:
        self._wabas[waba_id] = waba
        self._wabas.move_to_end(waba_id)
        while len(self._wabas) > self.settings.max_wabas:
            self._wabas.popitem(last=False)

    async def _listed_on_miss(self, number: PhoneNumber, waba: _Waba) -> _Waba:
        """After a miss, the WABA listed again unless it was listed within `miss_s`."""
        if waba.listing is None or waba.listing.done():
            if self.clock.now() < waba.next_listing_at:
                return waba
            waba.listing = asyncio.ensure_future(self._list(number, waba))
        try:
            await asyncio.wait_for(asyncio.shield(waba.listing), self.settings.wait_s)
        except TimeoutError:
            raise _syncing(number.waba_id) from None
        return waba

    def _list_in_background(self, number: PhoneNumber, waba: _Waba) -> None:
        if (
            waba.listing is None or waba.listing.done()
        ) and self.clock.now() >= waba.next_listing_at:
            waba.listing = asyncio.ensure_future(self._list(number, waba))

    async def _list(self, number: PhoneNumber, waba: _Waba) -> None:
        """List the WABA's templates from the upstream into `waba` and the store; never
        raises (a failure is logged and tried again after `retry_s`)."""
        now = self.clock.now()
        waba.next_listing_at = now + self.settings.miss_s
        try:
            listed = await self._fetch(number, now)
        except Exception as exc:
            waba.next_listing_at = now + self.settings.retry_s
            log.warning(
                "templates of WABA %s could not be listed (%s); %s; trying again in %.0f s",
                number.waba_id,
                exc if isinstance(exc, TemplatesUnavailable) else type(exc).__name__,
                "sends are checked against the last listing"
                if waba.known
                else "its sends are not checked here until they can",
                self.settings.retry_s,
            )
            return
        _hold_listing(waba, listed, now, self.clock.now())

    async def _fetch(self, number: PhoneNumber, now: float) -> list[Template]:
        """The WABA's templates from the upstream, stored for every process."""
        self.listings += 1
        entries = await self.source.list_templates(
            self.base_url_of(number), self.version, number.waba_id, number.access_token
        )
        listed = _templates(number.waba_id, entries)
        await self.store.replace_templates(number.waba_id, listed, int(now * 1000))
        return listed

    # ---- keeping current -------------------------------------------------------------

    async def sync(self, number: PhoneNumber) -> list[Template]:
        """List the WABA of `number` now (`wagate templates sync`); raises
        TemplatesUnavailable when the upstream cannot."""
        waba = self._wabas.get(number.waba_id)
        if waba is not None:
            await _listing_in_flight(waba)
        now = self.clock.now()
        listed = await self._fetch(number, now)
        waba = self._wabas.get(number.waba_id)
        if waba is not None:
            _hold_listing(waba, listed, now, self.clock.now())
        return listed

    async def listing(self, number: PhoneNumber) -> list[Template]:
        """The WABA's templates as held (listed first if it never was), DELETED left out."""
        waba = await self._waba(number)
        return [t for t in waba.templates.values() if t.status != "DELETED"]

    async def refresh(self, number: PhoneNumber) -> None:
        """List the WABA again now (after a creation or deletion through the gateway); a
        failure is logged, and the next send or poll catches up."""
        waba = self._wabas.get(number.waba_id)
        if waba is None:
            await self._waba(number)
            return
        await _listing_in_flight(waba)
        waba.listing = asyncio.ensure_future(self._list(number, waba))
        await asyncio.shield(waba.listing)

    def _take(self, waba_id: str, template: Template) -> None:
        """A template's new row, held if its WABA is."""
        waba = self._wabas.get(waba_id)
        if waba is not None:
            waba.templates[(template.name, template.language)] = template

    async def apply(self, updates: Sequence[TemplateUpdate], *, sandbox_only: bool = False) -> int:
        """Meta's template webhooks: stored, and applied here at once; how many changed.

        `sandbox_only`: the body was signed by the embedded sandbox, which may change
        only the templates of WABAs whose numbers all go to it."""
        if not updates:
            return 0
        now_ms = int(self.clock.now() * 1000)
        changed, stale = await self.store.update_templates(
            updates, now_ms, sandbox_only=sandbox_only
        )
        for waba_id, template in changed:
            self._take(waba_id, template)
            log.info(
                "template %s (%s) of WABA %s is now %s (%s)",
                template.name,
                template.language,
                waba_id,
                template.status,
                template.category,
            )
        for waba_id in stale:
            # An update of a template not listed yet: list the WABA at its next send.
            waba = self._wabas.get(waba_id)
            if waba is not None:
                waba.listed_at, waba.next_listing_at = None, 0.0
        return len(changed)

    async def poll(self) -> int:
        """Take in the rows other processes wrote since the last poll; how many."""
        read_at = self.clock.now()
        now_ms = int(read_at * 1000)
        since = now_ms if self._last_poll_ms is None else self._last_poll_ms
        rows = await self.store.changed_since(since - POLL_OVERLAP_MS)
        self._last_poll_ms = now_ms
        taken = 0
        for waba_id, template in rows:
            waba = self._wabas.get(waba_id)
            if (
                waba is not None
                # A listing taken in while the rows were read may be newer than they are
                # (a template deleted through the gateway): the next poll reads again.
                and waba.held_at <= read_at
                and waba.templates.get((template.name, template.language)) != template
            ):
                waba.templates[(template.name, template.language)] = template
                taken += 1
        return taken

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every `poll_s` until `stop` is set."""
        while not stop.is_set():
            try:
                await self.poll()
            except Exception as exc:  # the database is down: the next poll catches up
                log.warning("template changes not read (%s); reading again", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.poll_s)


async def _listing_in_flight(waba: _Waba) -> None:
    """Until the WABA's listing in flight, if any, has landed: one asked before a change
    must not land after the listing that follows it."""
    if waba.listing is not None and not waba.listing.done():
        await asyncio.shield(waba.listing)


def _hold_listing(waba: _Waba, listed: Sequence[Template], at: float, now: float) -> None:
    """A WABA's templates are what the upstream listed at `at` (taken in at `now`)."""
    waba.templates = {(t.name, t.language): t for t in listed}
    waba.known = True
    waba.listed_at = at
    waba.held_at = now


def _templates(waba_id: str, entries: Sequence[object]) -> list[Template]:
    """The usable entries of a listing; a malformed one is logged and skipped."""
    found: list[Template] = []
    for entry in entries:
        try:
            if not isinstance(entry, dict):
                raise ValueError("not an object")
            found.append(template_from_meta(entry))
        except ValueError as exc:
            log.warning("WABA %s: a listed template is skipped (%s)", waba_id, exc)
    return found


def _syncing(waba_id: str) -> GraphError:
    return GraphError(
        TEMPLATE_SYNCING,
        f"The templates of WABA {waba_id} are still being loaded; retry in a few seconds",
    )
