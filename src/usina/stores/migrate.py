"""Schema migrations of the metadata store: bring a database to the newest revision.

``upgrade(engine)`` runs Alembic's ``upgrade head`` on the engine's database with the
migrations shipped in ``usina.stores.migrations``; a brand-new database (no revision stamped,
none of usina's tables) instead gets the tables of ``usina.stores.sql_schema`` at once and the
newest revision stamped, without importing Alembic: the same schema (tests/integration's
``test_sql_migrations`` compares both ways of making it), ~0.2 s sooner on every first run.
It is safe to call from several processes at once: on PostgreSQL the upgrade holds a
transaction-level advisory lock, on SQLite it runs in a ``BEGIN IMMEDIATE`` transaction (the
database's one writer lock). A database that is already at the newest revision is left as it
is.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from collections.abc import Callable

    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# pg_advisory_xact_lock key: any fixed 64-bit number, the same in every usina process.
_PG_LOCK_KEY = 0x75_73_69_6E_61_5F_6D_67  # "usina_mg"

# Execution option read by the SQLite ``begin`` hook in ``usina.stores.database``.
SQLITE_BEGIN = "usina_sqlite_begin"


# The newest revision shipped; a test checks it against the migration scripts. Knowing it
# lets an up-to-date database skip importing Alembic at all (a third of a CLI start).
HEAD = "0005"


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def revisions() -> list[str]:
    """Every revision usina ships, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def stamped_revision(connection: sa.Connection) -> str | None:
    """The revision recorded in ``alembic_version``, read without Alembic (None if absent)."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(sa.text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def upgrade(
    engine: sa.Engine,
    *,
    attempts: int = 5,
    check: Callable[[sa.Connection], None] | None = None,
) -> None:
    """Migrate the database of ``engine`` to the newest schema revision (a no-op when there,
    which reads and never writes).

    check: called on a read connection before anything is written; raises to refuse the
        database (``usina.stores.database.check_database``: not usina's).

    SQLite answers "database is locked" at once, without waiting for its busy timeout, when
    several processes open a brand-new file together (one switching it to WAL while another
    reads); that race is retried a few times with a short backoff.
    """
    for attempt in range(1, attempts + 1):
        try:
            _upgrade(engine, check)
            return
        except sa.exc.OperationalError as exc:
            locked = engine.dialect.name == "sqlite" and "database is locked" in str(exc)
            if not locked or attempt == attempts:
                raise
            log.info("metadata store locked while migrating; retry %d/%d", attempt, attempts)
            time.sleep(0.1 * attempt)


def _upgrade(engine: sa.Engine, check: Callable[[sa.Connection], None] | None) -> None:
    with engine.connect() as conn:
        if check is not None:
            check(conn)
        if stamped_revision(conn) == HEAD:
            conn.rollback()
            return
        conn.rollback()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            if _is_new(conn):
                create_new(conn)
                log.info("created the metadata store's tables at schema revision %s", HEAD)
                return
            from alembic import command

            head = head_revision()
            config = alembic_config()
            before = current_revision(conn)
            if before != head:
                log.info("migrating the metadata store from %s to %s", before, head)
                config.attributes["connection"] = conn
                command.upgrade(config, "head")


def _is_new(conn: sa.Connection) -> bool:
    """No revision stamped and none of usina's tables: a database usina has never written."""
    from usina.stores.sql_schema import metadata

    if stamped_revision(conn) is not None:
        return False
    present = set(sa.inspect(conn).get_table_names())
    return not present & set(metadata.tables)


def create_new(conn: sa.Connection) -> None:
    """Make the newest schema in a new database, in the caller's transaction: the tables from
    ``usina.stores.sql_schema`` and ``alembic_version`` stamped at ``HEAD`` (as Alembic's own
    table, so later upgrades continue from there)."""
    from usina.stores.sql_schema import metadata

    metadata.create_all(conn)
    version = sa.Table(
        "alembic_version",
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create(conn)
    conn.execute(version.insert().values(version_num=HEAD))
