"""Why a write failed: because of a row it held, or because the database is unavailable.

The difference decides what happens next. A row's fault (a duplicate key, a value
the column cannot hold) is isolated so its neighbours still commit; anything else
(connection refused or lost, a timeout, a database that does not accept
connections) fails the whole batch at once, because every retry would fail too.
asyncpg reports most server errors as one generic class, so the SQLSTATE decides.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

# SQLSTATE classes caused by what a row holds: 22 data exception (NUL, out of range,
# too long), 23 integrity constraint violation, 54 program limit exceeded (an index
# entry too large).
_ROW_FAULT_CLASSES = frozenset({"22", "23", "54"})


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, wherever the driver put it."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def is_row_fault(exc: BaseException) -> bool:
    """Whether a write failed because of a row's content, with the database itself fine."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return False
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    state = sqlstate_of(exc)
    return state is not None and state[:2] in _ROW_FAULT_CLASSES
