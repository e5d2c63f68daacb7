"""The engine's records: runs, steps, attempts, artifacts and events, as frozen values.

Everything the engine knows lives in these records in the metadata store, the truth it writes
first. Between passes it keeps a mirror of the runs it drives (``usina.engine.mirror``), which
it rereads whenever it cannot be sure it wrote every change since; nothing else survives a pass.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NewType

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.sdk.retry import FailureClass

RunId = NewType("RunId", str)
AttemptId = NewType("AttemptId", str)


class RunState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StepState(enum.StrEnum):
    PENDING = "pending"  # waiting for upstream steps
    BACKOFF = "backoff"  # waiting before its next attempt
    RUNNING = "running"  # an attempt is running
    SUCCEEDED = "succeeded"  # has its outputs (``cached`` tells whether it ran)
    FAILED = "failed"  # out of retries, or a failure class that is not retried
    SKIPPED = "skipped"  # an upstream step failed or was cancelled
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (
            StepState.SUCCEEDED,
            StepState.FAILED,
            StepState.SKIPPED,
            StepState.CANCELLED,
        )


class AttemptState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A value written by a step: its content hash and how to read it back."""

    digest: str  # "sha256:<hex>"
    serializer: str  # "parquet", "npy", "json", "pickle", ...
    type_name: str  # the Python type it was written from, for the reader
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "serializer": self.serializer,
            "type_name": self.type_name,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(
            digest=str(data["digest"]),
            serializer=str(data["serializer"]),
            type_name=str(data["type_name"]),
            size=int(data["size"]),
        )


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: RunId
    pipeline: str
    plan: dict[str, Any]  # Plan.to_json()
    params: dict[str, Any]
    state: RunState
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    error: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    project: str = "default"
    lease_owner: str | None = None
    lease_expires: float | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: RunId
    node: str
    state: StepState
    resources: dict[str, Any]  # the resources of the next attempt (grown after an oom)
    cache_key: str | None = None
    cached: bool = False
    outputs: tuple[ArtifactRef, ...] = ()
    attempts: int = 0
    next_attempt_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    retry_base: int = 0  # attempts numbered <= this predate a resume and use no retry budget


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: AttemptId
    run_id: RunId
    node: str
    number: int
    state: AttemptState
    resources: dict[str, Any]
    started_at: float
    finished_at: float | None = None
    failure_class: FailureClass | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None  # the evidence: traceback tail, pod status message
    backend: str = "local"
    gpus: int = 0  # every GPU the attempt holds: per-node GPUs x nodes for a gang
    log_uri: str | None = None

    @property
    def gpu_seconds(self) -> float:
        if self.finished_at is None or self.gpus == 0:
            return 0.0
        return max(0.0, self.finished_at - self.started_at) * self.gpus


@dataclass(frozen=True, slots=True)
class Event:
    run_id: RunId
    at: float
    kind: str  # "run_started", "step_cached", "attempt_failed", ...
    node: str | None = None
    attempt: str | None = None
    message: str = ""


#: Events that say why a step ran instead of coming from the cache.
WHY_EVENTS = ("step_cache_miss", "step_rerun", "step_unused")


def step_reasons(events: Sequence[Any]) -> dict[str, str]:
    """node -> why it last ran (not from the cache), from a run's events (records or JSON)."""
    reasons: dict[str, str] = {}
    for event in events:
        kind = event["kind"] if isinstance(event, dict) else event.kind
        node = event.get("node") if isinstance(event, dict) else event.node
        message = event.get("message", "") if isinstance(event, dict) else event.message
        if kind in WHY_EVENTS and node:
            if kind == "step_cache_miss" and reasons.get(node, "").startswith("resume: "):
                continue  # a resumed step's own reason stays
            if kind == "step_unused":
                message = f"not run: past the end of its map's list ({message})"
            reasons[node] = f"resume: {message}" if kind == "step_rerun" else message
    return reasons
