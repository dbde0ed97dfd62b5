"""Templates: each WABA's message templates as the upstream listed them, for the send checks.

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


def downgrade() -> None:
    op.drop_table("template_syncs")
    op.drop_index("ix_templates_updated_at", table_name="templates")
    op.drop_table("templates")
