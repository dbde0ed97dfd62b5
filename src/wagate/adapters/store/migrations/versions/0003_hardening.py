"""Hardening: wamids of any length, lease reap counts, per-project rate limits, click de-duplication.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Columns that hold Meta's (or the sandbox's) wamid: its length is Meta's to choose.
_WAMID_COLUMNS = (
    ("messages", "upstream_wamid", True),
    ("message_statuses", "upstream_wamid", False),
    ("message_events", "upstream_wamid", True),
)


def upgrade() -> None:
    # PostgreSQL refused a wamid over 160 characters: the outcome write failed and
    # the message was sent again and again. (SQLite does not enforce the length,
    # but its declared type is kept in step with tables.py.)
    for table, column, nullable in _WAMID_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.Text(), existing_type=sa.String(160), existing_nullable=nullable
            )
    with op.batch_alter_table("messages") as batch:
        # How many times a worker's lease on the message ran out (the worker died,
        # hung or could not record the outcome); past a few, the message fails.
        batch.add_column(sa.Column("reaps", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("projects") as batch:
        # Requests per minute the project may make; NULL: unlimited.
        batch.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
    with op.batch_alter_table("message_events") as batch:
        # Meta retries webhooks for days: the same click is stored once.
        batch.add_column(sa.Column("dedupe_key", sa.String(64), nullable=True))
    op.create_index(
        "uq_message_events_dedupe_key", "message_events", ["dedupe_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_message_events_dedupe_key", table_name="message_events")
    with op.batch_alter_table("message_events") as batch:
        batch.drop_column("dedupe_key")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("rate_limit")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reaps")
    for table, column, nullable in _WAMID_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(160), existing_type=sa.Text(), existing_nullable=nullable
            )
