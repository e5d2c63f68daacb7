"""The Kubernetes backend's own decisions, kept where a restarted backend finds them.

Most outcomes are in the cluster (a Job's conditions, its pods). Some are the backend's alone:
it cancelled an attempt, gave up on a pod no node can take, timed a step out, or saw Kueue
evict it, and then deleted the Job. Those are written as a record next to the attempt's other
records in the artifact store (``attempts/<id>/backend-decision.json``), shared by every
server replica, and read back when an attempt has no Job any more.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from usina.engine.ports import Observation, TaskState
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from usina.engine.ports import ArtifactStore


def decision_key(attempt_id: str) -> str:
    return f"attempts/{attempt_id}/backend-decision.json"


def encode(obs: Observation) -> bytes:
    return json.dumps(
        {
            "state": obs.state.value,
            "failure_class": obs.failure_class.value if obs.failure_class else None,
            "exit_code": obs.exit_code,
            "reason": obs.reason,
            "message": obs.message,
            "started_at": obs.started_at,
            "finished_at": obs.finished_at,
        },
        sort_keys=True,
    ).encode()


def decode(data: bytes) -> Observation:
    raw = json.loads(data)
    cls = raw.get("failure_class")
    return Observation(
        TaskState(raw["state"]),
        FailureClass(cls) if cls else None,
        exit_code=raw.get("exit_code"),
        reason=raw.get("reason"),
        message=raw.get("message"),
        started_at=raw.get("started_at"),
        finished_at=raw.get("finished_at"),
    )


def store_decision(artifacts: ArtifactStore, attempt_id: str, obs: Observation) -> None:
    artifacts.write_record(decision_key(attempt_id), encode(obs))


def read_decision(artifacts: ArtifactStore, attempt_id: str) -> Observation | None:
    data = artifacts.read_record(decision_key(attempt_id))
    return decode(data) if data is not None else None
