"""The engine: a level-triggered reconciler that drives runs through the metadata store.

One ``reconcile(run_id)`` pass reads what the store says and what the backend reports, and makes
one step of progress: concludes finished attempts (``usina.engine.attempts``), settles steps by
the retry policy and uses the cache (``usina.engine.steps``), launches ready steps, and finishes
the run. The store is the truth: every change is written there first. The engine keeps an
in-memory mirror of the runs it drives (``usina.engine.mirror``), trusted only while it holds a
run's lease (``usina.engine.leases``) without a gap, and reread otherwise; so a crash at any
moment followed by ``drive`` (or ``usina runs resume``) continues the same run. Attempt ids are
deterministic (``<run>-<node>-<n>``, ``usina.engine.tasks``): a re-launch after a crash finds
the existing attempt instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from usina.engine.attempts import Attempts
from usina.engine.base import EngineSettings, StaleView
from usina.engine.cache import key_of, miss_reason
from usina.engine.leases import default_owner
from usina.engine.mirror import attempts_by_node
from usina.engine.policy import advice
from usina.engine.ports import Observation, TaskState
from usina.engine.records import (
    AttemptState,
    RunId,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
)
from usina.engine.steps import Steps
from usina.engine.tasks import attempt_id, new_run_id, task_inputs
from usina.errors import ArtifactMissingError, StateError
from usina.sdk.pipeline import Plan

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("usina.engine.engine")


class Engine(Attempts, Steps):
    """Drives runs of compiled pipelines with the components it is given
    (``Engine(backend=..., metadata=..., artifacts=..., tracker=..., clock=..., settings=...)``).
    """

    # -- public API -----------------------------------------------------------------------

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
        self._mirrors.forget(run_id)
        self._leases.forget(run_id)

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
        plan_json = plan.to_json()
        if not self.settings.use_cache:
            plan_json["use_cache"] = False  # kept by a resume: the run ignores the cache
        run = RunRecord(
            id=rid,
            pipeline=plan.pipeline,
            plan=plan_json,
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
        submitted = self._new_event(rid, "run_submitted", message=f"{len(steps)} steps")
        self.metadata.create_run(run, steps, [submitted])
        return run

    def cancel(self, run_id: str) -> RunRecord:
        """Ask for a run to stop; the driver kills its attempts on its next pass."""
        run = self.metadata.get_run(run_id)
        if run.state.finished:
            return run
        run = replace(run, cancel_requested=True)
        self._save_run(run, self._new_event(run.id, "cancel_requested"))
        return run

    def reruns(
        self, run_id: str, plan: Plan | None = None, rerun: Sequence[str] = ()
    ) -> dict[str, str]:
        """What a resume of ``run_id`` runs again, node -> why: steps that failed, were skipped
        or cancelled; steps whose cache key changed since they succeeded (with ``plan``'s code);
        the steps named in ``rerun``; and everything downstream of those."""
        run = self.metadata.get_run(run_id)
        current = plan or Plan.from_json(run.plan)
        names = {n.id for n in current.nodes}
        unknown = sorted(set(rerun) - names)
        if unknown:
            raise StateError(
                f"run {run_id} has no step {', '.join(map(repr, unknown))}; "
                f"its steps are: {', '.join(sorted(names))}"
            )
        steps = {s.node: s for s in self.metadata.get_steps(run_id)}
        why: dict[str, str] = {}
        for node in current.nodes:
            step = steps[node.id]
            if node.id in rerun:
                why[node.id] = "--rerun"
            elif step.state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED):
                why[node.id] = step.state.value
            elif any(u in why for u in node.upstream):
                up = next(u for u in node.upstream if u in why)
                why[node.id] = f"upstream step '{up}' runs again"
            elif step.state is StepState.SUCCEEDED and step.cache_key and plan is not None:
                try:
                    material = self._material(node, task_inputs(node, steps))
                except ArtifactMissingError:
                    why[node.id] = "its input is missing or corrupt"
                    continue
                if key_of(material) != step.cache_key:
                    old = self._old_material(step.cache_key)
                    why[node.id] = miss_reason(old, material) if old else "its cache key changed"
        return why

    def resume(
        self, run_id: str, plan: Plan | None = None, *, rerun: Sequence[str] = ()
    ) -> RunRecord:
        """Prepare a finished or interrupted run to continue.

        The steps ``reruns`` names run again (with ``plan``'s current code when given); the
        other steps that succeeded keep their outputs. A run that is still running (its driver
        crashed) just continues. A succeeded run with nothing to run again is left as it is.
        """
        run = self.metadata.get_run(run_id)
        self._plans.pop(run_id, None)
        self._mirrors.forget(run_id)
        if plan is not None:
            old = Plan.from_json(run.plan)
            if [n.id for n in old.nodes] != [n.id for n in plan.nodes]:
                raise StateError(
                    f"run {run_id}: the pipeline's steps changed since the run started "
                    f"({[n.id for n in old.nodes]} -> {[n.id for n in plan.nodes]}); "
                    "start a new run instead"
                )
        why = self.reruns(run_id, plan, rerun)
        if run.state is RunState.SUCCEEDED and not why:
            return run
        now = self.clock.now()
        steps = self.metadata.get_steps(run_id)
        attempts = attempts_by_node(self.metadata, run_id)
        current = plan or Plan.from_json(run.plan)
        for step in steps:
            if step.node not in why:
                continue
            done = attempts.get(step.node, [])
            base = done[-1].number if done else 0
            failed = step.state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED)
            node = current.node(step.node)
            self.metadata.save_step(
                replace(
                    step,
                    state=StepState.BACKOFF if done and failed else StepState.PENDING,
                    next_attempt_at=now,
                    finished_at=None,
                    error=None,
                    outputs=() if step.state is StepState.SUCCEEDED else step.outputs,
                    cached=False,
                    retry_base=base,
                    resources=dict(node.resources) if plan is not None else step.resources,
                ),
                [self._new_event(run.id, "step_rerun", node=step.node, message=why[step.node])],
            )
        plan_json = run.plan
        if plan is not None:
            plan_json = plan.to_json()
            if "use_cache" in run.plan:
                plan_json["use_cache"] = run.plan["use_cache"]
        run = replace(
            run,
            plan=plan_json,
            state=RunState.RUNNING if run.started_at else RunState.PENDING,
            cancel_requested=False,
            finished_at=None,
            error=None,
        )
        self._save_run(
            run, self._new_event(run.id, "run_resumed", message=f"{len(why)} steps run again")
        )
        return run

    def drive(
        self,
        run_id: str,
        *,
        on_pass: Callable[[RunRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RunRecord:
        """Reconcile ``run_id`` until it finishes, holding its lease. Returns the final run."""
        self._leases.take(run_id)
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
                self._leases.renew(run_id)
        finally:
            self._leases.release(run_id)

    # -- one pass -------------------------------------------------------------------------

    def reconcile(self, run_id: str) -> RunRecord:
        """One pass of progress for ``run_id``; safe to repeat and to interrupt at any point.

        With a store that can batch (SQL), the pass's writes commit together. A crash before
        the commit loses the pass's records, not its effects: an attempt launched in the pass
        has a deterministic id, so the next pass finds it (adopts it) instead of starting
        another one.

        A pass that finds another engine changed an attempt before it could (``StaleView``: two
        engines drove the run at once, a lease that lapsed under a slow pass) stops and returns
        the run as stored; the next pass rereads everything.
        """
        batch = getattr(self.metadata, "batch", None)
        try:
            with batch() if batch is not None else contextlib.nullcontext():
                return self._reconcile(run_id)
        except StaleView as exc:
            self.forget(run_id)
            log.warning("run %s: %s", run_id, exc)
            return self.metadata.get_run(run_id)
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
            self._save_run(run, self._new_event(run.id, "run_started"))
            self._track("run_started", run)

        # Trust the mirror only while this engine held the run's lease without a gap and the
        # run record is as it left it (``Mirrors.trusted``).
        mirror = self._mirrors.trusted(run, self.owner, now)
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
            step = self._settle(run, node, step, attempts.get(node.id, []), steps)
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
                self._save_step(
                    step,
                    self._new_event(run.id, "step_skipped", node=node.id, message=step.error or ""),
                )
                steps[node.id] = step
                continue
            if not all(u.state is StepState.SUCCEEDED for u in upstream):
                continue
            if step.state is StepState.BACKOFF and (step.next_attempt_at or 0) > now:
                continue
            settled = self._map_branch(run, node, step, steps)
            if settled is not None:
                steps[node.id] = settled
                continue
            inputs = task_inputs(node, steps)
            material = self._material(node, inputs)
            key = key_of(material)
            if key != step.cache_key:
                step = replace(step, cache_key=key)
            why = self._from_cache(run, node, step, key, steps)
            if why is None:
                continue
            if in_flight >= self.settings.max_parallel:
                if step is not steps[node.id]:
                    self._save_step(step)
                    steps[node.id] = step
                continue
            keep = self._explain_miss(run, node, step, key, material, why)
            steps[node.id] = self._launch(run, plan, node, step, inputs)
            in_flight += 1
            for record, data in keep:
                self.artifacts.write_record(record, data)

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
        self._save_run(run, self._new_event(run.id, f"run_{state.value}", message=error or ""))
        self._track("run_finished", run)
        return run

    # -- helpers --------------------------------------------------------------------------

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


__all__ = [
    "Engine",
    "EngineSettings",
    "advice",
    "attempt_id",
    "default_owner",
    "new_run_id",
]
