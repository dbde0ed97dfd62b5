"""Checks at accept: each WABA's templates as the upstream listed them; recipients whom Meta
limited (131049); opt-outs read by change; each project's 131049 policy and frequency cap.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("waba_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("parameter_format", sa.String(16), nullable=False),
        sa.Column("components", sa.Text(), nullable=False),
        sa.Column("quality", sa.String(16), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("waba_id", "name", "language", name="pk_templates"),
    )
    op.create_index("ix_templates_updated_at", "templates", ["updated_at"])
    op.create_table(
        "template_syncs",
        sa.Column("waba_id", sa.String(64), nullable=False),
        sa.Column("synced_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("waba_id", name="pk_template_syncs"),
    )
    # Every process reads the opt-outs written since its last look.
    op.create_index("ix_suppressions_updated_at", "suppressions", ["updated_at"])
    op.create_table(
        "recipient_limits",
        sa.Column("waba_id", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(160), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("waba_id", "recipient", name="pk_recipient_limits"),
    )
    op.create_index("ix_recipient_limits_updated_at", "recipient_limits", ["updated_at"])
    op.create_table(
        "recipient_sends",
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("recipient", sa.String(160), nullable=False),
        sa.Column("times", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "recipient", name="pk_recipient_sends"),
    )
    op.create_index("ix_recipient_sends_updated_at", "recipient_sends", ["updated_at"])
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("marketing_limit", sa.String(8), server_default="hold", nullable=False)
        )
        batch.add_column(sa.Column("frequency_cap", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("frequency_cap")
        batch.drop_column("marketing_limit")
    op.drop_index("ix_recipient_sends_updated_at", table_name="recipient_sends")
    op.drop_table("recipient_sends")
    op.drop_index("ix_recipient_limits_updated_at", table_name="recipient_limits")
    op.drop_table("recipient_limits")
    op.drop_index("ix_suppressions_updated_at", table_name="suppressions")
    op.drop_table("template_syncs")
    op.drop_index("ix_templates_updated_at", table_name="templates")
    op.drop_table("templates")
