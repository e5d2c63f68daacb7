"""In-memory stores: ``InMemoryMetadataStore`` and ``InMemoryArtifactStore``.

Dict-based, thread-safe (one lock each), and held to the same contract suites as
``usina.stores.sql.SqlMetadataStore`` and ``usina.stores.artifacts.FsspecArtifactStore``: the
same ordering, the same errors, the same lease rules. Records are copied in and out, so a
caller mutating a dict inside a record cannot change what the store holds.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import itertools
import re
import threading
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from usina.errors import (
    ArtifactCorruptError,
    ArtifactMissingError,
    NotFoundError,
    StateError,
    StoreError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.engine.records import (
        ArtifactRef,
        AttemptRecord,
        AttemptState,
        Event,
        RunRecord,
        RunState,
        StepRecord,
    )

T = TypeVar("T")

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


def _copy(value: T) -> T:
    return copy.deepcopy(value)


class InMemoryMetadataStore:
    """A ``MetadataStore`` in dicts. ``close()`` is accepted and does nothing."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._attempts: dict[str, AttemptRecord] = {}
        self._events: list[tuple[float, int, Event]] = []
        self._seq = itertools.count()
        self._cache: dict[str, tuple[ArtifactRef, ...]] = {}

    def close(self) -> None:
        pass

    def _need_run(self, run_id: str, what: str) -> None:
        if run_id not in self._runs:
            raise StoreError(f"{what} failed: run {run_id!r} does not exist; create_run it first")

    def create_run(
        self, run: RunRecord, steps: Sequence[StepRecord], events: Sequence[Event] = ()
    ) -> None:
        wrong = [s.node for s in steps if s.run_id != run.id]
        if wrong:
            raise ValueError(f"steps {wrong} belong to another run than {run.id!r}")
        with self._lock:
            if run.id in self._runs:
                raise StateError(
                    f"run {run.id!r} exists already; save_run updates it, or pick a new id"
                )
            self._runs[run.id] = _copy(run)
            self._steps[run.id] = {s.node: _copy(s) for s in steps}
            for event in events:
                self.add_event(event)

    def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise NotFoundError(
                    f"run {run_id!r} does not exist; `usina runs ls` lists the runs"
                )
            return _copy(run)

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
        with self._lock:
            found = [
                run
                for run in self._runs.values()
                if (before is None or run.created_at < before)
                and (state is None or run.state == state)
                and (pipeline is None or run.pipeline == pipeline)
                and (project is None or run.project == project)
            ]
            found.sort(key=lambda run: (run.created_at, run.id), reverse=True)
            return _copy(found[:limit])

    def save_run(self, run: RunRecord, events: Sequence[Event] = ()) -> None:
        with self._lock:
            old = self._runs.get(run.id)
            if old is not None:  # the lease is only changed by acquire/release_lease
                run = dataclasses.replace(
                    run, lease_owner=old.lease_owner, lease_expires=old.lease_expires
                )
            self._runs[run.id] = _copy(run)
            self._steps.setdefault(run.id, {})
            for event in events:
                self.add_event(event)

    def get_steps(self, run_id: str) -> list[StepRecord]:
        with self._lock:
            by_node = self._steps.get(run_id, {})
            return _copy([by_node[node] for node in sorted(by_node)])

    def save_step(self, step: StepRecord, events: Sequence[Event] = ()) -> None:
        with self._lock:
            self._need_run(step.run_id, f"saving step {step.node!r}")
            self._steps[step.run_id][step.node] = _copy(step)
            for event in events:
                self.add_event(event)

    def get_attempts(self, run_id: str, node: str | None = None) -> list[AttemptRecord]:
        with self._lock:
            found = [
                a
                for a in self._attempts.values()
                if a.run_id == run_id and (node is None or a.node == node)
            ]
            found.sort(key=lambda a: (a.started_at, a.number, a.id))
            return _copy(found)

    def save_attempt(self, attempt: AttemptRecord) -> None:
        with self._lock:
            self._need_run(attempt.run_id, f"saving attempt {attempt.id!r}")
            self._attempts[attempt.id] = _copy(attempt)

    def record_attempt(
        self,
        attempt: AttemptRecord,
        *,
        expected: AttemptState | None,
        events: Sequence[Event] = (),
        step: StepRecord | None = None,
    ) -> bool:
        with self._lock:  # re-entrant: the writes below (or a subclass's) take it too
            self._need_run(attempt.run_id, f"recording attempt {attempt.id!r}")
            stored = self._attempts.get(attempt.id)
            if (None if stored is None else stored.state) != expected:
                return False
            self.save_attempt(attempt)
            if step is not None:
                self.save_step(step)
            for event in events:
                self.add_event(event)
            return True

    def add_event(self, event: Event) -> None:
        with self._lock:
            self._need_run(event.run_id, f"adding a {event.kind!r} event")
            self._events.append((event.at, next(self._seq), _copy(event)))

    def list_events(self, run_id: str) -> list[Event]:
        with self._lock:
            found = sorted(e for e in self._events if e[2].run_id == run_id)
            return [_copy(e) for _, _, e in found]

    def cache_get(self, key: str) -> tuple[ArtifactRef, ...] | None:
        with self._lock:
            return self._cache.get(key)

    def cache_put(self, key: str, outputs: Sequence[ArtifactRef], run_id: str, node: str) -> None:
        with self._lock:
            self._cache[key] = tuple(outputs)

    def acquire_lease(self, run_id: str, owner: str, ttl: float, now: float) -> bool:
        if ttl <= 0:
            raise ValueError(f"a lease's ttl must be > 0 seconds, got {ttl}")
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise NotFoundError(f"run {run_id!r} does not exist; cannot lease it")
            free = (
                run.lease_owner is None
                or run.lease_expires is None
                or run.lease_expires <= now
                or run.lease_owner == owner
            )
            if free:
                self._runs[run_id] = dataclasses.replace(
                    run, lease_owner=owner, lease_expires=now + ttl
                )
            return free

    def release_lease(self, run_id: str, owner: str) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is not None and run.lease_owner == owner:
                self._runs[run_id] = dataclasses.replace(run, lease_owner=None, lease_expires=None)


class InMemoryArtifactStore:
    """An ``ArtifactStore`` in dicts. Its ``url`` names this one instance; ``local_path`` is
    always None (nothing is on disk)."""

    _instances = itertools.count()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, bytes] = {}
        self._records: dict[str, bytes] = {}
        self._url = f"memory-fake://{next(self._instances)}"

    @property
    def url(self) -> str:
        return self._url

    @staticmethod
    def _check(digest: str) -> str:
        if not _DIGEST.match(digest):
            raise StoreError(
                f"{digest!r} is not an artifact digest; expected 'sha256:' and 64 hex digits"
            )
        return digest

    @staticmethod
    def _check_key(key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(
                f"record key {key!r} is not a relative path like 'attempts/<id>/result.json'"
            )
        return key

    def _ingest(self, src: BinaryIO, what: str) -> tuple[str, bytes]:
        hasher = hashlib.sha256()
        parts: list[bytes] = []
        try:
            while chunk := self._read(src):
                hasher.update(chunk)
                parts.append(chunk)
        except OSError as exc:
            raise StoreError(f"cannot write {what} to {self._url}: {exc}") from exc
        return "sha256:" + hasher.hexdigest(), b"".join(parts)

    def _read(self, src: BinaryIO) -> bytes:
        # The one place bytes come in: tests make it fail to simulate a crash mid-write.
        return src.read(_CHUNK)

    def put_bytes(self, data: bytes) -> str:
        digest, data = self._ingest(io.BytesIO(data), "an artifact")
        with self._lock:
            self._blobs.setdefault(digest, data)
        return digest

    def put_file(self, path: str) -> str:
        try:
            with open(path, "rb") as src:
                digest, data = self._ingest(src, f"{path!r} as an artifact")
        except OSError as exc:
            raise StoreError(f"cannot store {path!r} as an artifact: {exc}") from exc
        with self._lock:
            self._blobs.setdefault(digest, data)
        return digest

    def get_bytes(self, digest: str) -> bytes:
        with self._lock:
            data = self._blobs.get(self._check(digest))
            if data is not None and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                del self._blobs[digest]  # moved aside, as the real store does
                raise ArtifactCorruptError(
                    f"artifact {digest} in {self._url} is corrupt; it is not used", digest
                )
        if data is None:
            raise ArtifactMissingError(f"artifact {digest} is not in {self._url}")
        return data

    def local_path(self, digest: str) -> str | None:
        self._check(digest)
        return None

    def exists(self, digest: str) -> bool:
        with self._lock:
            return self._check(digest) in self._blobs

    def verify(self, digest: str) -> bool:
        with self._lock:
            data = self._blobs.get(self._check(digest))
        return data is not None and "sha256:" + hashlib.sha256(data).hexdigest() == digest

    def delete(self, digest: str) -> None:
        with self._lock:
            self._blobs.pop(self._check(digest), None)

    def write_record(self, key: str, data: bytes) -> None:
        self._check_key(key)
        _, data = self._ingest(io.BytesIO(data), f"record {key!r}")
        with self._lock:
            self._records[key] = data

    def read_record(self, key: str) -> bytes | None:
        with self._lock:
            return self._records.get(self._check_key(key))
