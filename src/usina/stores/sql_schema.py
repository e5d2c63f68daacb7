"""The metadata store's SQL schema: the tables as SQLAlchemy Core objects.

This is what the queries in ``usina.stores.sql`` are written against. A new database gets
these tables at once; an older one is upgraded by the Alembic migrations in
``usina.stores.migrations``; tests check that both ways make the same schema.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


class _Json(sa.types.TypeDecorator[Any]):
    """JSON documents (plan, params, labels, resources, outputs, metrics): JSONB on PostgreSQL,
    whose dialect is imported only when a PostgreSQL database is used (~15 ms for a SQLite
    store otherwise)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


Json = _Json()

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
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
    # Keyset pagination for ``list_runs``: newest first, ``created_at < before``, with or
    # without one of the filters.
    sa.Index("ix_runs_created_at", "created_at", "id"),
    sa.Index("ix_runs_state_created_at", "state", "created_at"),
    sa.Index("ix_runs_pipeline_created_at", "pipeline", "created_at"),
    sa.Index("ix_runs_project_created_at", "project", "created_at"),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column(
        "run_id",
        sa.String(200),
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

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.String(300), primary_key=True),
    sa.Column(
        "run_id",
        sa.String(200),
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
    sa.Index("ix_attempts_run_id_node", "run_id", "node", "number"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column(
        "run_id",
        sa.String(200),
        sa.ForeignKey("runs.id", ondelete="CASCADE", name="fk_events_run_id"),
        nullable=False,
    ),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("node", sa.String(200), nullable=True),
    sa.Column("attempt", sa.String(300), nullable=True),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Index("ix_events_run_id_at", "run_id", "at", "seq"),
)

# The cache index outlives the runs that filled it, so it has no foreign key to them.
cache = sa.Table(
    "cache",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("outputs", Json, nullable=False),
    sa.Column("run_id", sa.String(200), nullable=False),
    sa.Column("node", sa.String(200), nullable=False),
)

# -- the platform server's tables (revision 0002) -------------------------------------------

# Projects are created when a role on them is first granted. Runs name their project by its
# name; there is no foreign key, so runs submitted by the CLI (project "default") need none.
projects = sa.Table(
    "projects",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("created_at", sa.Double(), nullable=False),
)

# API tokens: ``usn_<id>_<secret>``; only the sha256 of the whole token is stored.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", sa.Double(), nullable=True),
    sa.Column("expires_at", sa.Double(), nullable=True),  # NULL: never (revision 0003)
)

# A token's role in a project: viewer < editor < admin; project "*" means every project.
token_roles = sa.Table(
    "token_roles",
    metadata,
    sa.Column(
        "token_id",
        sa.String(32),
        sa.ForeignKey("api_tokens.id", ondelete="CASCADE", name="fk_token_roles_token_id"),
        primary_key=True,
    ),
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
)

# Who did what, when, to what: every mutation through the server (and refused ones).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Column("actor", sa.String(300), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("project", sa.String(200), nullable=True),
    sa.Column("target", sa.String(300), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("detail", Json, nullable=False),
    sa.Index("ix_audit_log_project_seq", "project", "seq"),
)

# Serving endpoints the server reports on (``GET <url>/v2/health/ready``).
endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
)

# Schedules of the platform server (``usina.scheduling`` decides; ``usina.server.scheduler``
# acts). ``last_tick`` is the watermark: the newest nominal time already handled; it only moves
# forward (compare-and-set), after the tick's runs exist, so a crash between the two re-plans the
# tick and finds its runs (their ids derive from the tick alone).
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("spec", Json, nullable=False),  # cron, timezone, params, policies (see scheduling)
    sa.Column("paused", sa.Boolean(), nullable=False),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.Column("last_tick", sa.Double(), nullable=True),
)

# What each tick became: a run started, a run that existed already, or a skip and its reason.
schedule_ticks = sa.Table(
    "schedule_ticks",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("nominal", sa.Double(), primary_key=True),
    sa.Column("outcome", sa.String(20), nullable=False),  # started, skipped, backfill
    sa.Column("run_id", sa.String(200), nullable=True),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("at", sa.Double(), nullable=False),
)

# Triggers of the platform server (``usina.scheduling.triggers`` decides; ``usina.server.triggers``
# watches and acts). ``state`` is the watcher's memory (an alias's last version), moved by a
# compare-and-set on ``revision``; a run's id derives from its cause, so the store only spares work.
triggers = sa.Table(
    "triggers",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("spec", Json, nullable=False),  # what to watch (see scheduling.triggers)
    sa.Column("params", Json, nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False),
    sa.Column("state", Json, nullable=False),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)

# Each cause a trigger handled: the run it became, or ``baseline`` (present at creation).
# ``cause_hash`` is the sha256 of ``cause`` (an object path can be long).
trigger_firings = sa.Table(
    "trigger_firings",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("cause_hash", sa.String(64), primary_key=True),
    sa.Column("cause", sa.Text(), nullable=False),
    sa.Column("shown", sa.Text(), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),  # started, exists, baseline
    sa.Column("run_id", sa.String(200), nullable=True),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Index("ix_trigger_firings_at", "project", "name", "at"),
)
