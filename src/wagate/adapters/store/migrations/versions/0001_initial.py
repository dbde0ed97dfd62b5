"""Projects, API keys, phone numbers and messages (the delivery queue).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), server_default="", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_api_keys_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_project_id", "api_keys", ["project_id"])
    op.create_table(
        "phone_numbers",
        sa.Column("phone_number_id", sa.String(64), nullable=False),
        sa.Column("waba_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("upstream", sa.String(16), nullable=False),
        sa.Column("access_token", sa.Text(), server_default="", nullable=False),
        sa.Column("mps", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_phone_numbers_project_id_projects"
        ),
        sa.PrimaryKeyConstraint("phone_number_id", name="pk_phone_numbers"),
    )
    op.create_index("ix_phone_numbers_project_id", "phone_numbers", ["project_id"])
    op.create_table(
        "messages",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("phone_number_id", sa.String(64), nullable=False),
        sa.Column("recipient_input", sa.Text(), nullable=False),
        sa.Column("recipient", sa.String(160), nullable=False),
        sa.Column("recipient_kind", sa.String(8), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("template_name", sa.String(512), nullable=False),
        sa.Column("template_language", sa.String(16), nullable=False),
        sa.Column("biz_opaque_callback_data", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("upstream_wamid", sa.String(160), nullable=True),
        sa.Column("upstream_status", sa.String(40), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_title", sa.Text(), nullable=True),
        sa.Column("error_details", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_messages_project_id_projects"
        ),
        sa.ForeignKeyConstraint(
            ["phone_number_id"],
            ["phone_numbers.phone_number_id"],
            name="fk_messages_phone_number_id_phone_numbers",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_messages"),
        sa.UniqueConstraint("id", name="uq_messages_id"),
    )
    queued = sa.text("state = 'queued'")
    op.create_index(
        "ix_messages_queue",
        "messages",
        ["phone_number_id", "due_at", "seq"],
        sqlite_where=queued,
        postgresql_where=queued,
    )
    op.create_index("ix_messages_listing", "messages", ["phone_number_id", "seq"])
    op.create_index("ix_messages_status", "messages", ["phone_number_id", "status", "seq"])
    has_wamid = sa.text("upstream_wamid IS NOT NULL")
    op.create_index(
        "ix_messages_upstream_wamid",
        "messages",
        ["upstream_wamid"],
        sqlite_where=has_wamid,
        postgresql_where=has_wamid,
    )
    has_key = sa.text("idempotency_key IS NOT NULL")
    op.create_index(
        "uq_messages_idempotency",
        "messages",
        ["project_id", "idempotency_key"],
        unique=True,
        sqlite_where=has_key,
        postgresql_where=has_key,
    )


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("phone_numbers")
    op.drop_table("api_keys")
    op.drop_table("projects")
