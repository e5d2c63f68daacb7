"""The engine: a level-triggered reconciler that drives runs through the metadata store.

One ``reconcile(run_id)`` pass reads what the store says and what the backend reports, and makes
one step of progress: concludes finished attempts, applies the retry policy, uses the cache,
launches ready steps, and finishes the run. Nothing is kept in memory between passes, so a
crash at any moment followed by ``drive`` (or ``usina runs resume``) continues the same run.
Attempt ids are deterministic (``<run>-<node>-<n>``): a re-launch after a crash finds the
existing attempt instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from usina.engine.cache import cache_key, environment_fingerprint
from usina.engine.clock import SystemClock
from usina.engine.policy import advice, decide
from usina.engine.ports import (
    ArtifactStore,
    Backend,
    Clock,
    MetadataStore,
    Observation,
    Task,
    TaskState,
    Tracker,
    error_key,
    result_key,
    task_key,
)
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
from usina.errors import StateError
from usina.sdk.pipeline import Plan, PlanNode
from usina.sdk.retry import FailureClass, Retry

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine drives runs.

    max_parallel: attempts running at once per run (default 4).
    lease_ttl: seconds a driver's claim on a run lasts without renewal (default 30).
    poll_interval: longest wait between passes while attempts run, in seconds (default 1.0);
        backends wake the engine earlier when something changes.
    environment: fingerprint of the runtime environment for cache keys; None computes one from
        the installed distributions (an image digest is the right value on Kubernetes).
    env: environment variables given to every attempt.
    """

    max_parallel: int = 4
    lease_ttl: float = 30.0
    poll_interval: float = 1.0
    environment: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    use_cache: bool = True
    refresh_interval: float = 10.0


@dataclass
class _Mirror:
    """The steps and attempts of a run this engine drives, as it last read or wrote them.

    The store stays the truth: every change is written there first, and the mirror is reread
    every ``refresh_interval`` seconds and whenever the engine did not write it itself (resume,
    a new run). It saves re-reading and decoding every step and attempt on every pass.
    """

    steps: dict[str, StepRecord]
    attempts: dict[str, list[AttemptRecord]]
    loaded_at: float
    lease_until: float | None = None  # our lease's expiry as seen on the last pass
    run_seen: RunRecord | None = None  # the run as this engine last read or wrote it


def new_run_id(pipeline: str, now: float) -> RunId:
    """``<pipeline>-<yyyymmdd-hhmmss>-<6 hex>``: sortable, readable, DNS-safe."""
    stem = "".join(c if c.isalnum() else "-" for c in pipeline.lower()).strip("-")[:30] or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return RunId(f"{stem}-{stamp}-{secrets.token_hex(3)}")


def attempt_id(run_id: str, node: str, number: int) -> AttemptId:
    return AttemptId(f"{run_id}-{node}-{number}")


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Engine:
    """Drives runs of compiled pipelines with the components it is given."""

    def __init__(
        self,
        *,
        backend: Backend,
        metadata: MetadataStore,
        artifacts: ArtifactStore,
        tracker: Tracker | None = None,
        clock: Clock | None = None,
        settings: EngineSettings | None = None,
        owner: str | None = None,
    ) -> None:
        self.backend = backend
        self.metadata = metadata
        self.artifacts = artifacts
        self.tracker = tracker
        self.clock = clock or SystemClock()
        self.settings = settings or EngineSettings()
        self.owner = owner or default_owner()
        self._environment = self.settings.environment
        self._plans: dict[str, tuple[int, Plan]] = {}
        self._mirrors: dict[str, _Mirror] = {}
        self._renewed: dict[str, float] = {}

    # -- public API -----------------------------------------------------------------------

    def plan_of(self, run: RunRecord) -> Plan:
        """The run's plan, parsed once per change (plans are large and read every pass)."""
        nodes = run.plan.get("nodes", [])
        signature = hash((len(nodes), tuple(n["code_hash"] for n in nodes), run.plan.get("source")))
        cached = self._plans.get(run.id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        plan = Plan.from_json(run.plan)
        self._plans[run.id] = (signature, plan)
        return plan

    def steps_of(self, run_id: str) -> list[StepRecord]:
        """The steps as the last pass left them (read from the store if none ran here)."""
        mirror = self._mirrors.get(run_id)
        if mirror is None:
            return self.metadata.get_steps(run_id)
        return list(mirror.steps.values())

    def forget(self, run_id: str) -> None:
        """Drop what this engine remembers of a run between passes (a long-lived driver of
        many runs calls it when a run ends or passes to another driver)."""
        self._plans.pop(run_id, None)
        self._mirrors.pop(run_id, None)
        self._renewed.pop(run_id, None)

    @property
    def environment(self) -> str:
        if self._environment is None:
            self._environment = environment_fingerprint()
        return self._environment

    def submit(
        self,
        plan: Plan,
        *,
        run_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        project: str = "default",
    ) -> RunRecord:
        """Record a new run of ``plan``; nothing runs until it is driven or reconciled."""
        now = self.clock.now()
        rid = RunId(run_id) if run_id else new_run_id(plan.pipeline, now)
        run = RunRecord(
            id=rid,
            pipeline=plan.pipeline,
            plan=plan.to_json(),
            params=dict(plan.params),
            state=RunState.PENDING,
            created_at=now,
            labels=dict(labels or {}),
            project=project,
        )
        steps = [
            StepRecord(run_id=rid, node=n.id, state=StepState.PENDING, resources=dict(n.resources))
            for n in plan.nodes
        ]
        self.metadata.create_run(run, steps)
        self._event(rid, "run_submitted", message=f"{len(steps)} steps")
        return run

    def cancel(self, run_id: str) -> RunRecord:
        """Ask for a run to stop; the driver kills its attempts on its next pass."""
        run = self.metadata.get_run(run_id)
        if run.state.finished:
            return run
        run = replace(run, cancel_requested=True)
        self.metadata.save_run(run)
        self._event(run.id, "cancel_requested")
        return run

    def resume(self, run_id: str, plan: Plan | None = None) -> RunRecord:
        """Prepare a finished or interrupted run to continue.

        Steps that failed, were skipped or cancelled run again (with ``plan``'s current code when
        given); steps that succeeded keep their outputs. A run that is still running (its driver
        crashed) just continues.
        """
        run = self.metadata.get_run(run_id)
        self._plans.pop(run_id, None)
        self._mirrors.pop(run_id, None)
        if plan is not None:
            old = Plan.from_json(run.plan)
            if [n.id for n in old.nodes] != [n.id for n in plan.nodes]:
                raise StateError(
                    f"run {run_id}: the pipeline's steps changed since the run started "
                    f"({[n.id for n in old.nodes]} -> {[n.id for n in plan.nodes]}); "
                    "start a new run instead"
                )
        now = self.clock.now()
        steps = self.metadata.get_steps(run_id)
        attempts = self._attempts_by_node(run_id)
        for step in steps:
            if step.state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED):
                done = attempts.get(step.node, [])
                base = done[-1].number if done else 0
                state = StepState.BACKOFF if done else StepState.PENDING
                node = (plan or Plan.from_json(run.plan)).node(step.node)
                self.metadata.save_step(
                    replace(
                        step,
                        state=state,
                        next_attempt_at=now,
                        finished_at=None,
                        error=None,
                        retry_base=base,
                        resources=dict(node.resources) if plan is not None else step.resources,
                    )
                )
        run = replace(
            run,
            plan=plan.to_json() if plan is not None else run.plan,
            state=RunState.RUNNING if run.started_at else RunState.PENDING,
            cancel_requested=False,
            finished_at=None,
            error=None,
        )
        self.metadata.save_run(run)
        self._event(run.id, "run_resumed")
        return run

    def drive(
        self,
        run_id: str,
        *,
        on_pass: Callable[[RunRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RunRecord:
        """Reconcile ``run_id`` until it finishes, holding its lease. Returns the final run."""
        self._take_lease(run_id)
        try:
            while True:
                run = self.reconcile(run_id)
                if on_pass is not None:
                    on_pass(run)
                if run.state.finished:
                    return run
                if should_stop is not None and should_stop():
                    return run
                self.backend.wait(self._wait_time(run))
                self._renew_lease(run_id)
        finally:
            self.metadata.release_lease(run_id, self.owner)

    # -- one pass -------------------------------------------------------------------------

    def reconcile(self, run_id: str) -> RunRecord:
        """One pass of progress for ``run_id``; safe to repeat and to interrupt at any point.

        With a store that can batch (SQL), the pass's writes commit together. A crash before
        the commit loses the pass's records, not its effects: an attempt launched in the pass
        has a deterministic id, so the next pass finds it (adopts it) instead of starting
        another one.
        """
        batch = getattr(self.metadata, "batch", None)
        try:
            with batch() if batch is not None else contextlib.nullcontext():
                return self._reconcile(run_id)
        except BaseException:
            self.forget(run_id)  # the mirror may hold writes that were rolled back
            raise

    def _reconcile(self, run_id: str) -> RunRecord:
        run = self.metadata.get_run(run_id)
        if run.state.finished:
            return run
        plan = self.plan_of(run)
        now = self.clock.now()
        if run.state is RunState.PENDING:
            run = replace(run, state=RunState.RUNNING, started_at=run.started_at or now)
            self.metadata.save_run(run)
            self._event(run.id, "run_started")
            self._track("run_started", run)

        # Trust the mirror only while this engine held the run's lease without a gap and the
        # run record is as it left it (a resume or cancel from elsewhere changes the record):
        # then nobody else can have written the run's steps or attempts since it was read.
        kept = self._mirrors.get(run_id)
        ours = run.lease_owner == self.owner
        if kept is not None and not (
            ours
            and kept.lease_until is not None
            and kept.lease_until >= now
            and kept.run_seen is not None
            and _unleased(kept.run_seen) == _unleased(run)
        ):
            self._mirrors.pop(run_id, None)
        mirror = self._mirror(run_id)
        mirror.lease_until = run.lease_expires if ours else None
        steps = dict(mirror.steps)
        attempts = {node: list(lst) for node, lst in mirror.attempts.items()}

        # 1. Conclude attempts that finished (or vanished) since the last pass.
        running = [a for lst in attempts.values() for a in lst if a.state is AttemptState.RUNNING]
        if running:
            seen = self.backend.observe([a.id for a in running])
            for attempt in running:
                obs = seen.get(attempt.id, Observation(TaskState.UNKNOWN))
                concluded = self._conclude(run, plan.node(attempt.node), attempt, obs)
                if concluded is not attempt:
                    attempts[attempt.node] = [
                        concluded if a.id == attempt.id else a for a in attempts[attempt.node]
                    ]

        # 2. Settle each step from its attempts, then launch what is ready.
        in_flight = sum(
            1 for lst in attempts.values() for a in lst if a.state is AttemptState.RUNNING
        )
        for node in plan.nodes:
            step = steps[node.id]
            step = self._settle(run, node, step, attempts.get(node.id, []))
            steps[node.id] = step
            if step.state.finished or step.state is StepState.RUNNING:
                continue
            if run.cancel_requested:
                step = replace(step, state=StepState.CANCELLED, finished_at=now)
                self._save_step(step)
                steps[node.id] = step
                continue
            upstream = [steps[u] for u in node.upstream]
            if any(
                u.state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED)
                for u in upstream
            ):
                blocker = next(u for u in upstream if u.state is not StepState.SUCCEEDED)
                step = replace(
                    step,
                    state=StepState.SKIPPED,
                    finished_at=now,
                    error=f"upstream step '{blocker.node}' {blocker.state.value}",
                )
                self._save_step(step)
                self._event(run.id, "step_skipped", node=node.id, message=step.error or "")
                steps[node.id] = step
                continue
            if not all(u.state is StepState.SUCCEEDED for u in upstream):
                continue
            if step.state is StepState.BACKOFF and (step.next_attempt_at or 0) > now:
                continue
            inputs = self._inputs(node, steps)
            key = self._key(node, inputs)
            if key != step.cache_key:
                step = replace(step, cache_key=key)
            if self._from_cache(run, node, step, key, steps):
                continue
            if in_flight >= self.settings.max_parallel:
                if step is not steps[node.id]:
                    self._save_step(step)
                    steps[node.id] = step
                continue
            steps[node.id] = self._launch(run, plan, node, step, inputs)
            in_flight += 1

        # 3. Cancel what still runs, if asked.
        if run.cancel_requested:
            for lst in attempts.values():
                for attempt in lst:
                    if attempt.state is AttemptState.RUNNING:
                        self.backend.cancel(attempt.id)

        # 4. Finish the run when every step has.
        if all(s.state.finished for s in steps.values()) and in_flight == 0:
            run = self._finish(run, steps)
        mirror.run_seen = run
        return run

    # -- pieces of a pass -----------------------------------------------------------------

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
        error = self.artifacts.read_record(error_key(attempt.id))
        if error is not None:
            try:
                detail = json.loads(error)
            except ValueError:
                detail = {}
            if failure is FailureClass.USER_ERROR and detail.get("kind") == "oom":
                failure = FailureClass.OOM
            if detail.get("kind") == "infra" and failure is FailureClass.USER_ERROR:
                failure = FailureClass.INFRA
            tb = str(detail.get("traceback") or "")
            summary = str(detail.get("message") or "")
            message = "\n".join(x for x in (summary, tb, message) if x)
            reason = reason or str(detail.get("type") or "") or None
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

    def _settle(
        self, run: RunRecord, node: PlanNode, step: StepRecord, attempts: Sequence[AttemptRecord]
    ) -> StepRecord:
        """Bring the step's own state in line with its latest attempt."""
        if step.state.finished or not attempts:
            return step
        latest = attempts[-1]
        now = self.clock.now()
        if latest.state is AttemptState.RUNNING:
            if step.state is not StepState.RUNNING or step.attempts != latest.number:
                step = replace(step, state=StepState.RUNNING, attempts=latest.number)
                self._save_step(step)
            return step
        if latest.state is AttemptState.SUCCEEDED:
            raw = self.artifacts.read_record(result_key(latest.id))
            result = json.loads(raw) if raw is not None else {}
            outputs = tuple(ArtifactRef.from_json(o) for o in result.get("outputs", []))
            step = replace(
                step,
                state=StepState.SUCCEEDED,
                attempts=latest.number,
                outputs=outputs,
                finished_at=latest.finished_at or now,
                metrics={k: float(v) for k, v in result.get("metrics", {}).items()},
                error=None,
            )
            self._save_step(step)
            if node.cache and step.cache_key:
                self.metadata.cache_put(step.cache_key, outputs, run.id, node.id)
            self._event(run.id, "step_succeeded", node=node.id)
            self._track("step_finished", run, step, latest)
            return step
        # The latest attempt failed: apply the policy once (BACKOFF means it was applied).
        if step.state not in (StepState.PENDING, StepState.RUNNING):
            return step
        counted = [
            a.failure_class or FailureClass.USER_ERROR
            for a in attempts
            if a.state is AttemptState.FAILED and a.number > step.retry_base
        ]
        decision = decide(Retry.from_json(node.retry), counted, step.resources)
        if decision.retry and not run.cancel_requested:
            step = replace(
                step,
                state=StepState.BACKOFF,
                attempts=latest.number,
                next_attempt_at=now + decision.delay,
                resources=decision.resources,
            )
            self._save_step(step)
            self._event(run.id, "step_retry", node=node.id, message=decision.reason)
            return step
        failure = latest.failure_class or FailureClass.USER_ERROR
        cancelled = failure is FailureClass.CANCELLED or run.cancel_requested
        step = replace(
            step,
            state=StepState.CANCELLED if cancelled else StepState.FAILED,
            attempts=latest.number,
            finished_at=latest.finished_at or now,
            error=f"{failure.value}: {decision.reason}",
        )
        self._save_step(step)
        self._event(run.id, "step_failed", node=node.id, message=step.error or "")
        self._track("step_finished", run, step, latest)
        return step

    def _inputs(self, node: PlanNode, steps: Mapping[str, StepRecord]) -> dict[str, dict[str, Any]]:
        inputs: dict[str, dict[str, Any]] = {}
        for name, spec in node.inputs.items():
            if "ref" in spec:
                source, index = spec["ref"]
                inputs[name] = {"artifact": steps[source].outputs[index].to_json()}
            else:
                inputs[name] = {"const": spec["const"]}
        return inputs

    def _key(self, node: PlanNode, inputs: Mapping[str, dict[str, Any]]) -> str:
        digests = {n: v["artifact"]["digest"] for n, v in inputs.items() if "artifact" in v}
        env_values = {name: os.environ.get(name) for name in node.env}
        return cache_key(node, digests, self.environment, env_values)

    def _from_cache(
        self,
        run: RunRecord,
        node: PlanNode,
        step: StepRecord,
        key: str,
        steps: dict[str, StepRecord],
    ) -> bool:
        if not (node.cache and self.settings.use_cache) or step.attempts:
            return False
        outputs = self.metadata.cache_get(key)
        if outputs is None or len(outputs) != node.outputs:
            return False
        if not all(self.artifacts.exists(o.digest) for o in outputs):
            log.info("cache entry of %s has missing artifacts; recomputing", node.id)
            return False
        now = self.clock.now()
        done = replace(
            step,
            state=StepState.SUCCEEDED,
            cached=True,
            outputs=tuple(outputs),
            cache_key=key,
            started_at=now,
            finished_at=now,
        )
        self._save_step(done)
        steps[node.id] = done
        self._event(run.id, "step_cached", node=node.id)
        self._track("step_finished", run, done, None)
        return True

    def _task(
        self,
        run: RunRecord,
        node: PlanNode,
        number: int,
        resources: dict[str, Any],
        inputs: dict[str, dict[str, Any]],
        env: Mapping[str, str],
    ) -> Task:
        return build_task(
            run,
            self.plan_of(run),
            node,
            number,
            resources,
            inputs,
            {**self.settings.env, **env},
            artifacts_url=self.artifacts.url,
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
        env = self._track_env(run, node.id)
        for name in node.env:
            value = os.environ.get(name)
            if value is not None:
                env[name] = value
        task = self._task(run, node, number, step.resources, inputs, env)
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
            gpus=int(step.resources.get("gpus") or 0),
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
            inputs = self._inputs(node, steps)
            task = self._task(run, node, attempt.number, attempt.resources, inputs, {})
            self.artifacts.write_record(task_key(attempt.id), json.dumps(task.to_json()).encode())
        else:
            task = Task.from_json(json.loads(raw))
        self.backend.launch(task)

    def _finish(self, run: RunRecord, steps: Mapping[str, StepRecord]) -> RunRecord:
        states = {s.state for s in steps.values()}
        if run.cancel_requested or StepState.CANCELLED in states:
            state = RunState.CANCELLED
        elif states <= {StepState.SUCCEEDED}:
            state = RunState.SUCCEEDED
        else:
            state = RunState.FAILED
        failed = [s for s in steps.values() if s.state is StepState.FAILED]
        error = None
        if failed:
            first = failed[0]
            error = f"step '{first.node}' failed ({first.error})"
        run = replace(run, state=state, finished_at=self.clock.now(), error=error)
        self.metadata.save_run(run)
        self._event(run.id, f"run_{state.value}", message=error or "")
        self._track("run_finished", run)
        return run

    # -- helpers --------------------------------------------------------------------------

    def _mirror(self, run_id: str) -> _Mirror:
        mirror = self._mirrors.get(run_id)
        if mirror is None or time.monotonic() - mirror.loaded_at > self.settings.refresh_interval:
            mirror = _Mirror(
                steps={s.node: s for s in self.metadata.get_steps(run_id)},
                attempts=self._attempts_by_node(run_id),
                loaded_at=time.monotonic(),
            )
            self._mirrors[run_id] = mirror
        return mirror

    def _save_step(self, step: StepRecord) -> None:
        self.metadata.save_step(step)
        mirror = self._mirrors.get(step.run_id)
        if mirror is not None:
            mirror.steps[step.node] = step

    def _save_attempt(self, attempt: AttemptRecord) -> None:
        self.metadata.save_attempt(attempt)
        mirror = self._mirrors.get(attempt.run_id)
        if mirror is not None:
            lst = [a for a in mirror.attempts.get(attempt.node, []) if a.id != attempt.id]
            lst.append(attempt)
            lst.sort(key=lambda a: a.number)
            mirror.attempts[attempt.node] = lst

    def _attempts_by_node(self, run_id: str) -> dict[str, list[AttemptRecord]]:
        grouped: dict[str, list[AttemptRecord]] = {}
        for attempt in sorted(self.metadata.get_attempts(run_id), key=lambda a: a.number):
            grouped.setdefault(attempt.node, []).append(attempt)
        return grouped

    def _wait_time(self, run: RunRecord) -> float:
        steps = self.steps_of(run.id)
        now = self.clock.now()
        waits = [
            s.next_attempt_at - now
            for s in steps
            if s.state is StepState.BACKOFF and s.next_attempt_at is not None
        ]
        soonest = min([self.settings.poll_interval, *waits])
        return max(0.0, soonest)

    def _take_lease(self, run_id: str) -> None:
        now = self.clock.now()
        self._renewed[run_id] = now
        if self.metadata.acquire_lease(run_id, self.owner, self.settings.lease_ttl, now):
            return
        run = self.metadata.get_run(run_id)
        holder = run.lease_owner or ""
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            # The previous driver on this machine is gone (killed): take over at once.
            self.metadata.release_lease(run_id, holder)
            if self.metadata.acquire_lease(run_id, self.owner, self.settings.lease_ttl, now):
                return
        raise StateError(
            f"run {run_id} is being driven by {holder} (lease until "
            f"{time.strftime('%H:%M:%S', time.localtime(run.lease_expires or now))}); "
            "wait for it, or cancel it with 'usina runs cancel'"
        )

    def _renew_lease(self, run_id: str) -> None:
        # Renew once a third of the TTL has passed, not on every pass (it is a write).
        now = self.clock.now()
        if now - self._renewed.get(run_id, float("-inf")) < self.settings.lease_ttl / 3:
            return
        if not self.metadata.acquire_lease(run_id, self.owner, self.settings.lease_ttl, now):
            raise StateError(f"lost the lease on run {run_id} to another driver")
        self._renewed[run_id] = now

    def _event(
        self,
        run_id: str,
        kind: str,
        *,
        node: str | None = None,
        attempt: str | None = None,
        message: str = "",
    ) -> None:
        self.metadata.add_event(
            Event(
                RunId(run_id), self.clock.now(), kind, node=node, attempt=attempt, message=message
            )
        )

    def _track(self, what: str, *args: Any) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, what)(*args)
        except Exception as exc:  # tracking must never take a run down
            log.warning("tracker %s failed: %s", what, exc, exc_info=True)
            run = args[0]
            self._event(run.id, "tracker_error", message=f"{what}: {exc}")

    def _track_env(self, run: RunRecord, node: str) -> dict[str, str]:
        if self.tracker is None:
            return {}
        try:
            return dict(self.tracker.step_started(run, node))
        except Exception as exc:
            log.warning("tracker step_started failed: %s", exc, exc_info=True)
            self._event(run.id, "tracker_error", node=node, message=f"step_started: {exc}")
            return {}


def build_task(
    run: RunRecord,
    plan: Plan,
    node: PlanNode,
    number: int,
    resources: dict[str, Any],
    inputs: dict[str, dict[str, Any]],
    env: Mapping[str, str],
    *,
    artifacts_url: str,
) -> Task:
    """The ``Task`` of attempt ``number`` of ``node``: what the engine hands its backend (and
    what ``usina k8s render`` prints). ``env`` is the attempt's whole environment."""
    return Task(
        attempt_id=attempt_id(run.id, node.id, number),
        run_id=run.id,
        pipeline=run.pipeline,
        node=node.to_json(),
        number=number,
        resources=resources,
        inputs=inputs,
        artifacts_url=artifacts_url,
        params=dict(run.params),
        sys_path=plan.sys_path,
        source=plan.source,
        env=dict(env),
        timeout=node.timeout,
        labels={
            "usina.dev/run": run.id,
            "usina.dev/step": node.id,
            "usina.dev/pipeline": run.pipeline,
            "usina.dev/attempt": str(number),
            **{f"usina.dev/{k}": v for k, v in run.labels.items()},
        },
    )


def _unleased(run: RunRecord) -> RunRecord:
    return replace(run, lease_owner=None, lease_expires=None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Engine", "EngineSettings", "advice", "attempt_id", "new_run_id"]
