"""Attempts: launching them (task record, attempt record, backend) and concluding them from
what the backend observed and what the step runtime recorded.

Crash safety comes from the order of writes: the task record, then the attempt record (the
claim), then the launch. A crash in between leaves an attempt that the next pass finds unknown
to the backend and launches under the same id, so it never runs twice.

Events agree with the records. Every change of an attempt's state is written together with the
events that report it, in one transaction (``MetadataStore.record_attempt``): the claim with its
``attempt_started`` (and the step it moves to running), the conclusion with its
``attempt_running`` (queue wait) and its one outcome event, ``attempt_succeeded`` or
``attempt_failed``. A process killed at any moment leaves both or neither, never a record
without its event, so nothing has to be derived or repaired on recovery. A relaunch (the
claim committed, the launch lost) is the same attempt under the same id: it already has its
``attempt_started`` and writes no other. Each write is also guarded by the state it expects to
find (absent for a claim, running for a conclusion): if two engines both saw an attempt
running (a lease that expired under a slow pass) only the first conclusion is written, so an
attempt never has two outcome events, and only the engine that wrote a claim launches it. The
loser's pass stops there (``StaleView``) and its next pass rereads the run, so it settles no
step from what it read before.
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
                outcome = Event(run.id, now, "attempt_succeeded", node=node.id, attempt=attempt.id)
                return self._concluded(attempt, done, obs, outcome)
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
        outcome = Event(
            run.id,
            now,
            "attempt_failed",
            node=node.id,
            attempt=attempt.id,
            message=f"{failure.value}: {reason or ''}".strip(),
        )
        return self._concluded(attempt, done, obs, outcome)

    def _concluded(
        self, attempt: AttemptRecord, done: AttemptRecord, obs: Observation, outcome: Event
    ) -> AttemptRecord:
        """Write the conclusion ``done`` of a running ``attempt`` with its events, atomically
        (see the module docstring). Returns ``done``; raises ``StaleView`` when another engine
        concluded it first.

        The events: when the backend says when it started the attempt, an ``attempt_running``
        event at that time (launched -> running is the attempt's queue wait, a Kubernetes pod
        waiting for a GPU node, which monitoring reports); then ``outcome``."""
        events = []
        if obs.started_at is not None:
            at = max(obs.started_at, attempt.started_at)
            events.append(
                Event(
                    attempt.run_id,
                    at,
                    "attempt_running",
                    node=attempt.node,
                    attempt=attempt.id,
                    message=f"queued {at - attempt.started_at:.3f}s",
                )
            )
        events.append(outcome)
        self._record_attempt(done, expected=AttemptState.RUNNING, events=events)
        log.info(
            "attempt %s %s%s",
            done.id,
            done.state.value,
            f" ({done.failure_class.value})" if done.failure_class else "",
            extra={"run_id": done.run_id, "step": done.node, "attempt_id": done.id},
        )
        return done

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
        # A backend that hands its process the task itself (``task_inline``: the local one)
        # gets it launched first; the record, for later readers, follows (a crash before it
        # leaves a running attempt without one: ``_relaunch`` and readers do without).
        record = json.dumps(task.to_json()).encode()
        inline = bool(getattr(self.backend, "task_inline", False))
        if not inline:
            self.artifacts.write_record(task_key(task.attempt_id), record)
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
        claimed = replace(
            step,
            state=StepState.RUNNING,
            attempts=number,
            started_at=step.started_at or now,
            next_attempt_at=None,
        )
        started = Event(run.id, now, "attempt_started", node=node.id, attempt=attempt.id)
        # Raises StaleView when another engine claimed this attempt first: it launches it.
        self._record_attempt(attempt, expected=None, events=[started], step=claimed)
        self.backend.launch(task)
        if inline:
            self.artifacts.write_record(task_key(task.attempt_id), record)
        log.info(
            "launched attempt %s on %s",
            attempt.id,
            self.backend.name,
            extra={"run_id": run.id, "step": node.id, "attempt_id": attempt.id},
        )
        return claimed

    def _relaunch(self, run: RunRecord, node: PlanNode, attempt: AttemptRecord) -> None:
        """Launch an attempt whose claim was written but whose launch was lost. It is the same
        attempt: its ``attempt_started`` was written with the claim, so no event here."""
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
