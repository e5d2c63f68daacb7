"""The Protocols the engine is written against: metadata store, artifact store, backend,
tracker and clock. Each has an in-memory fake in ``usina.testing`` and a contract suite.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from usina.sdk.distributed import Torchrun
from usina.sdk.resources import Resources

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from usina.engine.records import (
        ArtifactRef,
        AttemptRecord,
        AttemptState,
        Event,
        RunRecord,
        RunState,
        StepRecord,
    )
    from usina.sdk.retry import FailureClass


class MetadataStore(Protocol):
    """Where runs, steps, attempts, events and the cache index live (SQL in production).

    Every write that changes a record takes the events that report the change (``events``,
    ``record_attempt``) and writes them in the same transaction: the event log never misses a
    change that happened nor reports one that did not, whenever the writer dies."""

    def create_run(
        self, run: RunRecord, steps: Sequence[StepRecord], events: Sequence[Event] = ()
    ) -> None: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def list_runs(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        state: RunState | None = None,
        pipeline: str | None = None,
        project: str | None = None,
    ) -> list[RunRecord]: ...
    def save_run(self, run: RunRecord, events: Sequence[Event] = ()) -> None: ...
    def get_steps(self, run_id: str) -> list[StepRecord]: ...
    def save_step(self, step: StepRecord, events: Sequence[Event] = ()) -> None: ...
    def get_attempts(self, run_id: str, node: str | None = None) -> list[AttemptRecord]: ...
    def save_attempt(self, attempt: AttemptRecord) -> None: ...
    def record_attempt(
        self,
        attempt: AttemptRecord,
        *,
        expected: AttemptState | None,
        events: Sequence[Event] = (),
        step: StepRecord | None = None,
    ) -> bool:
        """Write an attempt's state change, the events that report it and (optionally) its
        step, in one transaction, and only if the stored attempt is still in state
        ``expected`` (None: it is not stored yet). Returns whether it wrote anything.

        This is how the engine changes an attempt's state: an event is never written without
        the change it reports nor the change without its event (a process killed in between
        leaves neither), and a transition can win only once, so two engines that both saw an
        attempt running (a lease that expired under a slow pass) cannot both conclude it and
        no attempt ever gets two ``attempt_started`` or two outcome events."""
        ...

    def add_event(self, event: Event) -> None: ...
    def list_events(self, run_id: str) -> list[Event]: ...
    def cache_get(self, key: str) -> tuple[ArtifactRef, ...] | None: ...
    def cache_put(
        self, key: str, outputs: Sequence[ArtifactRef], run_id: str, node: str
    ) -> None: ...
    def acquire_lease(self, run_id: str, owner: str, ttl: float, now: float) -> bool: ...
    def release_lease(self, run_id: str, owner: str) -> None: ...


class ArtifactStore(Protocol):
    """Content-addressed bytes (``sha256:<hex>``), plus small named records per attempt."""

    @property
    def url(self) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def put_file(self, path: str) -> str: ...
    def get_bytes(self, digest: str) -> bytes: ...
    def local_path(self, digest: str) -> str | None: ...
    def exists(self, digest: str) -> bool: ...
    def verify(self, digest: str) -> bool: ...
    def delete(self, digest: str) -> None: ...
    def write_record(self, key: str, data: bytes) -> None: ...
    def read_record(self, key: str) -> bytes | None: ...


class TaskState(enum.StrEnum):
    PENDING = "pending"  # accepted, not started (queued, scheduling, pulling)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the backend has no trace of it (never launched, or lost)


@dataclass(frozen=True, slots=True)
class Task:
    """Everything a backend needs to run one attempt of a step.

    Typed values stay typed here: ``resources`` (per node, for a gang) and the gang's spec
    (``distributed``, read from the node). JSON appears only in ``to_json``/``from_json``,
    for the task record the runtime reads (``task_key``). ``node`` is ``PlanNode.to_json()``:
    a backend may find its own extras there (a Kubernetes ``queue_timeout`` or ``image``).
    The engine builds tasks with ``usina.engine.tasks.build_task``.
    """

    attempt_id: str
    run_id: str
    pipeline: str
    node: dict[str, Any]  # PlanNode.to_json(), plus any backend extras
    number: int
    resources: Resources
    inputs: dict[str, dict[str, Any]]  # name -> {"artifact": ArtifactRef json} | {"const": v}
    artifacts_url: str
    params: dict[str, Any]
    sys_path: tuple[str, ...] = ()
    source: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def distributed(self) -> Torchrun | None:
        """The gang this attempt runs as, or None for a single process. Raises ``ValueError``
        for a spec this version does not know."""
        spec = self.node.get("distributed")
        return Torchrun.from_json(dict(spec)) if spec else None

    @property
    def nodes(self) -> int:
        """Machines (pods) the attempt uses: the gang's nodes, else 1."""
        spec = self.distributed
        return spec.nodes if spec is not None else 1

    @property
    def total_gpus(self) -> int:
        """GPUs the whole attempt holds: per-node GPUs x nodes."""
        return self.resources.total_gpus(self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "node": self.node,
            "number": self.number,
            "resources": self.resources.to_json(),
            "inputs": self.inputs,
            "artifacts_url": self.artifacts_url,
            "params": self.params,
            "sys_path": list(self.sys_path),
            "source": self.source,
            "env": self.env,
            "timeout": self.timeout,
            "labels": self.labels,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        values = dict(data)
        values["sys_path"] = tuple(values.get("sys_path", ()))
        values["resources"] = Resources.from_json(dict(values.get("resources") or {}))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Observation:
    """What a backend reports about one attempt."""

    state: TaskState
    failure_class: FailureClass | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


@runtime_checkable
class Backend(Protocol):
    """Runs attempts somewhere (local processes, Kubernetes Jobs) and reports on them."""

    name: str

    def launch(self, task: Task) -> None:
        """Start the attempt; launching an attempt id that exists already is a no-op."""
        ...

    def observe(self, attempt_ids: Sequence[str]) -> dict[str, Observation]:
        """The current state of each attempt; ``UNKNOWN`` for ones it has no trace of."""
        ...

    def cancel(self, attempt_id: str) -> None: ...

    def logs(self, attempt_id: str) -> str: ...

    def wait(self, timeout: float) -> None:
        """Block until something may have changed, or ``timeout`` seconds passed."""
        ...

    def close(self) -> None: ...


class Tracker(Protocol):
    """Experiment tracking (MLflow): a run is a parent run, each step a nested run."""

    def run_started(self, run: RunRecord) -> None: ...
    def step_started(self, run: RunRecord, node: str) -> Mapping[str, str]:
        """Returns environment variables the worker needs to log into the step's run."""
        ...

    def step_finished(
        self, run: RunRecord, step: StepRecord, attempt: AttemptRecord | None
    ) -> None: ...
    def run_finished(self, run: RunRecord) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


# Exit codes of the step runtime (``python -m usina.runtime``). Backends read them through
# ``usina.engine.failures.exit_failure`` to classify an attempt; Kubernetes' podFailurePolicy
# uses them to fail a Job at once (the engine, not the Job controller, owns retries).
EXIT_OK = 0
EXIT_USER_ERROR = 42  # the step's code raised; the traceback is in the attempt's error record
EXIT_OOM = 43  # the step raised MemoryError
EXIT_INFRA = 44  # the runtime could not load the task, its inputs, or write its outputs
EXIT_RANK_LOST = 45  # a rank of a distributed step was killed from outside; its gang was stopped


# Records in the artifact store, per attempt: the engine writes the task before launching;
# the runtime writes the result (success) or the error (failure).
def task_key(attempt_id: str) -> str:
    return f"attempts/{attempt_id}/task.json"


def result_key(attempt_id: str) -> str:
    return f"attempts/{attempt_id}/result.json"


def error_key(attempt_id: str) -> str:
    return f"attempts/{attempt_id}/error.json"


def rank_error_key(attempt_id: str, rank: int) -> str:
    """Where rank ``rank`` of a distributed attempt reports its failure; the launcher (local
    gang) or the backend (Kubernetes) picks the root cause among them for ``error_key``."""
    return f"attempts/{attempt_id}/ranks/{rank}/error.json"


def log_key(attempt_id: str) -> str:
    return f"attempts/{attempt_id}/log.txt"
