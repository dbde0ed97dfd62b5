"""Who may not get a marketing message now: opt-outs and Meta's per-user limits, in memory.

Read at every send (issue 10): a recipient who stopped marketing messages (Meta's
`user_preferences` stop, a 131050 failure, or the project's own suppression list) is
refused with 131050 until a `resume`; one Meta limited (131049) is refused with 131049
for 24 h when the project says `refuse` (with `hold`, the default, the send is stored
and the queue holds it until the 24 h have passed).

What fills memory: every stored opt-out and live limit when the process starts (a
send waits for that first read), then every `poll_s` the rows any process wrote since
the last read; what this process writes itself (its ingest, the suppression API) is
told at once through `note_*`. Past `max_entries` held, the book stops holding and asks
the database at each send (a primary-key read): correct, only slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wagate.domain.errors import HEALTHY_ECOSYSTEM, MARKETING_OPT_OUT, GraphError
from wagate.ports import Clock, RecipientStates

log = logging.getLogger("wagate.recipients")

# How far back each poll looks before its last read (writers' clocks may differ).
POLL_OVERLAP_MS = 10_000


@dataclass(frozen=True, slots=True)
class RecipientSettings:
    """How often the book reads changes, and how much it holds."""

    poll_s: float = 1.0
    max_entries: int = 5_000_000


class RecipientBook:
    """Opt-outs and limits of every WABA's recipients, as this process knows them."""

    def __init__(
        self, store: RecipientStates, clock: Clock, settings: RecipientSettings | None = None
    ) -> None:
        """The book of `store`'s rows."""
        self.store = store
        self.clock = clock
        self.settings = settings or RecipientSettings()
        self._stopped: set[tuple[str, str]] = set()
        self._limited: dict[tuple[str, str], int] = {}
        self._loaded: asyncio.Task[None] | None = None
        self._last_read_ms: int | None = None
        # Whether everything stored has been read once (sends wait for that).
        self._read_once = False
        self.overflow = False

    async def check(self, waba_id: str, recipient: str, marketing_limit: str) -> None:
        """Raise 131050 for an opted-out recipient, 131049 for a limited one when the
        project refuses (`marketing_limit == "refuse"`); else return."""
        await self._ready()
        key = (waba_id, recipient)
        now_ms = int(self.clock.now() * 1000)
        if self.overflow:
            stopped, until = await self.store.recipient_state(waba_id, recipient)
        else:
            stopped, until = key in self._stopped, self._limited.get(key)
        if stopped:
            raise GraphError(
                MARKETING_OPT_OUT,
                f"Recipient {recipient} has stopped marketing messages from this business"
                " (an opt-out is lifted only by the user's resume, or by removing the"
                " suppression)",
            )
        if until is not None and until > now_ms and marketing_limit == "refuse":
            hours = (until - now_ms) / 3_600_000
            raise GraphError(
                HEALTHY_ECOSYSTEM,
                f"Meta limited marketing messages to {recipient} (131049); the project refuses"
                f" new sends to them for another {hours:.1f} h",
            )

    async def _ready(self) -> None:
        """After the first read (started, or started again after a failure, here)."""
        if self._read_once:
            return  # the send path's case: no future, no shield
        loaded = self._loaded
        if loaded is None or (loaded.done() and (loaded.cancelled() or loaded.exception())):
            loaded = self._loaded = asyncio.ensure_future(self._read())
        await asyncio.shield(loaded)

    async def _read(self) -> None:
        """Everything stored (the first read), then the changes since the last read."""
        now_ms = int(self.clock.now() * 1000)
        since = 0 if self._last_read_ms is None else self._last_read_ms - POLL_OVERLAP_MS
        stops, limits = await self.store.recipient_changes(since)
        self._last_read_ms = now_ms
        self.note_preferences(stops)
        self.note_limits(limits)
        self._read_once = True

    async def reread(self, keys: Sequence[tuple[str, str]]) -> None:
        """Read these (waba_id, recipient) from the store again (this process wrote them)."""
        if self.overflow or self._loaded is None:
            return  # read at each send, or not read yet: nothing held to correct
        for waba_id, recipient in keys:
            stopped, until = await self.store.recipient_state(waba_id, recipient)
            self.note_preferences([(waba_id, recipient, "stop" if stopped else "resume")])
            self.note_limits([(waba_id, recipient, until or 0)])

    def note_preferences(self, changes: Iterable[tuple[str, str, str]]) -> None:
        """(waba_id, recipient, "stop" | "resume") rows, newest last."""
        for waba_id, recipient, value in changes:
            if value == "stop":
                self._stopped.add((waba_id, recipient))
            else:
                self._stopped.discard((waba_id, recipient))
        self._bound()

    def note_limits(self, limits: Iterable[tuple[str, str, int]]) -> None:
        """(waba_id, recipient, until_ms) rows: no marketing message before `until_ms`."""
        now_ms = int(self.clock.now() * 1000)
        for waba_id, recipient, until in limits:
            if until > now_ms:
                self._limited[(waba_id, recipient)] = until
            else:
                self._limited.pop((waba_id, recipient), None)
        self._bound()

    def _bound(self) -> None:
        if self.overflow or len(self._stopped) + len(self._limited) <= self.settings.max_entries:
            return
        log.warning(
            "more than %d opt-outs and limits: each send now reads its recipient's from the"
            " database instead of memory",
            self.settings.max_entries,
        )
        self.overflow = True
        self._stopped.clear()
        self._limited.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Read the changes every `poll_s` until `stop` is set."""
        while not stop.is_set():
            try:
                # The first read (shared with sends waiting for it), then the changes.
                await (self._read() if self._read_once else self._ready())
            except Exception as exc:  # the database is down: the next read catches up
                log.warning("opt-outs not read (%s); reading again", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.poll_s)
