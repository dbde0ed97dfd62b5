"""Queue indexes: expiry and 131056 holds touch only the rows they change.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    queued = sa.text("state = 'queued'")
    # The expiry pass finds queued messages past their TTL without reading the others.
    op.create_index(
        "ix_messages_expiry",
        "messages",
        ["expires_at"],
        sqlite_where=queued,
        postgresql_where=queued,
    )
    # A 131056 holds one recipient's queued messages without reading the number's backlog.
    # The recipient leads, so that no claim's plan mistakes it for the queue's own index.
    op.create_index(
        "ix_messages_hold",
        "messages",
        ["recipient", "phone_number_id", "due_at"],
        sqlite_where=queued,
        postgresql_where=queued,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_hold", table_name="messages")
    op.drop_index("ix_messages_expiry", table_name="messages")
