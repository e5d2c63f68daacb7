"""The initial schema: runs, steps, attempts, events and the cache index.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as they were at this revision (not imported from the
# live schema, which later revisions may change).
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(200)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", Id, primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("plan", Json, nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("labels", Json, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires", sa.Double(), nullable=True),
    )
    op.create_index("ix_runs_created_at", "runs", ["created_at", "id"])
    op.create_index("ix_runs_state_created_at", "runs", ["state", "created_at"])
    op.create_index("ix_runs_pipeline_created_at", "runs", ["pipeline", "created_at"])
    op.create_index("ix_runs_project_created_at", "runs", ["project", "created_at"])

    op.create_table(
        "steps",
        sa.Column(
            "run_id",
            Id,
            sa.ForeignKey("runs.id", ondelete="CASCADE", name="fk_steps_run_id"),
            primary_key=True,
        ),
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("resources", Json, nullable=False),
        sa.Column("cache_key", sa.String(200), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("outputs", Json, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("retry_base", sa.Integer(), nullable=False, server_default="0"),
    )

    op.create_table(
        "attempts",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column(
            "run_id",
            Id,
            sa.ForeignKey("runs.id", ondelete="CASCADE", name="fk_attempts_run_id"),
            nullable=False,
        ),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("resources", Json, nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("failure_class", sa.String(30), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("backend", sa.String(50), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("log_uri", sa.Text(), nullable=True),
    )
    op.create_index("ix_attempts_run_id_node", "attempts", ["run_id", "node", "number"])

    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column(
            "run_id",
            Id,
            sa.ForeignKey("runs.id", ondelete="CASCADE", name="fk_events_run_id"),
            nullable=False,
        ),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("attempt", sa.String(300), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_events_run_id_at", "events", ["run_id", "at", "seq"])

    op.create_table(
        "cache",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("outputs", Json, nullable=False),
        sa.Column("run_id", Id, nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cache")
    op.drop_index("ix_events_run_id_at", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_attempts_run_id_node", table_name="attempts")
    op.drop_table("attempts")
    op.drop_table("steps")
    for name in (
        "ix_runs_project_created_at",
        "ix_runs_pipeline_created_at",
        "ix_runs_state_created_at",
        "ix_runs_created_at",
    ):
        op.drop_index(name, table_name="runs")
    op.drop_table("runs")
