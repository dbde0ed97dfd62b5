"""The outbox: accepting a message, its idempotency key, and reading messages back."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sqlalchemy import Select, TextClause, and_, bindparam, insert, select, text, update

from wagate.adapters.store.tables import messages
from wagate.domain.model import MessageQuery, StoredMessage

# What a `StoredMessage` reads.
STORED_COLUMNS = [messages.c[f.name] for f in fields(StoredMessage)]

# Rows keyed by column; executed with one row or the group committer's batch.
INSERT_MESSAGE = insert(messages)

# The channel on which PostgreSQL tells listening workers which numbers have new work.
WORK_CHANNEL = "wagate_work"
# In the accept's transaction, once per number of the batch: delivered at its commit
# (and not at all if it rolls back).
# On the same channel, a payload no phone number id can be: customer webhooks are due.
WEBHOOKS_PAYLOAD = "*webhooks"
NOTIFY_WEBHOOKS: TextClause = text(f"SELECT pg_notify('{WORK_CHANNEL}', '{WEBHOOKS_PAYLOAD}')")

NOTIFY_WORK: TextClause = text(
    f"SELECT pg_notify('{WORK_CHANNEL}', n) FROM unnest(CAST(:b_numbers AS text[])) AS n"
)

# Served by uq_messages_idempotency (partial: keyed rows only).
FIND_BY_IDEMPOTENCY_KEY = select(*STORED_COLUMNS).where(
    messages.c.project_id == bindparam("b_project_id"),
    messages.c.idempotency_key == bindparam("b_key"),
)

RELEASE_IDEMPOTENCY_KEY = (
    update(messages).where(messages.c.id == bindparam("b_id")).values(idempotency_key=None)
)

GET_MESSAGE = select(*STORED_COLUMNS).where(
    messages.c.phone_number_id == bindparam("b_phone_number_id"),
    messages.c.id == bindparam("b_id"),
)


def list_messages(query: MessageQuery) -> Select[Any]:
    """A page of a number's messages, newest first (oldest first when paging `before`).

    Served by ix_messages_listing, ix_messages_status when filtered by status, or
    ix_messages_upstream_wamid when filtered by Meta's wamid.
    """
    conditions: list[Any] = [messages.c.phone_number_id == query.phone_number_id]
    if query.status is not None:
        conditions.append(messages.c.status == query.status)
    if query.upstream_wamid is not None:
        # Through ix_messages_upstream_wamid (partial: `= value` implies NOT NULL).
        conditions.append(messages.c.upstream_wamid == query.upstream_wamid)
    if query.since is not None:
        conditions.append(messages.c.created_at >= query.since)
    if query.until is not None:
        conditions.append(messages.c.created_at <= query.until)
    order = messages.c.seq.desc()
    if query.after_seq is not None:
        conditions.append(messages.c.seq < query.after_seq)
    elif query.before_seq is not None:
        conditions.append(messages.c.seq > query.before_seq)
        order = messages.c.seq.asc()
    return select(*STORED_COLUMNS).where(and_(*conditions)).order_by(order).limit(query.limit)
