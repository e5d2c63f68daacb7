"""Steps: bringing a step in line with its latest attempt (success, retry after a backoff, or
failure by the retry policy) and serving it from the cache when the same work was done before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from usina.engine.base import EngineBase
from usina.engine.cache import cache_material, key_of, last_key, material_key, miss_reason
from usina.engine.policy import decide
from usina.engine.ports import result_key
from usina.engine.records import (
    ArtifactRef,
    AttemptRecord,
    AttemptState,
    RunRecord,
    StepRecord,
    StepState,
)
from usina.errors import ArtifactMissingError
from usina.sdk.resources import Resources
from usina.sdk.retry import FailureClass, Retry

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from usina.sdk.pipeline import PlanNode

log = logging.getLogger("usina.engine.engine")

#: What the artifact store raises when an input's bytes are gone or do not match their hash.
_LOST = ("ArtifactCorruptError", "ArtifactMissingError")
#: Times one step may send its producers back to recompute a lost input in one run.
_MAX_RECOVERIES = 3


# ``_from_cache``'s reasons for not looking the key up at all.
_NOT_LOOKED_UP = frozenset({"cache=False", "--no-cache"})


class Steps(EngineBase):
    """The engine's part that settles steps and uses the cache."""

    def _settle(
        self,
        run: RunRecord,
        node: PlanNode,
        step: StepRecord,
        attempts: Sequence[AttemptRecord],
        steps: dict[str, StepRecord] | None = None,
    ) -> StepRecord:
        """Bring the step's own state in line with its latest attempt (attempts before a resume,
        numbered up to ``retry_base``, are history)."""
        attempts = [a for a in attempts if a.number > step.retry_base]
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
            self._save_step(step, self._new_event(run.id, "step_succeeded", node=node.id))
            if node.cache and step.cache_key:
                self.metadata.cache_put(step.cache_key, outputs, run.id, node.id)
            self._track("step_finished", run, step, latest)
            return step
        # The latest attempt failed: apply the policy once (BACKOFF means it was applied).
        if step.state not in (StepState.PENDING, StepState.RUNNING):
            return step
        if steps is not None and not run.cancel_requested:
            recovered = self._recompute_lost_inputs(run, node, step, attempts, steps)
            if recovered is not None:
                return recovered
        counted = [
            a.failure_class or FailureClass.USER_ERROR
            for a in attempts
            if a.state is AttemptState.FAILED and a.number > step.retry_base
        ]
        decision = decide(Retry.from_json(node.retry), counted, Resources.from_json(step.resources))
        if decision.retry and not run.cancel_requested:
            step = replace(
                step,
                state=StepState.BACKOFF,
                attempts=latest.number,
                next_attempt_at=now + decision.delay,
                resources=decision.resources.to_json(),  # stored: JSON
            )
            self._save_step(
                step, self._new_event(run.id, "step_retry", node=node.id, message=decision.reason)
            )
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
        self._save_step(
            step, self._new_event(run.id, "step_failed", node=node.id, message=step.error or "")
        )
        self._track("step_finished", run, step, latest)
        return step

    def _material(self, node: PlanNode, inputs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        digests = {n: v["artifact"]["digest"] for n, v in inputs.items() if "artifact" in v}
        for name, value in inputs.items():
            if "item" in value:  # a map branch depends on its item only, not the whole list
                items = self._list_of(ArtifactRef.from_json(value["artifact"]))
                if isinstance(items, list) and value["item"] < len(items):
                    blob = json.dumps(items[value["item"]], sort_keys=True, default=str)
                    digests[name] = "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
            if "artifacts" in value:  # a list or dict of upstream outputs (fan-in)
                digests[name] = json.dumps(value["artifacts"], sort_keys=True, default=str)
        env_values = {name: os.environ.get(name) for name in node.env}
        return cache_material(node, digests, self.environment, env_values)

    def _recompute_lost_inputs(
        self,
        run: RunRecord,
        node: PlanNode,
        step: StepRecord,
        attempts: Sequence[AttemptRecord],
        steps: dict[str, StepRecord],
    ) -> StepRecord | None:
        """When the latest attempt failed because an input artifact is missing or corrupt (the
        store refused its bytes: ``ArtifactMissingError``/``ArtifactCorruptError`` naming its
        digest), compute its producer again in this run, and let this step wait for it without
        charging the failed attempt to its retry budget. None: not such a failure."""
        latest = attempts[-1]
        message = latest.message or ""
        if latest.failure_class is not FailureClass.INFRA or not any(
            name in message for name in _LOST
        ):
            return None
        lost: dict[str, str] = {}
        for spec in node.inputs.values():
            pairs = [spec["ref"]] if "ref" in spec else list(spec.get("refs", ()))
            for source, index in pairs:
                outputs = steps[source].outputs
                if index < len(outputs) and outputs[index].digest in message:
                    lost[source] = outputs[index].digest
        recoveries = sum(1 for a in attempts if any(n in (a.message or "") for n in _LOST))
        if not lost or recoveries > _MAX_RECOVERIES:
            return None
        for source, digest in lost.items():
            producer = steps[source]
            again = replace(
                producer,
                state=StepState.PENDING,
                outputs=(),
                cached=False,
                finished_at=None,
                error=None,
                next_attempt_at=None,
                retry_base=producer.attempts,
            )
            rerun = self._new_event(
                run.id,
                "step_rerun",
                node=source,
                message=f"its output {digest} was missing or corrupt when {node.id} read it",
            )
            self._save_step(again, rerun)
            steps[source] = again
        waiting = replace(
            step,
            state=StepState.PENDING,
            attempts=latest.number,
            retry_base=latest.number,
            next_attempt_at=None,
            error=None,
        )
        retry = self._new_event(
            run.id,
            "step_retry",
            node=node.id,
            message=(
                f"input from {', '.join(sorted(lost))} was missing or corrupt: recomputing it "
                "first; this attempt does not count against the retry budget"
            ),
        )
        self._save_step(waiting, retry)
        return waiting

    def _list_of(self, ref: ArtifactRef) -> list[Any] | str:
        """The list a map runs over (a JSON output), or why it is not one."""
        cached = self._lists.get(ref.digest)
        if cached is not None:
            return cached
        if ref.serializer != "json":
            return f"it is a {ref.type_name}, not a list"
        value = json.loads(self.artifacts.get_bytes(ref.digest))
        if not isinstance(value, list):
            return f"it is a {type(value).__name__}, not a list"
        if len(self._lists) > 256:
            self._lists.clear()
        self._lists[ref.digest] = value
        return value

    def _map_branch(
        self, run: RunRecord, node: PlanNode, step: StepRecord, steps: dict[str, StepRecord]
    ) -> StepRecord | None:
        """Settle a branch of a map over a run-time list that does not run: past the list's
        end (succeeded, no output), or the list is not one or is longer than the bound (failed).
        None: the branch runs."""
        for name, spec in node.inputs.items():
            if "item" not in spec:
                continue
            source, index = spec["ref"]
            now = self.clock.now()
            try:
                items = self._list_of(steps[source].outputs[index])
            except ArtifactMissingError as exc:  # the list's bytes are gone or corrupt
                producer = steps[source]
                again = replace(
                    producer,
                    state=StepState.PENDING,
                    outputs=(),
                    cached=False,
                    finished_at=None,
                    error=None,
                    next_attempt_at=None,
                    retry_base=producer.attempts,
                )
                self._save_step(
                    again, self._new_event(run.id, "step_rerun", node=source, message=str(exc))
                )
                steps[source] = again
                return step
            problem = None
            if isinstance(items, str):
                problem = f"the map input '{name}' from step '{source}': {items}"
            elif len(items) > int(spec.get("width") or 0):
                problem = (
                    f"the map input '{name}' from step '{source}' has {len(items)} items, more "
                    f"than max_width={spec.get('width')}; raise max_width in {node.step}.map()"
                )
            if problem is not None:
                failed = replace(
                    step, state=StepState.FAILED, finished_at=now, error=f"user_error: {problem}"
                )
                self._save_step(
                    failed, self._new_event(run.id, "step_failed", node=node.id, message=problem)
                )
                return failed
            assert isinstance(items, list)
            if spec["item"] >= len(items):
                unused = replace(
                    step, state=StepState.SUCCEEDED, outputs=(), started_at=now, finished_at=now
                )
                self._save_step(
                    unused,
                    self._new_event(
                        run.id,
                        "step_unused",
                        node=node.id,
                        message=f"the list has {len(items)} items",
                    ),
                )
                return unused
        return None

    def _key(self, node: PlanNode, inputs: Mapping[str, dict[str, Any]]) -> str:
        return key_of(self._material(node, inputs))

    def _uses_cache(self, run: RunRecord) -> bool:
        """``--no-cache`` is the run's own: a resume keeps it."""
        return self.settings.use_cache and bool(run.plan.get("use_cache", True))

    def _old_material(self, key: str | None) -> dict[str, Any] | None:
        if not key:
            return None
        raw = self.artifacts.read_record(material_key(key))
        return json.loads(raw) if raw is not None else None

    def _explain_miss(
        self,
        run: RunRecord,
        node: PlanNode,
        step: StepRecord,
        key: str,
        material: dict[str, Any],
        why: str,
    ) -> list[tuple[str, bytes]]:
        """Say (an event) why a step runs instead of its cache; returns the records that keep
        the key's material and make it the node's last key, for the caller to write once the
        attempt is launched (two file creations off the way from one step to the next).

        A step that does not use the cache (``cache=False``, ``--no-cache``) keeps nothing: a
        later miss is explained against the last run that could have used it."""
        if why in _NOT_LOOKED_UP:
            self._event(run.id, "step_cache_miss", node=node.id, message=why)
            return []
        pointer = last_key(run.pipeline, node.id)
        keep = [
            (material_key(key), json.dumps(material, sort_keys=True, default=str).encode()),
            (pointer, key.encode()),
        ]
        if why == "re-run":
            return keep  # a retry, or a resume: the first attempt or ``step_rerun`` said why
        previous = self.artifacts.read_record(pointer)
        if not why:
            old_key = previous.decode() if previous is not None else None
            if old_key == key:
                why = "no cached result (its last run did not succeed)"
            else:
                why = miss_reason(self._old_material(old_key), material)
        self._event(run.id, "step_cache_miss", node=node.id, message=why)
        return keep

    def _from_cache(
        self,
        run: RunRecord,
        node: PlanNode,
        step: StepRecord,
        key: str,
        steps: dict[str, StepRecord],
    ) -> str | None:
        """Serve the step from the cache (None), or say why not ("" when there is no entry)."""
        if not node.cache:
            return "cache=False"
        if not self._uses_cache(run):
            return "--no-cache"
        if step.attempts:
            return "re-run"
        outputs = self.metadata.cache_get(key)
        if outputs is None or len(outputs) != node.outputs:
            return ""
        bad = [o.digest for o in outputs if not self.artifacts.verify(o.digest)]
        if bad:
            log.info("cache entry of %s has missing or corrupt artifacts; recomputing", node.id)
            for digest in bad:
                # A read through the store moves corrupt bytes aside (quarantine), so the
                # recomputed output is written afresh instead of deduplicated onto them.
                with contextlib.suppress(ArtifactMissingError):
                    self.artifacts.get_bytes(digest)
            return "artifact missing or corrupt"
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
        self._save_step(done, self._new_event(run.id, "step_cached", node=node.id))
        steps[node.id] = done
        self._track("step_finished", run, done, None)
        return None


__all__ = ["Steps"]
