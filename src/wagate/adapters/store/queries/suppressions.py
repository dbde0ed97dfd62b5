"""A WABA's suppressions as the management API reads and changes them.

Every statement names its WABA, the first column of `pk_suppressions`: a page or a
lookup reads that WABA's rows only (a listing sorts them: no index orders a WABA's rows
by time, and the schema stays as Meta's opt-outs made it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, and_, bindparam, case, or_, select, update

from wagate.adapters.store.engine import Dialect
from wagate.adapters.store.tables import suppressions

s = suppressions

_OF_WABA = s.c.waba_id == bindparam("b_waba_id")
_STOPPED = s.c.value == "stop"
_COLUMNS = (s.c.waba_id, s.c.recipient, s.c.timestamp, s.c.updated_at)


def add_stops(dialect: Dialect, rows: Sequence[dict[str, Any]]) -> Insert:
    """Insert each row as a `stop`, or turn a stored `resume` into it; a row already a `stop`
    keeps its time. Returns the recipients it wrote: those newly suppressed."""
    statement = dialect.upsert(
        s,
        index_elements=["waba_id", "recipient"],
        set_=["value", "timestamp", "updated_at"],
        where=lambda _incoming: s.c.value != "stop",
    )
    return statement.values(list(rows)).returning(s.c.recipient)


# Only a suppressed recipient is lifted; one never suppressed gets no row. The resume is
# dated now, or just after the stop it lifts should that stop be dated later (a clock
# ahead of ours): a late retry of that very stop must not suppress again.
_LIFTED_AT = case(
    (s.c.timestamp >= bindparam("b_now"), s.c.timestamp + 1), else_=bindparam("b_now")
)
RESUME = (
    update(s)
    .where(_OF_WABA, s.c.recipient.in_(bindparam("b_recipients", expanding=True)), _STOPPED)
    .values(value="resume", timestamp=_LIFTED_AT, updated_at=bindparam("b_now"))
    .returning(s.c.recipient)
)
ONE = select(*_COLUMNS).where(_OF_WABA, s.c.recipient == bindparam("b_recipient"), _STOPPED)
_NEWEST_FIRST = (s.c.timestamp.desc(), s.c.recipient.desc())
FIRST_PAGE = (
    select(*_COLUMNS).where(_OF_WABA, _STOPPED).order_by(*_NEWEST_FIRST).limit(bindparam("b_limit"))
)
# Older than the last row of the page before, in the same (timestamp, recipient) order.
NEXT_PAGE = FIRST_PAGE.where(
    or_(
        s.c.timestamp < bindparam("b_since"),
        and_(s.c.timestamp == bindparam("b_since"), s.c.recipient < bindparam("b_recipient")),
    )
)
