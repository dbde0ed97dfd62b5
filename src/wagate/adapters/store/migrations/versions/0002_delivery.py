"""Delivery: shared pacing budget, leases, status timeline, suppressions, events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("phone_numbers") as batch:
        batch.add_column(
            sa.Column("pacing_tat", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("throttle_factor", sa.Float(), server_default="1", nullable=False)
        )
        batch.add_column(
            sa.Column("throttled_at", sa.BigInteger(), server_default="0", nullable=False)
        )
    sending = sa.text("state = 'sending'")
    op.create_index(
        "ix_messages_leases",
        "messages",
        ["lease_expires_at"],
        sqlite_where=sending,
        postgresql_where=sending,
    )
    op.create_table(
        "message_statuses",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("upstream_wamid", sa.String(160), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("pricing", sa.Text(), nullable=True),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("matched", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_message_statuses"),
    )
    unmatched = sa.text("matched = false")
    op.create_index(
        "ix_message_statuses_unmatched",
        "message_statuses",
        ["seq"],
        sqlite_where=unmatched,
        postgresql_where=unmatched,
    )
    op.create_index(
        "uq_message_statuses_wamid_status",
        "message_statuses",
        ["upstream_wamid", "status"],
        unique=True,
    )
    op.create_table(
        "suppressions",
        sa.Column("waba_id", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(160), nullable=False),
        sa.Column("value", sa.String(16), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("waba_id", "recipient", name="pk_suppressions"),
    )
    op.create_table(
        "message_events",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("upstream_wamid", sa.String(160), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(160), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_message_events"),
    )
    op.create_table(
        "installation",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_installation"),
    )


def downgrade() -> None:
    op.drop_table("installation")
    op.drop_table("message_events")
    op.drop_table("suppressions")
    op.drop_table("message_statuses")
    op.drop_index("ix_messages_leases", table_name="messages")
    with op.batch_alter_table("phone_numbers") as batch:
        batch.drop_column("throttled_at")
        batch.drop_column("throttle_factor")
        batch.drop_column("pacing_tat")
