"""The platform server's tables: projects, API tokens and their roles, the audit log, and
the serving endpoints the server reports on.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as they were at this revision.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Name = sa.String(200)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("name", Name, primary_key=True),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", Name, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", Name, nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
    )
    op.create_table(
        "token_roles",
        sa.Column(
            "token_id",
            sa.String(32),
            sa.ForeignKey("api_tokens.id", ondelete="CASCADE", name="fk_token_roles_token_id"),
            primary_key=True,
        ),
        sa.Column("project", Name, primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("project", Name, nullable=True),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", Json, nullable=False),
    )
    op.create_index("ix_audit_log_project_seq", "audit_log", ["project", "seq"])
    op.create_table(
        "endpoints",
        sa.Column("name", Name, primary_key=True),
        sa.Column("project", Name, nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("endpoints")
    op.drop_index("ix_audit_log_project_seq", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("token_roles")
    op.drop_table("api_tokens")
    op.drop_table("projects")
