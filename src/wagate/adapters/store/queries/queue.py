"""The delivery queue on the messages table: claims, pacing, leases, send outcomes.

Every statement reads only the rows it returns or changes, through an index that
matches it (tests/integration/test_query_plans.py shows each plan): queued rows
through ix_messages_queue, expired ones through ix_messages_expiry (both partial:
`state = 'queued'`), ended leases through ix_messages_leases (partial: `state =
'sending'`); every outcome and put-off is written by `seq`, the primary key; a
recipient's pacing by its pair's primary key.

The state is written into the SQL, never bound: a planner only uses a partial
index when it can see that the query's state is the index's (SQLite never can
with a parameter, PostgreSQL not in a generic plan of a prepared statement).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    select,
    update,
)

from wagate.adapters.store.engine import Dialect
from wagate.adapters.store.tables import (
    PHONE_NUMBER_COLUMNS,
    messages,
    pair_pacing,
    phone_numbers,
    recipient_limits,
    recipient_sends,
)
from wagate.domain.delivery import MAX_REAPS


def _in_state(state: str) -> ColumnElement[bool]:
    """`state = '<state>'`, as a literal so that the partial indexes match (see above)."""
    return messages.c.state == literal_column(f"'{state}'")


_QUEUED = _in_state("queued")
_DUE = and_(
    messages.c.phone_number_id == bindparam("b_phone_number_id"),
    _QUEUED,
    messages.c.due_at <= bindparam("b_now"),
)

# ---- which numbers have work -------------------------------------------------------------

# The numbers with queued messages, found by skipping through ix_messages_queue from one
# number to the next (a loose index scan, as a recursive CTE): its cost grows with the
# numbers that have work, not with the messages queued nor with the idle numbers.
_first_queued = (
    select(messages.c.phone_number_id)
    .where(_QUEUED)
    .order_by(messages.c.phone_number_id)
    .limit(1)
    .scalar_subquery()
)
_queued_numbers = select(_first_queued.label("phone_number_id")).cte(
    "queued_numbers", recursive=True
)
_previous = _queued_numbers.alias("previous")
_next_queued = (
    select(messages.c.phone_number_id)
    .where(_QUEUED, messages.c.phone_number_id > _previous.c.phone_number_id)
    .order_by(messages.c.phone_number_id)
    .limit(1)
    .scalar_subquery()
)
_queued_numbers = _queued_numbers.union_all(
    select(_next_queued).where(_previous.c.phone_number_id.is_not(None))
)
_earliest_due = (
    select(messages.c.due_at)
    .where(messages.c.phone_number_id == phone_numbers.c.phone_number_id, _QUEUED)
    .order_by(messages.c.due_at)
    .limit(1)
    .scalar_subquery()
)
# Each number with queued messages, and when the earliest of them is due.
WAITING = select(*PHONE_NUMBER_COLUMNS, _earliest_due.label("due_at")).join_from(
    _queued_numbers,
    phone_numbers,
    phone_numbers.c.phone_number_id == _queued_numbers.c.phone_number_id,
)

# ---- claiming ---------------------------------------------------------------------------

# A cheap read before the claim: an idle number costs no write and no lock.
ANY_DUE = select(messages.c.seq).where(_DUE).limit(1)

# Locks a number's row and reads its pacing state. A no-op UPDATE, not SELECT ... FOR
# UPDATE: it also takes SQLite's write lock at once, so two processes on one SQLite
# file cannot both read the same TAT.
LOCK_NUMBER = (
    update(phone_numbers)
    .where(phone_numbers.c.phone_number_id == bindparam("b_phone_number_id"))
    .values(pacing_tat=phone_numbers.c.pacing_tat)
    .returning(
        phone_numbers.c.pacing_tat,
        phone_numbers.c.mps,
        phone_numbers.c.throttle_factor,
        phone_numbers.c.throttled_at,
    )
)


@cache
def claimable(dialect: Dialect) -> Select[Any]:
    """Up to `b_limit` due messages of a number, oldest due first, skipping rows another
    claimer holds where the database locks rows."""
    query = (
        select(
            messages.c.seq,
            messages.c.id,
            messages.c.recipient,
            messages.c.request,
            messages.c.attempts,
            messages.c.created_at,
            messages.c.expires_at,
        )
        .where(_DUE)
        .order_by(messages.c.due_at, messages.c.seq)
        .limit(bindparam("b_limit"))
    )
    return dialect.locking_claimable(query)


# Executed with one row per claimed message.
LEASE = (
    update(messages)
    .where(messages.c.seq == bindparam("b_seq"))
    .values(
        state="sending",
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_lease"),
        attempts=messages.c.attempts + 1,
    )
)

_THE_NUMBER = phone_numbers.c.phone_number_id == bindparam("b_phone_number_id")

SET_PACING_TAT = update(phone_numbers).where(_THE_NUMBER).values(pacing_tat=bindparam("b_tat"))

SET_THROTTLE = (
    update(phone_numbers)
    .where(_THE_NUMBER)
    .values(throttle_factor=bindparam("b_factor"), throttled_at=bindparam("b_throttled_at"))
)

# A message whose pair has no turn yet stays queued until its turn (by `seq`).
DEFER = (
    update(messages).where(messages.c.seq == bindparam("b_seq")).values(due_at=bindparam("b_due"))
)

# ---- pair pacing ------------------------------------------------------------------------

_THE_PAIRS = pair_pacing.c.phone_number_id == bindparam("b_phone_number_id")

# The pacing of the pairs of a claimed batch's recipients, by primary key.
PAIRS = select(pair_pacing.c.recipient, pair_pacing.c.tat, pair_pacing.c.reserved_tat).where(
    _THE_PAIRS, pair_pacing.c.recipient.in_(bindparam("b_recipients", expanding=True))
)


@cache
def set_pair(dialect: Dialect) -> Insert:
    """Store a pair's TATs (one row per pair, executed with many); they only move forward.

    Claims of one number are serialised by its row's lock, but a 131056 hold is not:
    keeping the later of the stored and incoming TAT makes any interleaving safe.
    """
    statement = dialect.dialect_insert(pair_pacing).values(
        phone_number_id=bindparam("b_phone_number_id"),
        recipient=bindparam("b_recipient"),
        tat=bindparam("b_tat"),
        reserved_tat=bindparam("b_reserved"),
    )
    incoming = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[pair_pacing.c.phone_number_id, pair_pacing.c.recipient],
        set_={
            name: case(
                (incoming[name] > pair_pacing.c[name], incoming[name]), else_=pair_pacing.c[name]
            )
            for name in ("tat", "reserved_tat")
        },
    )


# Pairs whose pacing has run out are the same as none (through ix_pair_pacing_reserved_tat).
FORGET_PAIRS = delete(pair_pacing).where(pair_pacing.c.reserved_tat < bindparam("b_now_us"))
# A limit that ran out is the same as none (the send checks drop it from memory then).
# Found through the `updated_at` index: a limit is written when it starts and lasts a day.
FORGET_LIMITS = delete(recipient_limits).where(
    recipient_limits.c.updated_at < bindparam("b_before"),
    recipient_limits.c.until < bindparam("b_now"),
)
# A count whose latest send left the day counts nothing.
FORGET_SENDS = delete(recipient_sends).where(recipient_sends.c.updated_at < bindparam("b_before"))

# ---- leases that ended, messages that expired -------------------------------------------

_ENDED = and_(_in_state("sending"), messages.c.lease_expires_at < bindparam("b_now"))
_FAILED_BY: dict[str, Any] = {
    "state": "done",
    "status": "failed",
    "error_code": bindparam("b_code"),
    "error_title": bindparam("b_title"),
    "error_details": bindparam("b_details"),
    "updated_at": bindparam("b_now"),
}

# The last holder stays named, so its outcome still lands if it comes late.
ABANDON_ENDED_LEASES = (
    update(messages)
    .where(_ENDED, messages.c.reaps >= MAX_REAPS - 1)
    .values(lease_expires_at=None, reaps=messages.c.reaps + 1, **_FAILED_BY)
    # Which failed: their customer webhooks are told (see webhook_events.py).
    .returning(messages.c.seq)
)

REQUEUE_ENDED_LEASES = (
    update(messages)
    .where(_ENDED)
    .values(
        state="queued",
        lease_expires_at=None,
        due_at=bindparam("b_now"),
        reaps=messages.c.reaps + 1,
    )
)

EXPIRE = (
    update(messages)
    .where(_QUEUED, messages.c.expires_at < bindparam("b_now"))
    .values(**_FAILED_BY)
    .returning(messages.c.seq)
)

# ---- outcomes ---------------------------------------------------------------------------


def _by_lease_holder(**values: Any) -> Update:
    """An outcome update: only the worker holding the lease may write it, and it ends the lease."""
    return (
        update(messages)
        .where(messages.c.seq == bindparam("b_seq"), messages.c.lease_owner == bindparam("b_owner"))
        .values(lease_owner=None, lease_expires_at=None, updated_at=bindparam("b_at"), **values)
    )


_ERROR: dict[str, Any] = {
    "error_code": bindparam("b_code"),
    "error_title": bindparam("b_title"),
    "error_details": bindparam("b_details"),
}
# The upstream's error also goes to `last_error_*` (the read API's `last_error`), which
# an expiry or an abandoned lease leaves as it is; Meta's acceptance clears it.
_LAST_ERROR: dict[str, Any] = {
    "last_error_code": bindparam("b_code"),
    "last_error_title": bindparam("b_title"),
    "last_error_details": bindparam("b_details"),
    "last_error_at": bindparam("b_at"),
}
_NO_LAST_ERROR: dict[str, Any] = dict.fromkeys(_LAST_ERROR)
# Each executed with the rows of one kind of outcome (see `SqlQueue.record`).
FORWARDED = _by_lease_holder(
    state="forwarded",
    upstream_wamid=bindparam("b_wamid"),
    upstream_status=bindparam("b_upstream_status"),
    **_NO_LAST_ERROR,
)
FAILED = _by_lease_holder(state="done", status="failed", **_ERROR, **_LAST_ERROR)
# A failure the gateway decided (the message expired before its send): last_error stays.
FAILED_HERE = _by_lease_holder(state="done", status="failed", **_ERROR)
RETRY = _by_lease_holder(state="queued", due_at=bindparam("b_due"), **_ERROR, **_LAST_ERROR)
OUTCOMES = {"forwarded": FORWARDED, "failed": FAILED, "failed_here": FAILED_HERE, "retry": RETRY}
# A failure outcome alone, saying whether it landed (the lease holder's): executed one
# by one, only when some customer webhook endpoint may need to hear of it (RETURNING
# does not go with an executemany).
FAILED_ONE = FAILED.returning(messages.c.seq)
FAILED_HERE_ONE = FAILED_HERE.returning(messages.c.seq)
FAILURES_ONE_BY_ONE = {"failed": FAILED_ONE, "failed_here": FAILED_HERE_ONE}

COUNT_BY_STATE = select(messages.c.state, func.count()).group_by(messages.c.state)
