"""Opt-outs and Meta's per-user limits on SQL (the `RecipientStates` port).

Both tables are read by change (`updated_at`, indexed) so that every process's
memory follows what any process, the ingest or the suppression API, wrote.
"""

from __future__ import annotations

from sqlalchemy import BindParameter, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, dialect_of
from wagate.adapters.store.queries.statuses import PREFERENCE
from wagate.adapters.store.tables import recipient_limits, recipient_sends, suppressions

s = suppressions
r = recipient_limits
_SINCE: BindParameter[int] = bindparam("b_since")
ALL_STOPS = select(s.c.waba_id, s.c.recipient, s.c.value).where(s.c.value == "stop")
STOPS_SINCE = select(s.c.waba_id, s.c.recipient, s.c.value).where(s.c.updated_at >= _SINCE)
LIVE_LIMITS = select(r.c.waba_id, r.c.recipient, r.c.until).where(r.c.until > _SINCE)
LIMITS_SINCE = select(r.c.waba_id, r.c.recipient, r.c.until).where(r.c.updated_at >= _SINCE)
_WABA: BindParameter[str] = bindparam("b_waba_id")
_RECIPIENT: BindParameter[str] = bindparam("b_recipient")
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
            value = (await connection.execute(PREFERENCE, key)).scalar()
            until = (await connection.execute(LIMIT, key)).scalar()
        return value == "stop", None if until is None else int(until)


_SENDS_KEY = (
    recipient_sends.c.project_id == bindparam("b_project_id"),
    recipient_sends.c.recipient == bindparam("b_recipient"),
)
SENDS_OF = select(recipient_sends.c.times).where(*_SENDS_KEY)
INSERT_SENDS = insert(recipient_sends)
UPDATE_SENDS = (
    update(recipient_sends)
    .where(*_SENDS_KEY)
    .values(times=bindparam("b_times"), updated_at=bindparam("b_now"))
)


class SqlFrequencyCaps:
    """The `FrequencyCaps` port: each capped project's sends per recipient, counted in one
    locked row per recipient (PostgreSQL: FOR UPDATE; SQLite: the write lock)."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Counts on `engine`."""
        self.engine = engine
        self.dialect = dialect_of(engine)

    async def take(
        self, project_id: str, recipient: str, cap: int, now_ms: int, window_ms: int
    ) -> int | None:
        """Count one send if fewer than `cap` went in the last `window_ms`; else the time
        (ms) the oldest of them leaves the window."""
        key = {"b_project_id": project_id, "b_recipient": recipient}
        try:
            return await self._take(key, cap, now_ms, window_ms)
        except IntegrityError:
            # Another process counted this recipient's first send at the same moment: its
            # row exists now, and this try locks it.
            return await self._take(key, cap, now_ms, window_ms)

    async def _take(self, key: dict[str, str], cap: int, now_ms: int, window_ms: int) -> int | None:
        async with begin_write(self.engine) as connection:
            statement = SENDS_OF
            if self.dialect.skips_locked_rows:
                statement = statement.with_for_update()
            stored = (await connection.execute(statement, key)).scalar()
            times = [int(t) for t in stored.split(",") if t] if stored else []
            times = sorted(t for t in times if t > now_ms - window_ms)
            if len(times) >= cap:
                return times[len(times) - cap] + window_ms
            times.append(now_ms)
            text = ",".join(map(str, times[-cap:]))
            if stored is None:
                row = {
                    "project_id": key["b_project_id"],
                    "recipient": key["b_recipient"],
                    "times": text,
                    "updated_at": now_ms,
                }
                await connection.execute(INSERT_SENDS, row)
            else:
                await connection.execute(UPDATE_SENDS, {**key, "b_times": text, "b_now": now_ms})
        return None
