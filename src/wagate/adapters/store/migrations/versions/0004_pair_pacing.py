"""Pair pacing: each (number, recipient) pair is paced before Meta answers 131056.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per pair with pacing still ahead of it (rows run out and are swept):
    # a 131056 moves one row, not every queued message of the recipient.
    op.create_table(
        "pair_pacing",
        sa.Column("phone_number_id", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(160), nullable=False),
        sa.Column("tat", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tat", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("phone_number_id", "recipient", name="pk_pair_pacing"),
    )
    op.create_index("ix_pair_pacing_reserved_tat", "pair_pacing", ["reserved_tat"])


def downgrade() -> None:
    op.drop_index("ix_pair_pacing_reserved_tat", table_name="pair_pacing")
    op.drop_table("pair_pacing")
