"""Opening usina's database (``usina.stores.database``): both stores get the same SQLite
handling, a database that is not usina's is refused instead of being taken for a new store, and
a database at the newest revision opens without writing (``usina runs ls`` on a full disk)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from usina.engine.records import RunId, RunRecord, RunState
from usina.errors import StoreError
from usina.stores.platform import PlatformStore, Role
from usina.stores.sql import SqlMetadataStore

STORES = [SqlMetadataStore, PlatformStore]
REPO = Path(__file__).resolve().parents[2]


def _statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    return seen


@pytest.mark.parametrize("store_type", STORES, ids=["metadata", "platform"])
def test_both_stores_use_wal_and_the_busy_timeout(tmp_path: Path, store_type: Any) -> None:
    store = store_type(f"sqlite:///{tmp_path / 'u.db'}", busy_timeout=7)
    try:
        with store._engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
            }
    finally:
        store.close()
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": 7000,
        "synchronous": 1,
        "foreign_keys": 1,
    }


def test_platform_writes_take_the_write_lock_up_front_and_reads_do_not(tmp_path: Path) -> None:
    store = PlatformStore(f"sqlite:///{tmp_path / 'u.db'}")
    try:
        seen = _statements(store._engine)
        token, _ = store.create_token("ci", {"fraud": Role.EDITOR})
        assert "BEGIN IMMEDIATE" in seen
        seen.clear()
        assert store.authenticate(token) is not None
        assert "BEGIN DEFERRED" in seen
        assert "BEGIN IMMEDIATE" not in seen
    finally:
        store.close()


def test_platform_writers_in_threads_wait_for_each_other(tmp_path: Path) -> None:
    # Deferred write transactions that read first are refused "database is locked" at once in
    # WAL mode when another writer commits in between; immediate ones wait their turn.
    url = f"sqlite:///{tmp_path / 'u.db'}"
    stores = [PlatformStore(url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def write(store: PlatformStore, n: int) -> None:
        barrier.wait()
        try:
            for i in range(15):
                store.create_token(f"t{n}-{i}", {"p": Role.VIEWER})
                store.audit(f"t{n}", "write", project="p", target=str(i), outcome="ok")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len(stores[0].list_tokens()) == 60
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("store_type", STORES, ids=["metadata", "platform"])
def test_an_empty_database_file_is_refused(tmp_path: Path, store_type: Any) -> None:
    path = tmp_path / "usina.db"
    SqlMetadataStore(f"sqlite:///{path}").close()
    path.write_bytes(b"")  # truncated: the history is gone
    with pytest.raises(StoreError, match=r"is an empty file \(0 bytes\).*delete it"):
        store_type(f"sqlite:///{path}")
    assert path.stat().st_size == 0  # left as it was found


def test_a_new_store_is_created_where_no_file_is(tmp_path: Path) -> None:
    path = tmp_path / "new" / "usina.db"
    with SqlMetadataStore(f"sqlite:///{path}") as store:
        assert store.list_runs() == []
    with SqlMetadataStore(f"sqlite:///{path}") as store:  # and reopened
        assert store.list_runs() == []


@pytest.mark.parametrize("store_type", STORES, ids=["metadata", "platform"])
def test_a_sqlite_database_of_another_application_is_refused(
    tmp_path: Path, store_type: Any
) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    with pytest.raises(StoreError, match=r"is not a usina database: it has tables \(invoices\)"):
        store_type(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:  # untouched
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"invoices"}


def test_a_database_stamped_by_another_alembic_is_refused(tmp_path: Path) -> None:
    # MLflow's own database, say: Alembic-managed, with revisions usina does not ship.
    path = tmp_path / "mlflow.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('cbc13b556ace')")
        db.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match=r"revision 'cbc13b556ace'.*0001, 0002"):
        SqlMetadataStore(f"sqlite:///{path}")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usina.db"
    path.write_bytes(b"these are not the bytes of a database\n" * 200)
    with pytest.raises(StoreError, match="is not a SQLite database"):
        SqlMetadataStore(f"sqlite:///{path}")


@pytest.mark.postgres
def test_a_postgres_database_of_another_alembic_is_refused(postgres_server: Any) -> None:
    url = postgres_server.create_database()
    from usina.stores.database import normalize_url

    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('cbc13b556ace')")
    engine.dispose()
    with pytest.raises(StoreError, match="revision 'cbc13b556ace'"):
        PlatformStore(url)


# A child process that may not write a single byte more to any file (RLIMIT_FSIZE = 0): the
# way a full disk looks to SQLite, which cannot create its shared-memory index of a WAL file.
_READ_ON_A_FULL_DISK = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    from usina.stores.sql import SqlMetadataStore
    from usina.stores.platform import PlatformStore
    url = sys.argv[1]
    with SqlMetadataStore(url) as store:
        print([run.id for run in store.list_runs()])
        try:
            store.save_run(store.get_run("r1"))
        except Exception as exc:
            print("write refused:", type(exc).__name__)
    store = PlatformStore(url)
    print(len(store.list_tokens()))
    store.close()
    """
)


def test_reading_a_current_database_writes_nothing_even_on_a_full_disk(tmp_path: Path) -> None:
    path = tmp_path / "usina.db"
    url = f"sqlite:///{path}"
    with SqlMetadataStore(url) as store:
        run = RunRecord(
            id=RunId("r1"), pipeline="p", plan={}, params={}, state=RunState.PENDING, created_at=1.0
        )
        store.create_run(run, [])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"usina.db"}  # closed cleanly: no -wal or -shm left
    out = subprocess.run(
        [sys.executable, "-c", _READ_ON_A_FULL_DISK, url],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": f"{REPO / 'src'}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["['r1']", "write refused: StoreError", "0"]
    assert path.read_bytes() == before["usina.db"]


def test_runs_ls_works_on_a_full_disk(tmp_path: Path) -> None:
    home = tmp_path / ".usina"
    with SqlMetadataStore(f"sqlite:///{home / 'usina.db'}") as store:
        run = RunRecord(
            id=RunId("r1"), pipeline="p", plan={}, params={}, state=RunState.FAILED, created_at=1.0
        )
        store.create_run(run, [])
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)); "
        "from usina.cli.main import main; main()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "runs", "ls", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PYTHONPATH": f"{REPO / 'src'}",
            "PATH": "/usr/bin:/bin",
            "USINA_HOME": str(home),
            "HOME": str(tmp_path),
        },
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "disk full" in out.stderr or "shared-memory index" in out.stderr
    assert '"id": "r1"' in out.stdout
