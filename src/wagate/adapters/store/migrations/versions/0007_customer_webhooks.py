"""Customer webhooks: endpoints, the deliveries outbox, and the attempts log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# As in tables.py (`delivery_in`): the partial indexes' states, written out.
PENDING = sa.text("state = 'pending'")
NOT_FINAL = sa.text("state IN ('pending', 'delivering')")
DELIVERING = sa.text("state = 'delivering'")
DELIVERED = sa.text("state = 'delivered'")
# SQLite's INTEGER PRIMARY KEY is the one that auto-increments.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # An opt-out names a WABA: its numbers (and their endpoints) are found through it.
    op.create_index("ix_phone_numbers_waba_id", "phone_numbers", ["waba_id"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("phone_number_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_secret_until", sa.BigInteger(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("failing_since", sa.BigInteger(), nullable=True),
        sa.Column("paused_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_webhook_endpoints_project_id_projects"
        ),
        sa.ForeignKeyConstraint(
            ["phone_number_id"],
            ["phone_numbers.phone_number_id"],
            name="fk_webhook_endpoints_phone_number_id_phone_numbers",
        ),
    )
    op.create_index(
        "ix_webhook_endpoints_phone_number_id", "webhook_endpoints", ["phone_number_id"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        sa.Column("order_key", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_webhook_deliveries"),
        sa.UniqueConstraint("id", name="uq_webhook_deliveries_id"),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name="fk_webhook_deliveries_endpoint_id_webhook_endpoints",
        ),
    )
    partial = (
        ("ix_webhook_deliveries_due", ["endpoint_id", "next_attempt_at", "seq"], PENDING),
        ("ix_webhook_deliveries_order", ["endpoint_id", "order_key", "seq"], NOT_FINAL),
        ("ix_webhook_deliveries_leases", ["lease_expires_at"], DELIVERING),
        ("ix_webhook_deliveries_delivered", ["delivered_at"], DELIVERED),
    )
    for name, columns, where in partial:
        op.create_index(
            name, "webhook_deliveries", columns, sqlite_where=where, postgresql_where=where
        )
    op.create_index("ix_webhook_deliveries_listing", "webhook_deliveries", ["endpoint_id", "seq"])
    op.create_index(
        "ix_webhook_deliveries_state", "webhook_deliveries", ["endpoint_id", "state", "seq"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(40), nullable=False),
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_webhook_attempts"),
    )
    op.create_index(
        "ix_webhook_attempts_endpoint_id_seq", "webhook_attempts", ["endpoint_id", "seq"]
    )
    op.create_index("ix_webhook_attempts_at", "webhook_attempts", ["at"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_phone_numbers_waba_id", table_name="phone_numbers")
