"""A scriptable in-memory backend for engine tests: each attempt ends as the test says.

``FakeBackend(artifacts, clock)``; ``script(node, "ok", FailureClass.OOM, ...)`` lists the
outcomes of that node's successive attempts (default: success). A successful attempt writes
its outputs (JSON of ``"<node>:<n>"``) and a result record, as the real runtime does. Attempts
finish on the ``observe`` after they were launched, or stay running while ``hold`` is set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from usina.engine.ports import (
    ArtifactStore,
    Observation,
    Task,
    TaskState,
    result_key,
)
from usina.engine.records import ArtifactRef
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.testing.clock import FakeClock


@dataclass
class Launched:
    task: Task
    at: float
    outcome: str | FailureClass = "ok"
    done: bool = False
    cancelled: bool = False


@dataclass
class FakeBackend:
    artifacts: ArtifactStore
    clock: FakeClock
    name: str = "fake"
    launched: dict[str, Launched] = field(default_factory=dict)
    scripts: dict[str, list[str | FailureClass]] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    launch_calls: list[str] = field(default_factory=list)

    def script(self, node: str, *outcomes: str | FailureClass) -> None:
        self.scripts[node] = list(outcomes)

    def launch(self, task: Task) -> None:
        self.launch_calls.append(task.attempt_id)
        if task.attempt_id in self.launched:
            return
        node = task.node["id"]
        queue = self.scripts.get(node, [])
        outcome = queue.pop(0) if queue else "ok"
        self.launched[task.attempt_id] = Launched(task, self.clock.now(), outcome)

    def _complete(self, item: Launched) -> None:
        if item.done:
            return
        item.done = True
        if item.outcome == "ok" and not item.cancelled:
            outputs = []
            for i in range(int(item.task.node["outputs"])):
                data = json.dumps(f"{item.task.node['id']}:{item.task.number}:{i}").encode()
                digest = self.artifacts.put_bytes(data)
                outputs.append(ArtifactRef(digest, "json", "str", len(data)).to_json())
            record = {"outputs": outputs, "metrics": {"attempt": float(item.task.number)}}
            self.artifacts.write_record(
                result_key(item.task.attempt_id), json.dumps(record).encode()
            )

    def observe(self, attempt_ids: Sequence[str]) -> dict[str, Observation]:
        seen: dict[str, Observation] = {}
        for aid in attempt_ids:
            item = self.launched.get(aid)
            if item is None:
                seen[aid] = Observation(TaskState.UNKNOWN)
                continue
            if item.task.node["id"] in self.hold and not item.cancelled:
                seen[aid] = Observation(TaskState.RUNNING, started_at=item.at)
                continue
            self._complete(item)
            if item.cancelled:
                seen[aid] = Observation(
                    TaskState.FAILED,
                    failure_class=FailureClass.CANCELLED,
                    reason="Cancelled",
                    finished_at=self.clock.now(),
                )
            elif item.outcome == "ok":
                seen[aid] = Observation(
                    TaskState.SUCCEEDED, exit_code=0, finished_at=self.clock.now()
                )
            else:
                assert isinstance(item.outcome, FailureClass)
                seen[aid] = Observation(
                    TaskState.FAILED,
                    failure_class=item.outcome,
                    exit_code=1,
                    reason=item.outcome.value,
                    message=f"scripted {item.outcome.value}",
                    finished_at=self.clock.now(),
                )
        return seen

    def cancel(self, attempt_id: str) -> None:
        item = self.launched.get(attempt_id)
        if item is not None:
            item.cancelled = True

    def logs(self, attempt_id: str) -> str:
        return f"log of {attempt_id}\n"

    def wait(self, timeout: float) -> None:
        self.clock.advance(timeout)

    def close(self) -> None:
        pass
