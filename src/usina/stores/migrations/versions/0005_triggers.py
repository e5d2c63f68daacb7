"""Triggers of the platform server and the causes each one handled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("state", Json, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "trigger_firings",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("cause_hash", sa.String(64), primary_key=True),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("shown", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("at", sa.Double(), nullable=False),
    )
    op.create_index("ix_trigger_firings_at", "trigger_firings", ["project", "name", "at"])


def downgrade() -> None:
    op.drop_index("ix_trigger_firings_at", table_name="trigger_firings")
    op.drop_table("trigger_firings")
    op.drop_table("triggers")
