"""Suppressions on SQL (`SuppressionStore`): the rows Meta's opt-outs write, as an operator
adds, lifts and lists them.

An add writes `stop` where there is no row or a `resume` (an existing `stop` keeps its
time), a removal turns a `stop` into a `resume`; each says through RETURNING which rows it
changed, so counts stay right beside a concurrent ingest or a second import. Rows are
written in recipient order: two imports of overlapping lists take their row locks
(PostgreSQL) in the same order and never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, dialect_of
from wagate.adapters.store.queries import suppressions as q
from wagate.domain.suppressions import Suppression

# SQLite allows 32,766 bound parameters; 5 a row, a chunk stays well below.
_CHUNK = 500


class SqlSuppressions:
    """`SuppressionStore` on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Suppressions on `engine` (the store's)."""
        self.engine = engine
        self.dialect = dialect_of(engine)

    async def add_suppressions(
        self, waba_id: str, recipients: Sequence[str], now_ms: int
    ) -> list[str]:
        """Suppress each recipient not suppressed yet, in one transaction; the newly
        suppressed."""
        wanted = sorted(set(recipients))
        added: list[str] = []
        if not wanted:
            return added
        async with begin_write(self.engine) as connection:
            for start in range(0, len(wanted), _CHUNK):
                rows = [
                    {
                        "waba_id": waba_id,
                        "recipient": recipient,
                        "value": "stop",
                        "timestamp": now_ms,
                        "updated_at": now_ms,
                    }
                    for recipient in wanted[start : start + _CHUNK]
                ]
                result = await connection.execute(q.add_stops(self.dialect, rows))
                added.extend(result.scalars())
        return sorted(added)

    async def remove_suppressions(
        self, waba_id: str, recipients: Sequence[str], now_ms: int
    ) -> list[str]:
        """Lift each suppressed recipient (`resume` at `now_ms`), in one transaction; those
        that were suppressed."""
        wanted = sorted(set(recipients))
        removed: list[str] = []
        if not wanted:
            return removed
        async with begin_write(self.engine) as connection:
            for start in range(0, len(wanted), _CHUNK):
                parameters: dict[str, Any] = {
                    "b_waba_id": waba_id,
                    "b_recipients": wanted[start : start + _CHUNK],
                    "b_now": now_ms,
                }
                removed.extend((await connection.execute(q.RESUME, parameters)).scalars())
        return sorted(removed)

    async def get_suppression(self, waba_id: str, recipient: str) -> Suppression | None:
        """A recipient's suppression, if it is suppressed."""
        async with self.engine.connect() as connection:
            parameters = {"b_waba_id": waba_id, "b_recipient": recipient}
            row = (await connection.execute(q.ONE, parameters)).first()
        return None if row is None else _suppression(row)

    async def list_suppressions(
        self, waba_id: str, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[Suppression]:
        """Up to `limit` suppressions, newest first; `after`: the next, older page."""
        parameters: dict[str, Any] = {"b_waba_id": waba_id, "b_limit": limit}
        statement = q.FIRST_PAGE
        if after is not None:
            statement = q.NEXT_PAGE
            parameters["b_since"], parameters["b_recipient"] = after
        async with self.engine.connect() as connection:
            return [_suppression(row) for row in await connection.execute(statement, parameters)]


def _suppression(row: Any) -> Suppression:
    return Suppression(row.waba_id, row.recipient, row.timestamp, row.updated_at)
