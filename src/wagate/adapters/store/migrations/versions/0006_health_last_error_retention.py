"""Health and retention: a message's last upstream error, and the indexes pruning reads.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# As in tables.py: the domain's final statuses (domain.statuses.FINAL), written out.
FINAL = sa.text("status IN ('failed', 'read')")


def upgrade() -> None:
    # The latest upstream error of a message, kept apart from `error_*` (the error it
    # failed with): an expiry after retries still shows what the upstream said.
    op.add_column("messages", sa.Column("last_error_code", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("last_error_title", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("last_error_details", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("last_error_at", sa.BigInteger(), nullable=True))
    # Retention finds final messages by age; partial, so the accept path never writes it.
    op.create_index(
        "ix_messages_final", "messages", ["updated_at"], sqlite_where=FINAL, postgresql_where=FINAL
    )
    # A pruned message's clicks are deleted by wamid.
    op.create_index("ix_message_events_upstream_wamid", "message_events", ["upstream_wamid"])


def downgrade() -> None:
    op.drop_index("ix_message_events_upstream_wamid", table_name="message_events")
    op.drop_index("ix_messages_final", table_name="messages")
    for column in ("last_error_at", "last_error_details", "last_error_title", "last_error_code"):
        op.drop_column("messages", column)
