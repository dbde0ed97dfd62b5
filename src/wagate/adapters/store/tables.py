"""The schema, in SQLAlchemy Core; Alembic migrations create it (see `migrations/`).

Times are Unix milliseconds in BIGINT columns: portable between SQLite and
PostgreSQL, cheap to compare, and exact for cursors.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    literal_column,
    true,
)

from wagate.domain.statuses import FINAL

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
SEQ = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Requests per minute the project may make (HTTP 429, code 4, beyond it); NULL: unlimited.
    Column("rate_limit", Integer, nullable=True),
    # After Meta's 131049 for a recipient: `hold` its sends for 24 h, or `refuse` them.
    Column("marketing_limit", String(8), nullable=False, server_default="hold"),
    # Marketing messages per recipient per rolling 24 h; NULL: no cap.
    Column("frequency_cap", Integer, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("label", String(200), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

phone_numbers = Table(
    "phone_numbers",
    metadata,
    Column("phone_number_id", String(64), primary_key=True),
    Column("waba_id", String(64), nullable=False),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False, index=True),
    Column("upstream", String(16), nullable=False),
    Column("access_token", Text, nullable=False, server_default=""),
    Column("mps", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The shared pacing budget (GCRA): the theoretical arrival time of the next
    # send in Unix microseconds. Every worker reserves its send slots by moving
    # it forward under the row's lock, so together they never exceed `mps`.
    Column("pacing_tat", BigInteger, nullable=False, server_default="0"),
    # After a 130429 the rate drops to mps * throttle_factor and climbs back.
    Column("throttle_factor", Float, nullable=False, server_default="1"),
    Column("throttled_at", BigInteger, nullable=False, server_default="0"),
    # An opt-out names a WABA: its numbers are found through this (for customer webhooks).
    Index("ix_phone_numbers_waba_id", "waba_id"),
)

# What a `PhoneNumber` reads.
PHONE_NUMBER_COLUMNS = [
    phone_numbers.c[name]
    for name in ("phone_number_id", "waba_id", "project_id", "upstream", "access_token", "mps")
]

# Each (number, recipient) pair's pacing (Meta answers 131056 beyond about one message
# per 6 s, bursts of 45): the GCRA TAT of its sends and `reserved_tat`, which also
# counts the messages put off to its later turns (see `domain.pacing.PairState`).
# Only claims of the number (under its row's lock) and 131056 holds write it; a row
# whose `reserved_tat` has passed is the same as none and is deleted by the sweep.
pair_pacing = Table(
    "pair_pacing",
    metadata,
    Column("phone_number_id", String(64), primary_key=True),
    Column("recipient", String(160), primary_key=True),
    Column("tat", BigInteger, nullable=False),
    Column("reserved_tat", BigInteger, nullable=False),
    Index("ix_pair_pacing_reserved_tat", "reserved_tat"),
)

# The messages table is also the delivery queue: `state` = 'queued' rows with
# `due_at` <= now are what a dispatcher claims (leased through `lease_owner` and
# `lease_expires_at`, so a dead worker's claims come back).
messages = Table(
    "messages",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    Column(
        "phone_number_id",
        String(64),
        ForeignKey("phone_numbers.phone_number_id"),
        nullable=False,
    ),
    Column("recipient_input", Text, nullable=False),
    Column("recipient", String(160), nullable=False),
    Column("recipient_kind", String(8), nullable=False),
    Column("request", Text, nullable=False),
    Column("template_name", String(512), nullable=False),
    Column("template_language", String(16), nullable=False),
    Column("biz_opaque_callback_data", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("due_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    # Meta's wamid: its length is Meta's (or the sandbox's) to choose.
    Column("upstream_wamid", Text, nullable=True),
    Column("upstream_status", String(40), nullable=True),
    Column("error_code", Integer, nullable=True),
    Column("error_title", Text, nullable=True),
    Column("error_details", Text, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=True),
    # How many times a worker's lease on the message ran out before it recorded an
    # outcome; after a few the message fails instead of being sent yet again.
    Column("reaps", Integer, nullable=False, server_default="0"),
    # The latest upstream error (Meta's or the network's) of a send: written by the
    # outcome that retries or fails the message, cleared when Meta accepts it. Apart
    # from `error_*`: an expiry after retries still shows what the upstream said.
    Column("last_error_code", Integer, nullable=True),
    Column("last_error_title", Text, nullable=True),
    Column("last_error_details", Text, nullable=True),
    Column("last_error_at", BigInteger, nullable=True),
    # Partial: only queued rows are in the queue index, so it stays small.
    Index(
        "ix_messages_queue",
        "phone_number_id",
        "due_at",
        "seq",
        sqlite_where=Column("state") == "queued",
        postgresql_where=Column("state") == "queued",
    ),
    # The expiry pass reads only queued messages past their TTL.
    Index(
        "ix_messages_expiry",
        "expires_at",
        sqlite_where=Column("state") == "queued",
        postgresql_where=Column("state") == "queued",
    ),
    Index(
        "ix_messages_leases",
        "lease_expires_at",
        sqlite_where=Column("state") == "sending",
        postgresql_where=Column("state") == "sending",
    ),
    Index("ix_messages_listing", "phone_number_id", "seq"),
    # Retention's: final messages by age (partial: the accept path never writes it).
    Index(
        "ix_messages_final",
        "updated_at",
        sqlite_where=Column("status").in_(sorted(FINAL)),
        postgresql_where=Column("status").in_(sorted(FINAL)),
    ),
    Index("ix_messages_status", "phone_number_id", "status", "seq"),
    # Partial indexes: most rows have no wamid yet and no idempotency key, and
    # leaving them out keeps the accept path's insert cheaper.
    Index(
        "ix_messages_upstream_wamid",
        "upstream_wamid",
        sqlite_where=Column("upstream_wamid").isnot(None),
        postgresql_where=Column("upstream_wamid").isnot(None),
    ),
    Index(
        "uq_messages_idempotency",
        "project_id",
        "idempotency_key",
        unique=True,
        sqlite_where=Column("idempotency_key").isnot(None),
        postgresql_where=Column("idempotency_key").isnot(None),
    ),
)

# Every status Meta reported, keyed by Meta's wamid: the message's timeline. A
# status may arrive before the dispatcher has recorded the wamid (Meta is fast);
# it is kept here and applied when the wamid is recorded.
message_statuses = Table(
    "message_statuses",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("upstream_wamid", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("pricing", Text, nullable=True),
    Column("errors", Text, nullable=True),
    Column("received_at", BigInteger, nullable=False),
    # False while no message had this wamid when the status came (the worker had not
    # yet recorded Meta's answer); the worker's housekeeping applies it later.
    Column("matched", Boolean, nullable=False, server_default=true()),
    # Meta retries for days: the same status of the same message is stored once.
    Index("uq_message_statuses_wamid_status", "upstream_wamid", "status", unique=True),
    Index(
        "ix_message_statuses_unmatched",
        "seq",
        sqlite_where=Column("matched") == false(),
        postgresql_where=Column("matched") == false(),
    ),
)

# Opt-outs and opt-ins from `user_preferences` webhooks, newest per recipient.
suppressions = Table(
    "suppressions",
    metadata,
    Column("waba_id", String(64), primary_key=True),
    Column("recipient", String(160), primary_key=True),
    Column("value", String(16), nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_suppressions_updated_at", "updated_at"),
)

# The accepted sends of projects with a frequency cap, per recipient: the times (ms,
# comma-separated) of those in the last 24 h, at most the cap. One row a recipient,
# locked while a send is counted, so two processes never both take the last one.
recipient_sends = Table(
    "recipient_sends",
    metadata,
    Column("project_id", String(40), primary_key=True),
    Column("recipient", String(160), primary_key=True),
    Column("times", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Retention drops the rows of recipients nobody sent to for a day.
    Index("ix_recipient_sends_updated_at", "updated_at"),
)

# Recipients Meta limited (131049): no marketing message to them before `until`.
recipient_limits = Table(
    "recipient_limits",
    metadata,
    Column("waba_id", String(64), primary_key=True),
    Column("recipient", String(160), primary_key=True),
    Column("until", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_recipient_limits_updated_at", "updated_at"),
)

# Other events about a message (link clicks), as Meta sent them.
message_events = Table(
    "message_events",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("upstream_wamid", Text, nullable=True),
    Column("kind", String(64), nullable=False),
    Column("recipient", String(160), nullable=True),
    Column("payload", Text, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    # A hash of what makes the event unique (Meta's click_id): stored once.
    Column("dedupe_key", String(64), nullable=True),
    Index("uq_message_events_dedupe_key", "dedupe_key", unique=True),
    # A message's clicks, read and pruned by its wamid.
    Index("ix_message_events_upstream_wamid", "upstream_wamid"),
)

# Small facts of the installation (e.g. the generated webhook secret of the sandbox).
installation = Table(
    "installation",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# ---- customer webhooks (issue 9) ------------------------------------------------------------

# The states a delivery waits in for its turn; a later delivery of the same (endpoint,
# order_key) goes only when none of these is before it. Written as literals (as in
# queries/queue.py) so that the planners match the partial indexes.
NOT_FINAL_DELIVERY = ("pending", "delivering")


def state_in(column: ColumnElement[str], *states: str) -> ColumnElement[bool]:
    """`state IN ('<state>', ...)`, as literals the partial indexes match (`=` for one)."""
    literals: list[ColumnElement[str]] = [literal_column(f"'{state}'") for state in states]
    return column == literals[0] if len(literals) == 1 else column.in_(literals)


def delivery_in(*states: str) -> ColumnElement[bool]:
    """The predicate of a partial index of webhook_deliveries on its state."""
    return state_in(Column("state", String(16)), *states)


# A customer's URL for one phone number. `secret`, `previous_secret` and `headers` (JSON,
# often carrying tokens) are sealed by SecretBox; `events` is a JSON list of event types.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("project_id", String(40), ForeignKey("projects.id"), nullable=False),
    Column(
        "phone_number_id",
        String(64),
        ForeignKey("phone_numbers.phone_number_id"),
        nullable=False,
        index=True,
    ),
    Column("url", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("events", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text, nullable=True),
    Column("previous_secret_until", BigInteger, nullable=True),
    Column("headers", Text, nullable=False),
    Column("failing_since", BigInteger, nullable=True),
    Column("paused_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# One event for one endpoint: the outbox the notifiers claim from. `seq` is the order;
# `id` goes out as the idempotency key. Written in the transaction of the move (or
# opt-out) that causes it.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("order_key", String(200), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("data", Text, nullable=False),
    Column("occurred_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    # A claim's: an endpoint's due deliveries (partial: only pending rows).
    Index(
        "ix_webhook_deliveries_due",
        "endpoint_id",
        "next_attempt_at",
        "seq",
        sqlite_where=delivery_in("pending"),
        postgresql_where=delivery_in("pending"),
    ),
    # A claim's: is an earlier delivery of the same key still waiting or out?
    Index(
        "ix_webhook_deliveries_order",
        "endpoint_id",
        "order_key",
        "seq",
        sqlite_where=delivery_in(*NOT_FINAL_DELIVERY),
        postgresql_where=delivery_in(*NOT_FINAL_DELIVERY),
    ),
    # Leases: the live ones counted per endpoint, the ended ones reaped.
    Index(
        "ix_webhook_deliveries_leases",
        "lease_expires_at",
        sqlite_where=delivery_in("delivering"),
        postgresql_where=delivery_in("delivering"),
    ),
    # Listing an endpoint's deliveries newest first, with or without a state; removal.
    Index("ix_webhook_deliveries_listing", "endpoint_id", "seq"),
    Index("ix_webhook_deliveries_state", "endpoint_id", "state", "seq"),
    # Pruning delivered deliveries by age.
    Index(
        "ix_webhook_deliveries_delivered",
        "delivered_at",
        sqlite_where=delivery_in("delivered"),
        postgresql_where=delivery_in("delivered"),
    ),
)

# Every attempt of a delivery, kept KEEP_ATTEMPTS_S for the API's listing.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_webhook_attempts_endpoint_id_seq", "endpoint_id", "seq"),
    Index("ix_webhook_attempts_at", "at"),
)

# Each WABA's message templates as the upstream last listed them, kept current by Meta's
# template webhooks: what the send checks read (from each process's memory, see
# core/templates.py). A template the upstream no longer lists stays as status DELETED,
# so the other processes, which read the rows changed since their last look, learn of it.
templates = Table(
    "templates",
    metadata,
    Column("waba_id", String(64), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("language", String(32), primary_key=True),
    Column("template_id", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("category", String(32), nullable=False),
    Column("parameter_format", String(16), nullable=False),
    Column("components", Text, nullable=False),
    Column("quality", String(16), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_templates_updated_at", "updated_at"),
)

# When each WABA's templates were last listed from the upstream (all pages).
template_syncs = Table(
    "template_syncs",
    metadata,
    Column("waba_id", String(64), primary_key=True),
    Column("synced_at", BigInteger, nullable=False),
)
