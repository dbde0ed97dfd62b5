"""Queue index: the expiry pass touches only the rows it changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
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


def downgrade() -> None:
    op.drop_index("ix_messages_expiry", table_name="messages")
