"""What Meta's webhooks report: statuses (the timeline), opt-outs, clicks.

Statuses are found by wamid through uq_message_statuses_wamid_status, the ones
waiting for their message through ix_message_statuses_unmatched, messages by
wamid through ix_messages_upstream_wamid. Each `b_wamids` list is expanded into
IN (...) and kept to a chunk (see `statuses.py`), below SQLite's parameter limit.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import BindParameter, Insert, bindparam, literal_column, select, update

from wagate.adapters.store.engine import Dialect
from wagate.adapters.store.queries.notify import has_endpoint
from wagate.adapters.store.tables import (
    message_events,
    message_statuses,
    messages,
    phone_numbers,
    recipient_limits,
    suppressions,
)

_WAMIDS: BindParameter[str] = bindparam("b_wamids", expanding=True)
# Written as the partial index's own predicate (`matched = false`): SQLite matches a
# partial index only on the same expression, and SQLAlchemy renders false() as 0 there.
_UNMATCHED = message_statuses.c.matched == literal_column("false")

# ---- statuses -----------------------------------------------------------------------------


@cache
def insert_statuses(dialect: Dialect) -> Insert:
    """Rows keyed by column; ON CONFLICT DO NOTHING also guards against a concurrent POST
    of the same update."""
    return dialect.insert_ignoring(message_statuses)


# The statuses each wamid's timeline holds already.
SEEN = select(
    message_statuses.c.upstream_wamid, message_statuses.c.status, message_statuses.c.matched
).where(message_statuses.c.upstream_wamid.in_(_WAMIDS))

# The statuses of these wamids, to apply to their messages.
STORED_STATUSES = select(
    message_statuses.c.upstream_wamid,
    message_statuses.c.status,
    message_statuses.c.timestamp,
    message_statuses.c.errors,
    message_statuses.c.pricing,
).where(message_statuses.c.upstream_wamid.in_(_WAMIDS))

TIMELINE = (
    select(
        message_statuses.c.upstream_wamid,
        message_statuses.c.status,
        message_statuses.c.timestamp,
        message_statuses.c.pricing,
        message_statuses.c.errors,
    )
    .where(message_statuses.c.upstream_wamid.in_(_WAMIDS))
    .order_by(message_statuses.c.timestamp, message_statuses.c.seq)
)

# A chunk of the statuses that found no message when they came, after a cursor.
UNMATCHED = (
    select(
        message_statuses.c.seq,
        message_statuses.c.upstream_wamid,
        message_statuses.c.received_at,
    )
    .where(_UNMATCHED, message_statuses.c.seq > bindparam("b_after"))
    .order_by(message_statuses.c.seq)
    .limit(bindparam("b_limit"))
)

MARK_MATCHED = (
    update(message_statuses)
    .where(
        message_statuses.c.upstream_wamid.in_(_WAMIDS),
        _UNMATCHED,
    )
    .values(matched=True)
)

# Statuses of wamids no message ever had stop being retried (marked matched as they are).
GIVE_UP = (
    update(message_statuses)
    .where(message_statuses.c.upstream_wamid.in_(_WAMIDS))
    .values(matched=True)
)

# ---- the messages statuses move -----------------------------------------------------------

# (seq, wamid, status, notify) of the messages Meta knows by these wamids; `notify`: the
# number has a customer webhook endpoint, so a move drafts events (without one, a move
# costs no other read).
# Read in the transaction that moves them: FOR UPDATE (PostgreSQL) holds each message
# until commit, so a move is never decided on a status another writer is replacing (a
# stale `sent` written over a `read`). In wamid order, as the caller chunks them, so any
# two writers take their locks in the same order. SQLite's write lock, taken at BEGIN,
# does the same there.
MESSAGES_BY_WAMID = (
    select(
        messages.c.seq,
        messages.c.upstream_wamid,
        messages.c.status,
        has_endpoint(messages.c.phone_number_id).label("notify"),
        # Where the number sends: a body the embedded sandbox signed stores only statuses
        # of its numbers' messages.
        select(phone_numbers.c.upstream)
        .where(phone_numbers.c.phone_number_id == messages.c.phone_number_id)
        .scalar_subquery()
        .label("upstream"),
    )
    .where(messages.c.upstream_wamid.in_(_WAMIDS))
    .order_by(messages.c.upstream_wamid)
    .with_for_update(of=messages.c.seq)
)

# Executed with one row per message moved.
MOVE = (
    update(messages)
    .where(messages.c.seq == bindparam("b_seq"))
    .values(
        status=bindparam("b_status"),
        updated_at=bindparam("b_at"),
        error_code=bindparam("b_code"),
        error_title=bindparam("b_title"),
        error_details=bindparam("b_details"),
    )
)

# Where the messages of these wamids go (for a body the embedded sandbox signed).
UPSTREAMS_OF_WAMIDS = (
    select(messages.c.upstream_wamid, phone_numbers.c.upstream)
    .join(phone_numbers, phone_numbers.c.phone_number_id == messages.c.phone_number_id)
    .where(messages.c.upstream_wamid.in_(_WAMIDS))
)

UPSTREAMS_OF_WABAS = select(phone_numbers.c.waba_id, phone_numbers.c.upstream).where(
    phone_numbers.c.waba_id.in_(bindparam("b_waba_ids", expanding=True))
)

# ---- opt-outs and clicks ------------------------------------------------------------------


@cache
def upsert_preferences(dialect: Dialect) -> Insert:
    """Rows keyed by column; the newest preference wins, whatever order Meta delivers them in."""
    return dialect.upsert(
        suppressions,
        index_elements=["waba_id", "recipient"],
        set_=["value", "timestamp", "updated_at"],
        where=lambda incoming: suppressions.c.timestamp <= incoming.timestamp,
    )


@cache
def upsert_limits(dialect: Dialect) -> Insert:
    """A recipient Meta limited (131049): the later `until` wins."""
    return dialect.upsert(
        recipient_limits,
        index_elements=["waba_id", "recipient"],
        set_=["until", "updated_at"],
        where=lambda incoming: recipient_limits.c.until <= incoming.until,
    )


# The recipient, number and WABA of messages that failed with 131050 or 131049.
RECIPIENTS_OF = (
    select(
        messages.c.seq,
        messages.c.recipient,
        messages.c.phone_number_id,
        phone_numbers.c.waba_id,
    )
    .join(phone_numbers, phone_numbers.c.phone_number_id == messages.c.phone_number_id)
    .where(messages.c.seq.in_(bindparam("b_seqs", expanding=True)))
)

PREFERENCE = select(suppressions.c.value).where(
    suppressions.c.waba_id == bindparam("b_waba_id"),
    suppressions.c.recipient == bindparam("b_recipient"),
)


@cache
def insert_events(dialect: Dialect) -> Insert:
    """Rows keyed by column; Meta retries for days: a click already stored (same dedupe
    key) is skipped."""
    return dialect.insert_ignoring(message_events)


# A message's other events: (kind, payload JSON).
EVENTS = (
    select(message_events.c.kind, message_events.c.payload)
    .where(message_events.c.upstream_wamid == bindparam("b_wamid"))
    .order_by(message_events.c.seq)
)
