"""Opt-outs and Meta's per-user limits on SQL (the `RecipientStates` port).

Both tables are read by change (`updated_at`, indexed) so that every process's
memory follows what any process, the ingest or the suppression API, wrote.
"""

from __future__ import annotations

from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.tables import recipient_limits, suppressions

s = suppressions
r = recipient_limits
_SINCE: BindParameter[int] = bindparam("b_since")
ALL_STOPS = select(s.c.waba_id, s.c.recipient, s.c.value).where(s.c.value == "stop")
STOPS_SINCE = select(s.c.waba_id, s.c.recipient, s.c.value).where(s.c.updated_at >= _SINCE)
LIVE_LIMITS = select(r.c.waba_id, r.c.recipient, r.c.until).where(r.c.until > _SINCE)
LIMITS_SINCE = select(r.c.waba_id, r.c.recipient, r.c.until).where(r.c.updated_at >= _SINCE)
_WABA: BindParameter[str] = bindparam("b_waba_id")
_RECIPIENT: BindParameter[str] = bindparam("b_recipient")
STATE = select(s.c.value).where(s.c.waba_id == _WABA, s.c.recipient == _RECIPIENT)
LIMIT = select(r.c.until).where(r.c.waba_id == _WABA, r.c.recipient == _RECIPIENT)


class SqlRecipientStates:
    """The `RecipientStates` port on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Rows on `engine`."""
        self.engine = engine

    async def recipient_changes(
        self, since_ms: int
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, int]]]:
        """Opt-out and limit rows written at or after `since_ms` (0: every stop, every
        limit still running)."""
        async with self.engine.connect() as connection:
            if since_ms <= 0:
                stops = await connection.execute(ALL_STOPS)
                limits = await connection.execute(LIVE_LIMITS, {"b_since": 0})
            else:
                stops = await connection.execute(STOPS_SINCE, {"b_since": since_ms})
                limits = await connection.execute(LIMITS_SINCE, {"b_since": since_ms})
            return (
                [(row[0], row[1], row[2]) for row in stops],
                [(row[0], row[1], int(row[2])) for row in limits],
            )

    async def recipient_state(self, waba_id: str, recipient: str) -> tuple[bool, int | None]:
        """Whether the recipient stopped marketing messages, and until when Meta limits them."""
        key = {"b_waba_id": waba_id, "b_recipient": recipient}
        async with self.engine.connect() as connection:
            value = (await connection.execute(STATE, key)).scalar()
            until = (await connection.execute(LIMIT, key)).scalar()
        return value == "stop", None if until is None else int(until)
