"""The metadata store in SQL: runs, steps, attempts, events, the cache index and run leases.

``SqlMetadataStore(url)`` implements ``usina.engine.ports.MetadataStore`` with SQLAlchemy Core
on SQLite (the embedded default, in WAL mode) or PostgreSQL (psycopg 3, production). The
database is opened, checked and migrated by ``usina.stores.database`` (shared with the platform
store).

Leases: a run is reconciled by one engine at a time. ``acquire_lease`` is a single conditional
UPDATE (free, expired, or already ours), so two engines racing for a run cannot both win.
``save_run`` never writes the lease columns; only ``acquire_lease``/``release_lease`` do, so an
engine saving a run it read a while ago cannot undo another engine's lease.

Events are written in the transaction of the change they report: ``create_run``, ``save_run``
and ``save_step`` take them, and ``record_attempt`` writes an attempt's new state with its
events (and its step), guarded by the state it expects to find. So events and records always
agree, even when the writer is SIGKILLed between two writes or two engines race.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from usina.engine.records import (
    ArtifactRef,
    AttemptRecord,
    AttemptState,
    Event,
    RunRecord,
    RunState,
    StepRecord,
)
from usina.errors import NotFoundError, StateError, StoreError
from usina.i18n import N_, error
from usina.stores.database import for_writing, normalize_url, open_database, shown_url
from usina.stores.sql_rows import (
    attempt_from_row,
    attempt_to_row,
    event_from_row,
    event_to_row,
    run_from_row,
    run_to_row,
    step_from_row,
    step_to_row,
)
from usina.stores.sql_schema import attempts, cache, events, runs, steps

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

#: What reading a run that does not exist says (a run the caller may not see says the same).
RUN_NOT_FOUND = N_("run {run!r} does not exist; `usina runs ls` lists the runs")


log = logging.getLogger(__name__)

# Columns ``save_run`` leaves alone on an update (see the module docstring).
_LEASE_COLUMNS = frozenset({"lease_owner", "lease_expires"})


class SqlMetadataStore:
    """Metadata in SQL. ``url``: ``sqlite:///path/usina.db`` (default), ``sqlite:///:memory:``,
    or ``postgresql://user@host:5432/db``.

    busy_timeout: seconds an SQLite writer waits for another process's write lock before
        failing (default 30: a reconcile pass of another engine is far shorter).
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self._shown_url = shown_url(normalize_url(url))
        self._upserts: dict[tuple[Any, ...], Any] = {}
        self._statements: dict[str, Any] = {}
        self._batch = threading.local()
        self._engine = open_database(url, what="the metadata store", busy_timeout=busy_timeout)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL, with any password hidden."""
        return self._shown_url

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        """Close every pooled connection. The store is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> SqlMetadataStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlMetadataStore({self._shown_url!r})"

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes made inside into one transaction (per thread; nested is a no-op).

        The engine wraps each reconcile pass in it: one commit instead of one per record. If
        anything inside raises, none of the batch's writes happen. On SQLite only: there one
        process writes at a time anyway and each commit costs a millisecond; on PostgreSQL,
        where several server replicas write at once, a pass-long transaction would hold row
        locks (the shared cache rows) across replicas, so each write commits on its own."""
        if getattr(self._batch, "conn", None) is not None or self._engine.dialect.name != "sqlite":
            yield
            return
        with (
            self._guard("a batch of writes"),
            self._engine.connect() as conn,
            for_writing(conn).begin(),
        ):
            self._batch.conn = conn
            try:
                yield
            finally:
                self._batch.conn = None

    @contextmanager
    def _read(self, what: str) -> Iterator[sa.Connection]:
        batch = getattr(self._batch, "conn", None)
        if batch is not None:  # inside batch(): read what this batch wrote
            with self._guard(what):
                yield batch
            return
        with self._guard(what), self._engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self, what: str) -> Iterator[sa.Connection]:
        batch = getattr(self._batch, "conn", None)
        if batch is not None:
            with self._guard(what):
                yield batch
            return
        with self._guard(what), self._engine.connect() as conn, for_writing(conn).begin():
            yield conn

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(
                f"metadata store {self._shown_url}: {what} failed: {exc.__class__.__name__}: {exc}"
            ) from exc

    def _statement(self, name: str, build: Callable[[], Any]) -> Any:
        """A statement built once and then executed with parameters: building one and
        computing its cache key on every call cost more than running it, every pass."""
        stmt = self._statements.get(name)
        if stmt is None:
            stmt = self._statements[name] = build()
        return stmt

    def _upsert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        row: dict[str, Any],
        keys: Sequence[str],
        keep: frozenset[str] = frozenset(),
    ) -> None:
        # One statement per shape, built once and executed with parameters: building and
        # compiling an upsert per call cost more than the write itself on every engine pass.
        shape = (table.name, tuple(row), tuple(keys), keep)
        stmt = self._upserts.get(shape)
        if stmt is None:
            dialect = self._engine.dialect.name
            insert = _dialect_insert(dialect)
            base = insert(table)
            updates = {
                name: base.excluded[name] for name in row if name not in keys and name not in keep
            }
            stmt = base.on_conflict_do_update(index_elements=list(keys), set_=updates)
            self._upserts[shape] = stmt
        conn.execute(stmt, row)

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self, run: RunRecord, steps_: Sequence[StepRecord], events_: Sequence[Event] = ()
    ) -> None:
        wrong = [s.node for s in steps_ if s.run_id != run.id]
        if wrong:
            raise ValueError(f"steps {wrong} belong to another run than {run.id!r}")
        with self._write(f"creating run {run.id!r}") as conn:
            found = conn.execute(sa.select(runs.c.id).where(runs.c.id == run.id)).first()
            if found is not None:
                raise StateError(
                    f"run {run.id!r} exists already; save_run updates it, or pick a new id"
                )
            conn.execute(sa.insert(runs).values(run_to_row(run)))
            if steps_:
                conn.execute(sa.insert(steps), [step_to_row(s) for s in steps_])
            self._add_events(conn, events_)

    def get_run(self, run_id: str) -> RunRecord:
        stmt = self._statement(
            "get_run", lambda: sa.select(runs).where(runs.c.id == sa.bindparam("run_id"))
        )
        with self._read(f"reading run {run_id!r}") as conn:
            row = conn.execute(stmt, {"run_id": run_id}).mappings().first()
        if row is None:
            raise error(NotFoundError, RUN_NOT_FOUND, run=run_id)
        return run_from_row(row)

    def list_runs(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        state: RunState | None = None,
        pipeline: str | None = None,
        project: str | None = None,
    ) -> list[RunRecord]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        query = sa.select(runs)
        if before is not None:
            query = query.where(runs.c.created_at < before)
        if state is not None:
            query = query.where(runs.c.state == RunState(state).value)
        if pipeline is not None:
            query = query.where(runs.c.pipeline == pipeline)
        if project is not None:
            query = query.where(runs.c.project == project)
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        with self._read("listing runs") as conn:
            rows = conn.execute(query).mappings().all()
        return [run_from_row(row) for row in rows]

    def save_run(self, run: RunRecord, events_: Sequence[Event] = ()) -> None:
        with self._write(f"saving run {run.id!r}") as conn:
            self._upsert(conn, runs, run_to_row(run), ["id"], keep=_LEASE_COLUMNS)
            self._add_events(conn, events_)

    # -- steps and attempts ----------------------------------------------------------------

    def get_steps(self, run_id: str) -> list[StepRecord]:
        query = sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.node)
        with self._read(f"reading the steps of run {run_id!r}") as conn:
            rows = conn.execute(query).mappings().all()
        return [step_from_row(row) for row in rows]

    def save_step(self, step: StepRecord, events_: Sequence[Event] = ()) -> None:
        with self._write(f"saving step {step.node!r} of run {step.run_id!r}") as conn:
            self._upsert(conn, steps, step_to_row(step), ["run_id", "node"])
            self._add_events(conn, events_)

    def get_attempts(self, run_id: str, node: str | None = None) -> list[AttemptRecord]:
        query = sa.select(attempts).where(attempts.c.run_id == run_id)
        if node is not None:
            query = query.where(attempts.c.node == node)
        query = query.order_by(attempts.c.started_at, attempts.c.number, attempts.c.id)
        with self._read(f"reading the attempts of run {run_id!r}") as conn:
            rows = conn.execute(query).mappings().all()
        return [attempt_from_row(row) for row in rows]

    def save_attempt(self, attempt: AttemptRecord) -> None:
        with self._write(f"saving attempt {attempt.id!r}") as conn:
            self._upsert(conn, attempts, attempt_to_row(attempt), ["id"])

    def record_attempt(
        self,
        attempt: AttemptRecord,
        *,
        expected: AttemptState | None,
        events: Sequence[Event] = (),
        step: StepRecord | None = None,
    ) -> bool:
        """One transaction: a conditional write of the attempt (an INSERT that does nothing
        when the id exists, or an UPDATE guarded by the stored state), then, only when it
        changed a row, the step and the events. See ``MetadataStore.record_attempt``."""
        row = attempt_to_row(attempt)
        # RETURNING, not rowcount: psycopg reports no rowcount for an INSERT that may do
        # nothing. The statements are built once; the row travels as parameters (the SET
        # clause is the parameters' columns).
        if expected is None:
            stmt = self._statement(
                "claim_attempt",
                lambda: (
                    _dialect_insert(self.dialect)(attempts)
                    .on_conflict_do_nothing(index_elements=["id"])
                    .returning(attempts.c.id)
                ),
            )
            params = row
        else:
            stmt = self._statement(
                "advance_attempt",
                lambda: (
                    sa.update(attempts)
                    .where(
                        attempts.c.id == sa.bindparam("b_id"),
                        attempts.c.state == sa.bindparam("b_expected"),
                    )
                    .returning(attempts.c.id)
                ),
            )
            params = {k: v for k, v in row.items() if k != "id"}
            params |= {"b_id": attempt.id, "b_expected": AttemptState(expected).value}
        with self._write(f"recording attempt {attempt.id!r} ({attempt.state})") as conn:
            # Nothing written when no row comes back, so the commit is empty.
            if conn.execute(stmt, params).first() is None:
                return False
            if step is not None:
                self._upsert(conn, steps, step_to_row(step), ["run_id", "node"])
            self._add_events(conn, events)
        return True

    # -- events ----------------------------------------------------------------------------

    def add_event(self, event_: Event) -> None:
        with self._write(f"adding a {event_.kind!r} event to run {event_.run_id!r}") as conn:
            self._add_events(conn, [event_])

    def _add_events(self, conn: sa.Connection, events_: Sequence[Event]) -> None:
        """Insert ``events_`` in the caller's transaction: with the change they report."""
        if events_:
            conn.execute(events.insert(), [event_to_row(e) for e in events_])

    def list_events(self, run_id: str) -> list[Event]:
        query = (
            sa.select(events).where(events.c.run_id == run_id).order_by(events.c.at, events.c.seq)
        )
        with self._read(f"reading the events of run {run_id!r}") as conn:
            rows = conn.execute(query).mappings().all()
        return [event_from_row(row) for row in rows]

    # -- cache -----------------------------------------------------------------------------

    def cache_get(self, key: str) -> tuple[ArtifactRef, ...] | None:
        stmt = self._statement(
            "cache_get", lambda: sa.select(cache.c.outputs).where(cache.c.key == sa.bindparam("k"))
        )
        with self._read(f"reading cache entry {key!r}") as conn:
            outputs = conn.execute(stmt, {"k": key}).first()
        if outputs is None:
            return None
        return tuple(ArtifactRef.from_json(item) for item in outputs[0])

    def cache_put(self, key: str, outputs: Sequence[ArtifactRef], run_id: str, node: str) -> None:
        row = {
            "key": key,
            "outputs": [ref.to_json() for ref in outputs],
            "run_id": run_id,
            "node": node,
        }
        with self._write(f"writing cache entry {key!r}") as conn:
            self._upsert(conn, cache, row, ["key"])

    # -- leases ----------------------------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl: float, now: float) -> bool:
        if ttl <= 0:
            raise ValueError(f"a lease's ttl must be > 0 seconds, got {ttl}")
        free_or_ours = sa.or_(
            runs.c.lease_owner.is_(None),
            runs.c.lease_expires.is_(None),
            runs.c.lease_expires <= now,
            runs.c.lease_owner == owner,
        )
        stmt = (
            sa.update(runs)
            .where(runs.c.id == run_id, free_or_ours)
            .values(lease_owner=owner, lease_expires=now + ttl)
        )
        with self._write(f"taking the lease of run {run_id!r} for {owner!r}") as conn:
            if conn.execute(stmt).rowcount == 1:
                return True
            found = conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first()
        if found is None:
            raise NotFoundError(f"run {run_id!r} does not exist; cannot lease it")
        return False

    def release_lease(self, run_id: str, owner: str) -> None:
        stmt = (
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires=None)
        )
        with self._write(f"releasing the lease of run {run_id!r} held by {owner!r}") as conn:
            conn.execute(stmt)


def _dialect_insert(dialect: str) -> Any:
    """The dialect's INSERT with ON CONFLICT, imported when first needed: SQLAlchemy's
    PostgreSQL dialect costs a SQLite store ~40 ms to import."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert
