"""Suppressions in memory: what `adapters/store/suppressions.py` does on SQL, on the
`MemoryDatabase.preferences` that Meta's opt-outs write too."""

from __future__ import annotations

from collections.abc import Sequence

from wagate.adapters.memory.tables import MemoryDatabase, Preference
from wagate.domain.suppressions import RESUME, STOP, Suppression


class MemorySuppressions:
    """`SuppressionStore` on a `MemoryDatabase`."""

    def __init__(self, database: MemoryDatabase) -> None:
        self.database = database

    async def add_suppressions(
        self, waba_id: str, recipients: Sequence[str], now_ms: int
    ) -> list[str]:
        """Suppress each recipient not suppressed yet; the newly suppressed."""
        added = []
        for recipient in sorted(set(recipients)):
            stored = self.database.preferences.get((waba_id, recipient))
            if stored is None or stored.value != STOP:
                self.database.preferences[(waba_id, recipient)] = Preference(STOP, now_ms, now_ms)
                added.append(recipient)
        return added

    async def remove_suppressions(
        self, waba_id: str, recipients: Sequence[str], now_ms: int
    ) -> list[str]:
        """Lift each suppressed recipient (`resume` at `now_ms`); those that were suppressed."""
        removed = []
        for recipient in sorted(set(recipients)):
            stored = self.database.preferences.get((waba_id, recipient))
            if stored is not None and stored.value == STOP:
                # Just after a stop dated later than now (a clock ahead of ours), as on SQL.
                lifted_at = max(now_ms, stored.timestamp_ms + 1)
                self.database.preferences[(waba_id, recipient)] = Preference(
                    RESUME, lifted_at, now_ms
                )
                removed.append(recipient)
        return removed

    async def get_suppression(self, waba_id: str, recipient: str) -> Suppression | None:
        """A recipient's suppression, if it is suppressed."""
        stored = self.database.preferences.get((waba_id, recipient))
        if stored is None or stored.value != STOP:
            return None
        return _suppression(waba_id, recipient, stored)

    async def list_suppressions(
        self, waba_id: str, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[Suppression]:
        """Up to `limit` suppressions, newest first; `after`: the next, older page."""
        found = sorted(
            (
                _suppression(waba, recipient, stored)
                for (waba, recipient), stored in self.database.preferences.items()
                if waba == waba_id and stored.value == STOP
            ),
            key=lambda s: (s.since, s.recipient),
            reverse=True,
        )
        if after is not None:
            found = [s for s in found if (s.since, s.recipient) < after]
        return found[:limit]


def _suppression(waba_id: str, recipient: str, stored: Preference) -> Suppression:
    updated_at = stored.timestamp_ms if stored.updated_at is None else stored.updated_at
    return Suppression(waba_id, recipient, stored.timestamp_ms, updated_at)
