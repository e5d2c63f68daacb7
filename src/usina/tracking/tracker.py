"""MLflow as usina's experiment tracker: a usina run is a parent run, each step a nested run.

Both are found again by their tags (``usina.run_id``, ``usina.node``), never only remembered, so
an engine that restarts after a crash picks up the same MLflow runs instead of creating
duplicates. Parameters, step metrics and lineage tags are logged: the usina version, the
pipeline hash (``Plan.hash``), the data hash (the content hashes of what the pipeline's source
steps read) and the git commit. Where MLflow lives: ``usina.tracking.uri``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usina.engine.records import AttemptRecord, RunRecord, RunState, StepRecord, StepState
from usina.errors import StoreError
from usina.sdk.pipeline import Plan
from usina.tracking import adapter
from usina.tracking.uri import artifact_root, default_tracking_uri, local_store_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.tracking.adapter import MlflowClient

log = logging.getLogger(__name__)

# Tags that identify usina's runs in MLflow.
TAG_RUN = "usina.run_id"
TAG_KIND = "usina.kind"  # "run" (the parent) or "step" (nested)
TAG_NODE = "usina.node"
TAG_STATE = "usina.state"
_PARENT = "mlflow.parentRunId"
_MAX_TAG = 5000
_MAX_PARAM = 500

_RUN_STATUS = {
    RunState.SUCCEEDED: "FINISHED",
    RunState.FAILED: "FAILED",
    RunState.CANCELLED: "KILLED",
}
_STEP_STATUS = {
    StepState.SUCCEEDED: "FINISHED",
    StepState.FAILED: "FAILED",
    StepState.SKIPPED: "KILLED",
    StepState.CANCELLED: "KILLED",
}
_TERMINAL = {"FINISHED", "FAILED", "KILLED"}


def _git_commit(directory: str | None) -> tuple[str, bool] | None:
    """(commit, dirty) of the git checkout holding ``directory``; None outside git."""
    cwd = directory or os.getcwd()
    if not Path(cwd).is_dir():
        cwd = str(Path(cwd).parent)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip(), bool(status.stdout.strip())


def quote(value: str) -> str:
    """``value`` as a string literal of MLflow's search filter language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _text(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


class MlflowTracker:
    """The engine's ``Tracker`` on MLflow: a usina run is a parent run, a step a nested run.

    tracking_uri: where MLflow lives; None means ``usina.tracking.uri.default_tracking_uri()``
    (read when the tracker is built, not at import). experiment: the
    MLflow experiment; None means one experiment per pipeline, named after it.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri()
        store = local_store_path(self.tracking_uri)
        if store is not None:
            store.parent.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self._client: MlflowClient | None = None
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, str] = {}
        self._steps: dict[tuple[str, str], str] = {}

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = adapter.new_client(self.tracking_uri)
        return self._client

    def experiment_id(self, run: RunRecord) -> str:
        name = self.experiment or run.pipeline
        if name not in self._experiments:
            self._experiments[name] = ensure_experiment(self.client, name, self.tracking_uri)
        return self._experiments[name]

    def _find(self, experiment_id: str, **tags: str) -> Any:
        """The oldest MLflow run of ``experiment_id`` carrying ``tags``; None if there is none."""
        query = " and ".join(f"tags.`{k}` = {quote(v)}" for k, v in tags.items())
        found = self.client.search_runs(
            [experiment_id], filter_string=query, max_results=2, order_by=["start_time ASC"]
        )
        if len(found) > 1:
            log.warning("more than one MLflow run matches %s; using the oldest", query)
        return found[0] if found else None

    def parent_run_id(self, run: RunRecord) -> str:
        """The MLflow run of a usina run, created (with its params and lineage) if missing."""
        if run.id in self._parents:
            return self._parents[run.id]
        exp = self.experiment_id(run)
        found = self._find(exp, **{TAG_RUN: run.id, TAG_KIND: "run"})
        if found is not None:
            run_id: str = found.info.run_id
        else:
            created = self.client.create_run(
                exp,
                start_time=_ms(run.started_at or run.created_at),
                tags=self._lineage(run),
                run_name=run.id if run.id.startswith(run.pipeline) else f"{run.pipeline}-{run.id}",
            )
            run_id = created.info.run_id
            self._log(run_id, params=self._params(run.params))
        self._parents[run.id] = run_id
        return run_id

    def step_run_id(self, run: RunRecord, node: str) -> str:
        """The nested MLflow run of one step of a usina run, created if missing."""
        key = (run.id, node)
        if key in self._steps:
            return self._steps[key]
        parent = self.parent_run_id(run)
        exp = self.experiment_id(run)
        found = self._find(exp, **{TAG_RUN: run.id, TAG_KIND: "step", TAG_NODE: node})
        if found is not None:
            run_id: str = found.info.run_id
        else:
            tags = {
                TAG_RUN: run.id,
                TAG_KIND: "step",
                TAG_NODE: node,
                _PARENT: parent,
                "usina.pipeline": run.pipeline,
            }
            created = self.client.create_run(exp, tags=tags, run_name=node)
            run_id = created.info.run_id
            self._log(run_id, params=self._params(self._node_params(run, node)))
        self._steps[key] = run_id
        return run_id

    def _lineage(self, run: RunRecord) -> dict[str, str]:
        from usina import __version__

        tags = {
            TAG_RUN: run.id,
            TAG_KIND: "run",
            "usina.pipeline": run.pipeline,
            "usina.project": run.project,
            "usina.version": __version__,
        }
        source: str | None = None
        try:
            plan = Plan.from_json(run.plan)
            tags["usina.pipeline_hash"] = plan.hash
            source = plan.source
        except (KeyError, TypeError, ValueError):
            log.warning("run %s: its plan cannot be read; no pipeline hash is logged", run.id)
        if source:
            tags["mlflow.source.name"] = source
        git = _git_commit(str(Path(source).parent) if source else None)
        if git is not None:
            commit, dirty = git
            tags["usina.git_commit"] = commit
            tags["mlflow.source.git.commit"] = commit
            tags["usina.git_dirty"] = str(dirty).lower()
        for key, value in run.labels.items():
            tags[f"usina.label.{key}"] = _text(value, _MAX_TAG)
        return tags

    @staticmethod
    def _params(values: Mapping[str, Any]) -> dict[str, str]:
        return {k: _text(v, _MAX_PARAM) for k, v in values.items()}

    @staticmethod
    def _node_params(run: RunRecord, node: str) -> dict[str, Any]:
        for item in run.plan.get("nodes", ()):
            if item.get("id") == node:
                inputs = item.get("inputs", {})
                return {k: v["const"] for k, v in inputs.items() if "const" in v}
        return {}

    def _log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        at: float | None = None,
    ) -> None:
        batch_metrics, batch_params, batch_tags = adapter.batch_entities(
            {k: float(v) for k, v in (metrics or {}).items() if math.isfinite(v)},
            dict(params or {}),
            {k: _text(v, _MAX_TAG) for k, v in (tags or {}).items()},
            _ms(at) or 0,
        )
        if batch_metrics or batch_params or batch_tags:
            try:
                self.client.log_batch(
                    run_id, metrics=batch_metrics, params=batch_params, tags=batch_tags
                )
            except Exception as exc:
                raise StoreError(
                    f"MLflow at {self.tracking_uri} refused to log to run {run_id}: {exc}"
                ) from exc

    # -- the Tracker protocol --------------------------------------------------------------

    def run_started(self, run: RunRecord) -> None:
        self.parent_run_id(run)

    def step_started(self, run: RunRecord, node: str) -> Mapping[str, str]:
        """Environment for the worker: MLflow calls in the step log into its nested run."""
        step_run = self.step_run_id(run, node)
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_RUN_ID": step_run,
            "MLFLOW_EXPERIMENT_ID": self.experiment_id(run),
            "USINA_MLFLOW_PARENT_RUN_ID": self.parent_run_id(run),
        }

    def step_finished(
        self, run: RunRecord, step: StepRecord, attempt: AttemptRecord | None
    ) -> None:
        status = _STEP_STATUS.get(step.state)
        if status is None:
            return
        step_run = self.step_run_id(run, step.node)
        current = self.client.get_run(step_run)
        if current.info.status in _TERMINAL and current.data.tags.get(TAG_STATE) == step.state:
            return  # already recorded (the engine restarted and reported it again)
        tags = {
            TAG_STATE: str(step.state),
            "usina.cached": str(step.cached).lower(),
            "usina.attempts": str(step.attempts),
        }
        if step.cache_key:
            tags["usina.cache_key"] = step.cache_key
        if step.outputs:
            tags["usina.outputs"] = ",".join(o.digest for o in step.outputs)
        if step.error:
            tags["usina.error"] = step.error
        if attempt is not None:
            tags["usina.attempt_id"] = attempt.id
            if attempt.failure_class is not None:
                tags["usina.failure_class"] = str(attempt.failure_class)
            if attempt.exit_code is not None:
                tags["usina.exit_code"] = str(attempt.exit_code)
            if attempt.message:
                tags["usina.message"] = attempt.message
        at = step.finished_at
        self._log(step_run, metrics=step.metrics, tags=tags, at=at)
        parent = self.parent_run_id(run)
        parent_tags = {}
        if step.outputs and self._is_source(run, step.node):
            parent_tags[f"usina.data_hash.{step.node}"] = step.outputs[0].digest
            parent_tags["usina.data_hash"] = self._data_hash(run, step)
        self._log(
            parent,
            metrics={f"{step.node}.{k}": v for k, v in step.metrics.items()},
            tags=parent_tags,
            at=at,
        )
        self._terminate(step_run, status, _ms(at))

    def _terminate(self, run_id: str, status: str, end_time: int | None) -> None:
        with adapter.quiet_stdout():
            self.client.set_terminated(run_id, status=status, end_time=end_time)

    def run_finished(self, run: RunRecord) -> None:
        status = _RUN_STATUS.get(run.state)
        if status is None:
            return
        parent = self.parent_run_id(run)
        tags = {TAG_STATE: str(run.state)}
        if run.error:
            tags["usina.error"] = run.error
        self._log(parent, tags=tags)
        # Steps that never reported (skipped after a failure, or lost) end with the run.
        for step_run in self.client.search_runs(
            [self.experiment_id(run)],
            filter_string=f"tags.`{TAG_RUN}` = {quote(run.id)} and "
            f"tags.`{TAG_KIND}` = 'step' and attributes.status = 'RUNNING'",
        ):
            self._terminate(step_run.info.run_id, "KILLED", None)
        self._terminate(parent, status, _ms(run.finished_at))

    # -- lineage helpers -----------------------------------------------------------------

    @staticmethod
    def _sources(run: RunRecord) -> list[str]:
        """Nodes that read no other step's output (neither one input nor a fan-in of several):
        where the pipeline's data comes in."""
        return [
            n["id"]
            for n in run.plan.get("nodes", ())
            if not any("ref" in v or v.get("refs") for v in n.get("inputs", {}).values())
        ]

    def _is_source(self, run: RunRecord, node: str) -> bool:
        return node in self._sources(run)

    def _data_hash(self, run: RunRecord, step: StepRecord) -> str:
        """A hash over every source step's output digests logged so far (this one included)."""
        parent = self.client.get_run(self.parent_run_id(run))
        digests = {
            k.removeprefix("usina.data_hash."): v
            for k, v in parent.data.tags.items()
            if k.startswith("usina.data_hash.")
        }
        digests[step.node] = step.outputs[0].digest
        text = json.dumps(dict(sorted(digests.items())))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (with a local artifact root) if missing."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return str(existing.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_root(tracking_uri)))
    except adapter.error_type():
        # Created meanwhile by another process.
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)
