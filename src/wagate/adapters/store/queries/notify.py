"""Customer webhooks: endpoints, the deliveries outbox, attempts; and the reads a moving
transaction makes to fan its events out.

Every statement reads webhook_deliveries through an index that fits it
(tests/integration/test_query_plans.py shows each plan): a claim's due rows through
ix_webhook_deliveries_due (partial: pending), the "is an earlier one of this key still
out?" probe through ix_webhook_deliveries_order (partial: pending or delivering), leases
through ix_webhook_deliveries_leases (partial: delivering), old delivered rows through
ix_webhook_deliveries_delivered, listings through ix_webhook_deliveries_listing/_state.
States are literals in the SQL, never bound, for the partial indexes (see queue.py).

webhook_endpoints holds one row per customer URL: a claim reads all the active ones
(that is its point); everything else finds them by id or phone number.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Delete,
    Select,
    Update,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    true,
    update,
)

from wagate.adapters.store.engine import Dialect
from wagate.adapters.store.tables import (
    NOT_FINAL_DELIVERY,
    messages,
    phone_numbers,
    state_in,
    suppressions,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)

e = webhook_endpoints
d = webhook_deliveries
a = webhook_attempts

_ACTIVE = e.c.active == true()
_SERVING = and_(_ACTIVE, e.c.paused_at.is_(None))
_PENDING = state_in(d.c.state, "pending")
_DELIVERING = state_in(d.c.state, "delivering")
_THE_ENDPOINT = e.c.id == bindparam("b_endpoint_id")
_OF_ENDPOINT = d.c.endpoint_id == bindparam("b_endpoint_id")
# Listings page backwards from `b_before` (a seq); the first page binds the largest one.
FIRST_PAGE = 2**62

# ---- endpoints ----------------------------------------------------------------------------

ENDPOINT_COLUMNS = list(e.c)
INSERT_ENDPOINT = insert(e)
ENDPOINT = select(*ENDPOINT_COLUMNS).where(_THE_ENDPOINT)
ENDPOINTS_OF_NUMBER = (
    select(*ENDPOINT_COLUMNS)
    .where(e.c.phone_number_id == bindparam("b_phone_number_id"))
    .order_by(e.c.created_at, e.c.id)
)
# Everything but the id (and when it was made) is replaced.
_REPLACED = [c.name for c in e.c if c.name not in ("id", "created_at")]
UPDATE_ENDPOINT = (
    update(e).where(_THE_ENDPOINT).values({name: bindparam(f"b_{name}") for name in _REPLACED})
)
PAUSE_ENDPOINT = (
    update(e).where(_THE_ENDPOINT, e.c.paused_at.is_(None)).values(paused_at=bindparam("b_at"))
)
# A notifier's pause: only while the row itself says it has failed long enough (a resume,
# or a success, that cleared `failing_since` after the notifier's claim wins over the claim).
PAUSE_FAILING_ENDPOINT = PAUSE_ENDPOINT.where(e.c.failing_since <= bindparam("b_failing_before"))
# A resumed endpoint's waiting deliveries are due at once.
RESUME_DELIVERIES = (
    update(d)
    .where(_OF_ENDPOINT, _PENDING, d.c.next_attempt_at > bindparam("b_now"))
    .values(next_attempt_at=bindparam("b_now"))
)
DELETE_ENDPOINT_ATTEMPTS = delete(a).where(a.c.endpoint_id == bindparam("b_endpoint_id"))
DELETE_ENDPOINT_DELIVERIES = delete(d).where(_OF_ENDPOINT)
DELETE_ENDPOINT = delete(e).where(_THE_ENDPOINT)

# A removed phone number takes its endpoints with it (`numbers remove --force`).
_NUMBER_ENDPOINTS = (
    select(e.c.id).where(e.c.phone_number_id == bindparam("b_phone_number_id")).scalar_subquery()
)
DELETE_NUMBER_ATTEMPTS = delete(a).where(a.c.endpoint_id.in_(_NUMBER_ENDPOINTS))
DELETE_NUMBER_DELIVERIES = delete(d).where(d.c.endpoint_id.in_(_NUMBER_ENDPOINTS))
DELETE_NUMBER_ENDPOINTS = delete(e).where(e.c.phone_number_id == bindparam("b_phone_number_id"))

# ---- fan-out, in the transaction of the move ---------------------------------------------

_SEQS: BindParameter[int] = bindparam("b_seqs", expanding=True)


def has_endpoint(phone_number_id: Any) -> Any:
    """Whether a number has an active endpoint: an index probe, of an empty index when no
    customer webhook is configured."""
    return exists().where(e.c.phone_number_id == phone_number_id, _ACTIVE)


# What an event says of each moved message, only for numbers with an active endpoint:
# without endpoints this is the one read a moving transaction pays, and it finds nothing.
MESSAGE_FACTS = (
    select(
        messages.c.seq,
        messages.c.id,
        messages.c.project_id,
        messages.c.phone_number_id,
        phone_numbers.c.waba_id,
        messages.c.recipient,
        messages.c.recipient_kind,
        messages.c.upstream_wamid,
        messages.c.request,
        messages.c.biz_opaque_callback_data,
        messages.c.created_at,
        messages.c.error_code,
        messages.c.error_title,
        messages.c.error_details,
    )
    .join(phone_numbers, phone_numbers.c.phone_number_id == messages.c.phone_number_id)
    .where(messages.c.seq.in_(_SEQS), has_endpoint(messages.c.phone_number_id))
)
# The numbers of these WABAs that have an active endpoint (an opt-out names a WABA).
NUMBERS_OF_WABAS = select(
    phone_numbers.c.phone_number_id, phone_numbers.c.project_id, phone_numbers.c.waba_id
).where(
    phone_numbers.c.waba_id.in_(bindparam("b_waba_ids", expanding=True)),
    has_endpoint(phone_numbers.c.phone_number_id),
)
# The stored opt-outs of these recipients (to tell a change from Meta's retry of one).
PREFERENCES_OF = select(
    suppressions.c.waba_id,
    suppressions.c.recipient,
    suppressions.c.value,
    suppressions.c.timestamp,
).where(
    suppressions.c.waba_id.in_(bindparam("b_waba_ids", expanding=True)),
    suppressions.c.recipient.in_(bindparam("b_recipients", expanding=True)),
)
# Whether any endpoint is active at all: outcome batches skip the drafting without one.
ANY_ENDPOINT = select(e.c.id).where(_ACTIVE).limit(1)
# The active endpoints of these numbers, as the fan-out needs them (no secrets).
ENDPOINTS_FOR_FAN_OUT = select(e.c.id, e.c.phone_number_id, e.c.events).where(
    e.c.phone_number_id.in_(bindparam("b_numbers", expanding=True)), _ACTIVE
)
INSERT_DELIVERY = insert(d)

# ---- claims -------------------------------------------------------------------------------

_DUE = and_(_PENDING, d.c.next_attempt_at <= bindparam("b_now"))

# A cheap read before the claim: nothing due costs no write and no lock. Driven from
# the serving endpoints, one probe each: a paused endpoint's backlog is never walked.
ANY_DUE = (
    select(e.c.id)
    .where(_SERVING, exists().where(d.c.endpoint_id == e.c.id, _DUE).correlate(e))
    .limit(1)
)


@cache
def serving_endpoints(dialect: Dialect) -> Update | Select[Any]:
    """The endpoints a claim may lease for (active, not paused), locked for the claim.

    PostgreSQL: FOR NO KEY UPDATE SKIP LOCKED, so two claimers never count the same
    endpoint's leases at once, while a moving transaction inserting a delivery (whose
    foreign key takes KEY SHARE on the endpoint) never waits for a claim. SQLite: a
    no-op UPDATE, which takes the write lock at once (as queue.LOCK_NUMBER does), so a
    second process cannot claim from the same reads.
    """
    if dialect.skips_locked_rows:
        serving = select(*ENDPOINT_COLUMNS).where(_SERVING)
        return serving.with_for_update(skip_locked=True, key_share=True)
    return update(e).where(_SERVING).values(active=e.c.active).returning(*ENDPOINT_COLUMNS)


# The endpoint of each live lease (the per-endpoint bound counts them). Counted by the
# caller: a GROUP BY tempts SQLite to walk a whole (endpoint_id, ...) index for its order.
LIVE_LEASES = select(d.c.endpoint_id).where(_DELIVERING, d.c.lease_expires_at >= bindparam("b_now"))

_earlier = d.alias("earlier")
# An earlier delivery of the same (endpoint, order_key) still waiting or out blocks it.
# OFFSET 0 keeps it a subplan probed per candidate through ix_webhook_deliveries_order on
# all three columns: as a plain NOT EXISTS (or with LIMIT 1, which PostgreSQL drops from
# an EXISTS), it became an anti join, and with the statistics of a young table (a row or
# two) PostgreSQL probed that index on endpoint_id alone, reading every waiting delivery
# of the endpoint for each candidate (1.5-2 s a claim with 11k waiting).
_BLOCKED = (
    select(_earlier.c.seq)
    .where(
        _earlier.c.endpoint_id == d.c.endpoint_id,
        _earlier.c.order_key == d.c.order_key,
        _earlier.c.seq < d.c.seq,
        state_in(_earlier.c.state, *NOT_FINAL_DELIVERY),
    )
    .correlate(d)
    .offset(0)
    .exists()
)
# A due delivery waiting behind an earlier one of its key that waits for a retry would be
# walked by every claim until that retry: after a receiver's outage, every claim read each
# of the hundreds of thousands of deliveries queued behind their messages' first events.
# A claim first moves those of its endpoint to that retry's time, once each: a head is
# tried no earlier than its retry (a resume or a recovery makes everything due at once),
# so what waits behind it is due again no later than it can go. Only behind a retry: one
# behind an event in flight stays due (its record comes within the attempt's timeout,
# and a claim moving it could race that record and strand it).
_head = d.alias("head")
_WAITING_HEAD = and_(
    _head.c.endpoint_id == d.c.endpoint_id,
    _head.c.order_key == d.c.order_key,
    _head.c.seq < d.c.seq,
    state_in(_head.c.state, *NOT_FINAL_DELIVERY),
    _head.c.next_attempt_at > bindparam("b_now"),
)
_RETRY_WAITED_FOR = (
    select(func.max(_head.c.next_attempt_at)).where(_WAITING_HEAD).correlate(d).scalar_subquery()
)
_BEHIND_A_RETRY = select(_head.c.seq).where(_WAITING_HEAD).correlate(d).exists()
_ahead = d.alias("ahead")


@cache
def defer_blocked(dialect: Dialect) -> Update:
    """Move the due deliveries among the next `b_window` a claim of one endpoint walks
    (oldest due first) that wait behind an earlier one of their key waiting for a retry,
    to that retry's time. Only that far ahead: after an outage every waiting delivery is
    due at once, and looking at them all would cost each claim the whole backlog again.
    PostgreSQL skips rows another transaction holds."""
    walked = (
        select(_ahead.c.seq)
        .where(
            _ahead.c.endpoint_id == bindparam("b_endpoint_id"),
            state_in(_ahead.c.state, "pending"),
            _ahead.c.next_attempt_at <= bindparam("b_now"),
        )
        .order_by(_ahead.c.next_attempt_at, _ahead.c.seq)
        .limit(bindparam("b_window"))
    )
    behind = select(d.c.seq).where(d.c.seq.in_(walked.scalar_subquery()), _BEHIND_A_RETRY)
    return (
        update(d)
        .where(d.c.seq.in_(dialect.locking_claimable(behind).scalar_subquery()))
        .values(next_attempt_at=_RETRY_WAITED_FOR)
    )


DELIVERY_COLUMNS = [
    d.c.seq,
    d.c.id,
    d.c.endpoint_id,
    d.c.event_type,
    d.c.order_key,
    d.c.occurred_at,
    d.c.data,
    d.c.attempts,
    d.c.created_at,
]


@cache
def due_deliveries(dialect: Dialect) -> Select[Any]:
    """Up to `b_limit` due deliveries of one endpoint, each the oldest still out of its key."""
    query = (
        select(*DELIVERY_COLUMNS)
        .where(_OF_ENDPOINT, _DUE, ~_BLOCKED)
        .order_by(d.c.next_attempt_at, d.c.seq)
        .limit(bindparam("b_limit"))
    )
    return dialect.locking_claimable(query)


# The claimed deliveries, in one statement (one walk of the indexes it changes).
LEASE_DELIVERIES = (
    update(d)
    .where(d.c.seq.in_(_SEQS))
    .values(
        state="delivering",
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_lease"),
    )
)

# ---- attempts -----------------------------------------------------------------------------


@cache
def lease_holders(dialect: Dialect) -> Update | Select[Any]:
    """Who holds each of these deliveries, locked while the attempts are recorded.

    PostgreSQL skips a row another transaction is changing (it is not ours then).
    SQLite: a no-op UPDATE, which takes the write lock before the read (its driver runs
    a SELECT before the first write outside the transaction).
    """
    holders = (d.c.seq, d.c.id, d.c.lease_owner)
    if dialect.skips_locked_rows:
        return select(*holders).where(d.c.seq.in_(_SEQS)).with_for_update(skip_locked=True)
    no_op = update(d).where(d.c.seq.in_(_SEQS)).values(lease_owner=d.c.lease_owner)
    return no_op.returning(*holders)


INSERT_ATTEMPT = insert(a)
# Executed with one row per attempt whose owner still held the lease.
RECORD_DELIVERY = (
    update(d)
    .where(d.c.seq == bindparam("b_seq"), d.c.lease_owner == bindparam("b_owner"))
    .values(
        state=bindparam("b_state"),
        attempts=d.c.attempts + 1,
        next_attempt_at=bindparam("b_next"),
        lease_owner=None,
        lease_expires_at=None,
        delivered_at=bindparam("b_delivered_at"),
        last_status_code=bindparam("b_status_code"),
        last_error=bindparam("b_error"),
    )
)
# Returns the endpoint only if it had failed since before `b_outage_since`: it was down and
# is back, and what waited for it is due (see domain.notifications.OUTAGE_S).
# Only a failing endpoint is written: an UPDATE of a healthy one would lock its row (so
# claims, which skip a locked endpoint, would find nothing) and leave a dead tuple behind,
# at every record of every notifier.
ENDPOINT_SUCCEEDED = (
    update(e).where(_THE_ENDPOINT, e.c.failing_since.is_not(None)).values(failing_since=None)
)
ENDPOINT_RECOVERED = (
    update(e)
    .where(_THE_ENDPOINT, e.c.failing_since <= bindparam("b_outage_since"))
    .values(failing_since=None)
    .returning(e.c.id)
)
ENDPOINT_FAILED = (
    update(e)
    .where(_THE_ENDPOINT, e.c.failing_since.is_(None))
    .values(failing_since=bindparam("b_at"))
)

# ---- the API's views, replay, housekeeping -------------------------------------------------

_BEFORE = d.c.seq < bindparam("b_before")
LIST_DELIVERIES = (
    select(*DELIVERY_COLUMNS, *(d.c[n] for n in ("state", "next_attempt_at", "delivered_at")))
    .add_columns(d.c.last_status_code, d.c.last_error)
    .where(_OF_ENDPOINT, _BEFORE)
    .order_by(d.c.seq.desc())
    .limit(bindparam("b_limit"))
)
LIST_DELIVERIES_IN_STATE = LIST_DELIVERIES.where(d.c.state == bindparam("b_state"))
LIST_ATTEMPTS = (
    select(a)
    .where(a.c.endpoint_id == bindparam("b_endpoint_id"), a.c.seq < bindparam("b_before"))
    .order_by(a.c.seq.desc())
    .limit(bindparam("b_limit"))
)

_REPLAYED: dict[str, Any] = {
    "state": "pending",
    "attempts": 0,
    "next_attempt_at": bindparam("b_now"),
    "lease_owner": None,
    "lease_expires_at": None,
}
_DEAD = state_in(d.c.state, "dead")
REPLAY_ONE = (
    update(d).where(_OF_ENDPOINT, d.c.id == bindparam("b_delivery_id"), _DEAD).values(**_REPLAYED)
)
REPLAY_DEAD = update(d).where(_OF_ENDPOINT, _DEAD).values(**_REPLAYED)
# The last holder stays named, so its late record still lands if nobody claimed it since.
REAP_DELIVERIES = (
    update(d)
    .where(_DELIVERING, d.c.lease_expires_at < bindparam("b_now"))
    .values(state="pending", lease_expires_at=None)
)


def _oldest(table: Any, column: Any, *conditions: Any) -> Delete:
    """Delete up to `b_limit` rows with `column` before `b_before`, oldest first."""
    chosen = (
        select(table.c.seq)
        .where(*conditions, column < bindparam("b_before"))
        .order_by(column)
        .limit(bindparam("b_limit"))
    )
    return delete(table).where(table.c.seq.in_(chosen.scalar_subquery()))


PRUNE_ATTEMPTS = _oldest(a, a.c.at)
PRUNE_DELIVERIES = _oldest(d, d.c.delivered_at, state_in(d.c.state, "delivered"))
