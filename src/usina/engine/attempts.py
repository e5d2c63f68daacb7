"""Attempts: launching them (task record, attempt record, backend) and concluding them from
what the backend observed and what the step runtime recorded.

Crash safety comes from the order of writes: the task record, then the attempt record (the
claim), then the launch. A crash in between leaves an attempt that the next pass finds unknown
to the backend and launches under the same id, so it never runs twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from usina.engine.base import EngineBase
from usina.engine.failures import ErrorRecord
from usina.engine.ports import (
    Observation,
    Task,
    TaskState,
    error_key,
    result_key,
    task_key,
)
from usina.engine.records import (
    AttemptId,
    AttemptRecord,
    AttemptState,
    Event,
    RunRecord,
    StepRecord,
    StepState,
)
from usina.engine.tasks import build_task, task_env, task_inputs
from usina.sdk.resources import Resources
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.sdk.pipeline import Plan, PlanNode

log = logging.getLogger("usina.engine.engine")


class Attempts(EngineBase):
    """The engine's part that launches and concludes attempts."""

    def _conclude(
        self, run: RunRecord, node: PlanNode, attempt: AttemptRecord, obs: Observation
    ) -> AttemptRecord:
        now = self.clock.now()
        if obs.state in (TaskState.PENDING, TaskState.RUNNING):
            return attempt
        if obs.state is TaskState.UNKNOWN:
            # Recorded but never started (the driver died between the two): start it now,
            # under the same attempt id, so it can never run twice.
            if self.artifacts.read_record(result_key(attempt.id)) is not None:
                obs = Observation(TaskState.SUCCEEDED, finished_at=now)
            else:
                log.info("attempt %s is unknown to the backend; launching it", attempt.id)
                self._relaunch(run, node, attempt)
                return attempt
        if obs.state is TaskState.SUCCEEDED:
            if self.artifacts.read_record(result_key(attempt.id)) is not None:
                done = replace(
                    attempt,
                    state=AttemptState.SUCCEEDED,
                    finished_at=obs.finished_at or now,
                    exit_code=obs.exit_code if obs.exit_code is not None else 0,
                )
                self._save_attempt(done)
                self._running_since(run, attempt, obs)
                self._event(run.id, "attempt_succeeded", node=node.id, attempt=attempt.id)
                return done
            obs = Observation(
                TaskState.FAILED,
                failure_class=FailureClass.INFRA,
                exit_code=obs.exit_code,
                reason="NoResult",
                message="the attempt exited 0 but wrote no result record",
                finished_at=obs.finished_at,
            )
        failure = obs.failure_class or FailureClass.USER_ERROR
        message = obs.message or ""
        reason = obs.reason
        raw = self.artifacts.read_record(error_key(attempt.id))
        if raw is not None:
            try:
                record = ErrorRecord.from_json(json.loads(raw))
            except (ValueError, TypeError, AttributeError):
                record = ErrorRecord(FailureClass.USER_ERROR, "", "")
            if failure is FailureClass.USER_ERROR:
                # The runtime's own record says more than an exit code read as a user error.
                failure = record.kind
            message = "\n".join(x for x in (record.message, record.traceback, message) if x)
            reason = reason or record.type or None
        done = replace(
            attempt,
            state=AttemptState.FAILED,
            finished_at=obs.finished_at or now,
            failure_class=failure,
            exit_code=obs.exit_code,
            reason=reason,
            message=message[-20000:] or None,
        )
        self._save_attempt(done)
        self._running_since(run, attempt, obs)
        self._event(
            run.id,
            "attempt_failed",
            node=node.id,
            attempt=attempt.id,
            message=f"{failure.value}: {reason or ''}".strip(),
        )
        return done

    def _running_since(self, run: RunRecord, attempt: AttemptRecord, obs: Observation) -> None:
        """Record when the backend started the attempt (an ``attempt_running`` event at that
        time): launched -> running is the attempt's queue wait (a Kubernetes pod waiting for a
        GPU node), which monitoring reports. Written once, when the attempt is concluded."""
        if obs.started_at is None:
            return
        at = max(obs.started_at, attempt.started_at)
        self.metadata.add_event(
            Event(
                run.id,
                at,
                "attempt_running",
                node=attempt.node,
                attempt=attempt.id,
                message=f"queued {at - attempt.started_at:.3f}s",
            )
        )

    def _task(
        self,
        run: RunRecord,
        plan: Plan,
        node: PlanNode,
        number: int,
        resources: Mapping[str, Any],
        inputs: dict[str, dict[str, Any]],
        env: Mapping[str, str],
    ) -> Task:
        """The task the engine submits: ``build_task`` with this run's values."""
        return build_task(
            plan,
            node,
            run_id=run.id,
            artifacts_url=self.artifacts.url,
            number=number,
            resources=Resources.from_json(dict(resources)),
            inputs=inputs,
            params=run.params,
            run_labels=run.labels,
            env=env,
        )

    def _launch(
        self,
        run: RunRecord,
        plan: Plan,
        node: PlanNode,
        step: StepRecord,
        inputs: dict[str, dict[str, Any]],
    ) -> StepRecord:
        number = step.attempts + 1
        env = task_env(node, base=self.settings.env, tracking=self._track_env(run, node.id))
        task = self._task(run, plan, node, number, step.resources, inputs, env)
        now = self.clock.now()
        # Order matters for crash safety: the task record, then the attempt (the claim), then
        # the launch. A crash in between leaves an attempt the next pass launches or adopts.
        self.artifacts.write_record(task_key(task.attempt_id), json.dumps(task.to_json()).encode())
        attempt = AttemptRecord(
            id=AttemptId(task.attempt_id),
            run_id=run.id,
            node=node.id,
            number=number,
            state=AttemptState.RUNNING,
            resources=dict(step.resources),
            started_at=now,
            backend=self.backend.name,
            gpus=task.total_gpus,  # every node of a gang holds its own
        )
        self._save_attempt(attempt)
        step = replace(
            step,
            state=StepState.RUNNING,
            attempts=number,
            started_at=step.started_at or now,
            next_attempt_at=None,
        )
        self._save_step(step)
        self.backend.launch(task)
        self._event(run.id, "attempt_started", node=node.id, attempt=task.attempt_id)
        return step

    def _relaunch(self, run: RunRecord, node: PlanNode, attempt: AttemptRecord) -> None:
        raw = self.artifacts.read_record(task_key(attempt.id))
        if raw is None:
            steps = {s.node: s for s in self.metadata.get_steps(run.id)}
            env = task_env(node, base=self.settings.env)
            task = self._task(
                run,
                self.plan_of(run),
                node,
                attempt.number,
                attempt.resources,
                task_inputs(node, steps),
                env,
            )
            self.artifacts.write_record(task_key(attempt.id), json.dumps(task.to_json()).encode())
        else:
            task = Task.from_json(json.loads(raw))
        self.backend.launch(task)


__all__ = ["Attempts"]
