"""The metadata store's migrations on SQLite and PostgreSQL: a fresh database gets the schema,
opening again is a no-op, several processes may open a fresh database at once, and the
migrated schema matches ``usina.stores.sql_schema``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from usina.engine.records import RunId, RunRecord, RunState
from usina.stores import migrate
from usina.stores.database import normalize_url, sqlite_file
from usina.stores.sql import SqlMetadataStore
from usina.stores.sql_schema import metadata

TABLES = {
    "runs",
    "steps",
    "attempts",
    "events",
    "cache",
    "projects",
    "api_tokens",
    "token_roles",
    "audit_log",
    "endpoints",
    "schedules",
    "schedule_ticks",
    "triggers",
    "trigger_firings",
    "alembic_version",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes URLs of new, empty databases."""
    if request.param == "sqlite":
        counter = iter(range(1000))
        return lambda: f"sqlite:///{tmp_path / f'db{next(counter)}.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database  # type: ignore[no-any-return]


def _inspect(url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def revision_and_tables(url: str) -> tuple[str | None, set[str]]:
    path = sqlite_file(sa.make_url(url))
    if path is not None and not path.exists():
        return None, set()  # connecting would create an empty file, which a store refuses
    for conn in _inspect(url):
        revision = MigrationContext.configure(conn).get_current_revision()
        return revision, set(sa.inspect(conn).get_table_names())
    raise AssertionError("unreachable")


def test_a_fresh_database_gets_the_schema(fresh_url: Callable[[], str]) -> None:
    url = fresh_url()
    assert revision_and_tables(url) == (None, set())
    with SqlMetadataStore(url):
        pass
    assert revision_and_tables(url) == (migrate.head_revision(), TABLES)


def test_opening_twice_is_a_no_op(fresh_url: Callable[[], str]) -> None:
    url = fresh_url()
    run = RunRecord(
        id=RunId("r1"), pipeline="p", plan={}, params={}, state=RunState.PENDING, created_at=1.0
    )
    with SqlMetadataStore(url) as store:
        store.create_run(run, [])
    with SqlMetadataStore(url) as store:
        assert store.get_run("r1") == run
    assert revision_and_tables(url) == (migrate.head_revision(), TABLES)


def test_the_migrated_schema_matches_the_tables_the_queries_use(
    fresh_url: Callable[[], str],
) -> None:
    url = fresh_url()
    SqlMetadataStore(url).close()
    for conn in _inspect(url):
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def _schema(url: str) -> dict[str, object]:
    """Everything the inspector sees of each table: columns (type, nullability, default),
    primary key, foreign keys, indexes, unique and check constraints."""
    for conn in _inspect(url):
        found = sa.inspect(conn)
        tables: dict[str, object] = {}
        for table in sorted(found.get_table_names()):
            tables[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in found.get_columns(table)
                ],
                "pk": found.get_pk_constraint(table)["constrained_columns"],
                "fks": sorted(
                    (tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in found.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                    for ix in found.get_indexes(table)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in found.get_unique_constraints(table)
                ),
                "checks": sorted(str(c["sqltext"]) for c in found.get_check_constraints(table)),
            }
        return tables
    raise AssertionError("unreachable")


def test_a_new_database_gets_the_schema_the_migrations_make(
    fresh_url: Callable[[], str],
) -> None:
    """A new store is made from the tables at once (no Alembic); it must be the very schema
    that running every migration makes, or a later migration would meet another database."""
    from alembic import command

    migrated = fresh_url()
    engine = sa.create_engine(normalize_url(migrated))
    try:
        with engine.begin() as conn:
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    created = fresh_url()
    SqlMetadataStore(created).close()
    assert revision_and_tables(created) == (migrate.HEAD, TABLES)
    assert _schema(created) == _schema(migrated)


def test_many_processes_opening_a_fresh_database_at_once(fresh_url: Callable[[], str]) -> None:
    url = fresh_url()
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_store() -> None:
        barrier.wait()
        try:
            SqlMetadataStore(url).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert revision_and_tables(url) == (migrate.head_revision(), TABLES)


def test_sqlite_connections_use_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'u.db'}", busy_timeout=7)
    try:
        with store._engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
            }
    finally:
        store.close()
    # synchronous: 1 is NORMAL
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": 7000,
        "synchronous": 1,
        "foreign_keys": 1,
    }


def test_postgres_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_an_unreachable_database_is_a_store_error() -> None:
    from usina.errors import StoreError

    with pytest.raises(StoreError, match="cannot migrate"):
        SqlMetadataStore("postgresql://nobody@127.0.0.1:1/none")


def test_an_in_memory_sqlite_database_works() -> None:
    with SqlMetadataStore("sqlite:///:memory:") as store:
        assert store.list_runs() == []


def test_the_head_constant_matches_the_migration_scripts():
    from usina.stores import migrate

    assert migrate.head_revision() == migrate.HEAD


def test_tokens_of_revision_0002_keep_working_after_the_upgrade(
    fresh_url: Callable[[], str],
) -> None:
    from alembic import command

    from usina.stores.platform import PlatformStore, hash_token

    url = fresh_url()
    token = "usn_0ld70ken0002_secret"
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
            conn.execute(
                sa.text(
                    "INSERT INTO api_tokens (id, name, token_hash, created_at, created_by) "
                    "VALUES ('0ld70ken0002', 'old', :hash, 1.0, 'cli')"
                ),
                {"hash": hash_token(token)},
            )
            conn.execute(sa.text("INSERT INTO token_roles VALUES ('0ld70ken0002', 'p', 'viewer')"))
    finally:
        engine.dispose()
    assert revision_and_tables(url)[0] == "0002"
    platform = PlatformStore(url)  # migrates to the head
    try:
        principal = platform.authenticate(token)
        assert principal is not None
        assert principal.token_id == "0ld70ken0002"
        assert platform.get_token("0ld70ken0002").expires_at is None
    finally:
        platform.close()
    assert revision_and_tables(url) == (migrate.head_revision(), TABLES)
