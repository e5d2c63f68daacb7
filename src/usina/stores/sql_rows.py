"""Conversions between the engine's records and rows of the metadata store's SQL tables.

Enums are stored as their string values, JSON documents as JSON columns, tuples of artifact
references as JSON lists.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from usina.engine.records import (
    ArtifactRef,
    AttemptId,
    AttemptRecord,
    AttemptState,
    Event,
    RunId,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
)
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from sqlalchemy import RowMapping as Row


def run_to_row(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "pipeline": run.pipeline,
        "project": run.project,
        "state": RunState(run.state).value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "cancel_requested": run.cancel_requested,
        "error": run.error,
        "plan": run.plan,
        "params": run.params,
        "labels": run.labels,
        "lease_owner": run.lease_owner,
        "lease_expires": run.lease_expires,
    }


def run_from_row(row: Row) -> RunRecord:
    return RunRecord(
        id=RunId(row["id"]),
        pipeline=row["pipeline"],
        plan=dict(row["plan"]),
        params=dict(row["params"]),
        state=RunState(row["state"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        cancel_requested=bool(row["cancel_requested"]),
        error=row["error"],
        labels=dict(row["labels"]),
        project=row["project"],
        lease_owner=row["lease_owner"],
        lease_expires=row["lease_expires"],
    )


def step_to_row(step: StepRecord) -> dict[str, Any]:
    return {
        "run_id": step.run_id,
        "node": step.node,
        "state": StepState(step.state).value,
        "resources": step.resources,
        "cache_key": step.cache_key,
        "cached": step.cached,
        "outputs": [ref.to_json() for ref in step.outputs],
        "attempts": step.attempts,
        "next_attempt_at": step.next_attempt_at,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "error": step.error,
        "metrics": {name: _finite(value) for name, value in step.metrics.items()},
        "retry_base": step.retry_base,
    }


def _finite(value: float) -> float | str:
    # PostgreSQL's JSON has no NaN or infinity: keep those as "nan"/"inf"/"-inf", which
    # ``float()`` reads back (a diverged loss is a metric worth keeping).
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def step_from_row(row: Row) -> StepRecord:
    return StepRecord(
        run_id=RunId(row["run_id"]),
        node=row["node"],
        state=StepState(row["state"]),
        resources=dict(row["resources"]),
        cache_key=row["cache_key"],
        cached=bool(row["cached"]),
        outputs=tuple(ArtifactRef.from_json(item) for item in row["outputs"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        metrics={str(k): float(v) for k, v in row["metrics"].items()},
        retry_base=int(row["retry_base"] or 0),
    )


def attempt_to_row(attempt: AttemptRecord) -> dict[str, Any]:
    failure = attempt.failure_class
    return {
        "id": attempt.id,
        "run_id": attempt.run_id,
        "node": attempt.node,
        "number": attempt.number,
        "state": AttemptState(attempt.state).value,
        "resources": attempt.resources,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "failure_class": None if failure is None else FailureClass(failure).value,
        "exit_code": attempt.exit_code,
        "reason": attempt.reason,
        "message": attempt.message,
        "backend": attempt.backend,
        "gpus": attempt.gpus,
        "log_uri": attempt.log_uri,
    }


def attempt_from_row(row: Row) -> AttemptRecord:
    failure = row["failure_class"]
    return AttemptRecord(
        id=AttemptId(row["id"]),
        run_id=RunId(row["run_id"]),
        node=row["node"],
        number=row["number"],
        state=AttemptState(row["state"]),
        resources=dict(row["resources"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        failure_class=None if failure is None else FailureClass(failure),
        exit_code=row["exit_code"],
        reason=row["reason"],
        message=row["message"],
        backend=row["backend"],
        gpus=row["gpus"],
        log_uri=row["log_uri"],
    )


def event_to_row(event: Event) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "at": event.at,
        "kind": event.kind,
        "node": event.node,
        "attempt": event.attempt,
        "message": event.message,
    }


def event_from_row(row: Row) -> Event:
    return Event(
        run_id=RunId(row["run_id"]),
        at=row["at"],
        kind=row["kind"],
        node=row["node"],
        attempt=row["attempt"],
        message=row["message"],
    )
