"""Opening usina's SQL database: the one SQLAlchemy engine factory of both stores.

``SqlMetadataStore`` and ``PlatformStore`` share one database (one URL) and both open it with
``open_database``, so both get the same connection handling:

- SQLite: a busy timeout (a writer waits for another process's write lock instead of failing),
  WAL (readers never wait for the writer), ``synchronous=NORMAL``, foreign keys, and writers that
  ``BEGIN IMMEDIATE`` (``for_writing``: the write lock is taken up front, so a read transaction
  is never refused its upgrade to a write one). An in-memory database is one shared connection.
- PostgreSQL: psycopg 3 (``normalize_url``), connections checked before use.
- Both: the schema is migrated on open (``usina.stores.migrate``, which retries SQLite's
  immediate "database is locked" of processes opening a new file together).

Before the database is migrated it is checked to be usina's (``check_database``): an empty
(0-byte) SQLite file, a file that is not SQLite, and a database of another application are
refused with what to do, so that a truncated store is never mistaken for a new one. A database
at the newest revision is opened without a single write; when SQLite cannot create its
shared-memory index (a full disk), the store reads through one exclusively locked connection
per transaction, so ``usina runs ls`` still works and only writes fail.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import NullPool, StaticPool

from usina.errors import StoreError
from usina.stores import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

# How long an empty SQLite file may stay empty before it is taken for a truncated store and not
# for a new one that another process is creating (SQLite writes its 4 KiB header within
# microseconds of creating the file, when the connection switches it to WAL).
EMPTY_FILE_GRACE = 1.0

# SQLite's messages when it cannot write its shared-memory index or journal.
_NO_SPACE = ("disk I/O error", "database or disk is full")


def normalize_url(url: str) -> str:
    """The SQLAlchemy URL for ``url``: ``postgresql://`` and ``postgres://`` use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def shown_url(url: str | sa.URL) -> str:
    """``url`` with any password hidden, for messages."""
    return sa.make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: sa.URL) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None
    return Path(database).expanduser()


def for_writing(conn: sa.Connection) -> sa.Connection:
    """``conn``, set to take SQLite's write lock when its transaction begins (BEGIN IMMEDIATE).

    A no-op on other databases."""
    if conn.dialect.name == "sqlite":
        conn.execution_options(**{migrate.SQLITE_BEGIN: "IMMEDIATE"})
    return conn


class SqlStore:
    """A store on a database that ``open_database`` opened: its engine, and transactions whose
    SQL errors become ``StoreError`` naming the store. An ``IntegrityError`` passes through
    (callers read it as "exists already"). Subclasses name themselves in ``kind``."""

    kind = "store"

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self._shown_url = shown_url(normalize_url(url))
        self._engine = open_database(url, what=f"the {self.kind}", busy_timeout=busy_timeout)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _conn(self, what: str, *, write: bool = True) -> Iterator[sa.Connection]:
        """A transaction; a writing one takes SQLite's write lock up front (``for_writing``)."""
        try:
            with self._engine.connect() as conn:
                if write:
                    for_writing(conn)
                with conn.begin():
                    yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.kind} {self._shown_url}: {what} failed: {exc}") from exc


def open_database(url: str, *, what: str, busy_timeout: float = 30.0) -> sa.Engine:
    """An engine on the database at ``url``, checked to be usina's and migrated to the newest
    schema. ``what`` names the store in messages ("the metadata store").

    busy_timeout: seconds an SQLite writer waits for another process's write lock.
    Raises ``StoreError`` saying what failed and what to do.
    """
    parsed = sa.make_url(normalize_url(url))
    shown = shown_url(parsed)
    path = sqlite_file(parsed)
    if path is not None:
        _refuse_an_empty_file(path, what)
    try:
        engine = _create_engine(parsed, busy_timeout=busy_timeout, degraded=False)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(
            f"cannot open {what} {shown}: {exc}; check the URL (sqlite:///path or "
            "postgresql://user@host/db) and that the driver is installed "
            "(pip install 'usina[postgres]' for PostgreSQL)"
        ) from exc
    try:
        try:
            _check_and_upgrade(engine, what, shown)
        except sa.exc.OperationalError as exc:
            if path is None or not any(text in str(exc) for text in _NO_SPACE):
                raise
            # No room for the WAL index: read through exclusively locked connections.
            engine.dispose()
            engine = _create_engine(parsed, busy_timeout=busy_timeout, degraded=True)
            try:
                _check_and_upgrade(engine, what, shown)
            except SQLAlchemyError:
                raise exc from None
            log.warning(
                "%s %s: SQLite cannot write its shared-memory index (is the disk full?); "
                "reading with an exclusive lock per transaction, writes will fail",
                what,
                shown,
            )
    except SQLAlchemyError as exc:
        engine.dispose()
        hint = ""
        if path is not None and "file is not a database" in str(exc):
            hint = (
                f"; {path} is not a SQLite database: point the store at another file, "
                "or move this one away to start a new, empty store"
            )
        raise StoreError(
            f"cannot migrate {what} {shown} to the current schema: {exc}{hint}"
        ) from exc
    except BaseException:
        engine.dispose()
        raise
    return engine


def _refuse_an_empty_file(path: Path, what: str) -> None:
    deadline = time.monotonic() + EMPTY_FILE_GRACE
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return  # a new store
        if size > 0:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise StoreError(
        f"{what} {path} is an empty file (0 bytes), not a usina database: if it held runs, "
        "they are gone (restore the file from a backup); to start a new, empty store, "
        f"delete it (rm {path})"
    )


def _create_engine(url: sa.URL, *, busy_timeout: float, degraded: bool) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    path = sqlite_file(url)
    if path is None:
        # One shared connection, or every pooled connection would see its own empty database.
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Degraded: no pool, so the exclusive lock is let go at the end of each transaction.
        engine = sa.create_engine(url, poolclass=NullPool) if degraded else sa.create_engine(url)
    _install_sqlite_hooks(
        engine, busy_ms=int(busy_timeout * 1000), wal=path is not None, exclusive=degraded
    )
    return engine


def _install_sqlite_hooks(engine: sa.Engine, *, busy_ms: int, wal: bool, exclusive: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (the
        # ``begin`` hook below), so that writers can take the write lock up front.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if exclusive:
                # Set before the first access: SQLite then keeps the WAL index in memory.
                cursor.execute("PRAGMA locking_mode = EXCLUSIVE")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers BEGIN IMMEDIATE (``for_writing``): they wait (busy_timeout) for the write
        # lock instead of failing when a read transaction cannot be upgraded to a write one.
        mode = conn.get_execution_options().get(migrate.SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _check_and_upgrade(engine: sa.Engine, what: str, shown: str) -> None:
    migrate.upgrade(engine, check=lambda conn: check_database(conn, what, shown))


def check_database(conn: sa.Connection, what: str, shown: str) -> None:
    """Refuse a database that is not usina's: one stamped with a revision usina does not ship
    (another application's Alembic, or a newer usina), or a SQLite file with tables but no
    usina schema. An empty database is a new store."""
    stamped = migrate.stamped_revision(conn)
    if stamped == migrate.HEAD:
        return
    if stamped is not None:
        ours = migrate.revisions()
        if stamped not in ours:
            raise StoreError(
                f"{what} {shown} is not a database of this usina: its schema is at revision "
                f"{stamped!r}, and usina's revisions are {', '.join(ours)}. It belongs to "
                "another application or to a newer usina; point usina at its own database "
                "(USINA_DATABASE_URL) or upgrade usina"
            )
        return
    if conn.dialect.name != "sqlite":
        return  # a PostgreSQL database may hold other applications' tables beside usina's
    tables = sorted(sa.inspect(conn).get_table_names())
    if tables:
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            f"{what} {shown} is not a usina database: it has tables ({listed}) but no usina "
            "schema. Point usina at its own database file (USINA_DATABASE_URL), or move this "
            "file away to start a new, empty store"
        )
