"""MLflow as usina's experiment tracker and model registry: the only module that imports mlflow.

A usina run is an MLflow parent run, each step a nested run under it. Both are found again by
their tags (``usina.run_id``, ``usina.node``), never only remembered, so an engine that restarts
after a crash picks up the same MLflow runs instead of creating duplicates. Parameters, step
metrics and lineage tags are logged: the usina version, the pipeline hash (``Plan.hash``), the
data hash (the content hashes of what the pipeline's source steps read) and the git commit.

``register_model`` is the model registry's gate, called from a pipeline step: it logs a model
with its signature and an input example, registers a version, points alias ``challenger`` at it,
and moves ``champion`` to it only if it scores better than the current champion on the *same*
test data (the champion is re-scored, never compared by a number from another test set).

Where: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store under ``./.usina`` with its
artifacts in ``./.usina/mlflow-artifacts`` (MLflow's plain-file store is deprecated).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usina.engine.records import AttemptRecord, RunRecord, RunState, StepRecord, StepState
from usina.errors import MissingExtraError, StateError, StoreError
from usina.sdk.context import current
from usina.sdk.pipeline import Plan

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

DEFAULT_ROOT = ".usina"
CHAMPION = "champion"
CHALLENGER = "challenger"

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


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError("mlflow", "mlflow") from exc
    return mlflow


def default_tracking_uri(root: str | os.PathLike[str] = DEFAULT_ROOT) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else an absolute SQLite URI under ``root``.

    Absolute, so worker processes started in another directory log to the same store.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    path = Path(root).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def _artifact_root(uri: str) -> str | None:
    """Where a local store keeps artifacts (next to the database); a server decides its own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "mlflow-artifacts").resolve().as_uri()


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


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _text(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


class MlflowTracker:
    """The engine's ``Tracker`` on MLflow: a usina run is a parent run, a step a nested run.

    tracking_uri: where MLflow lives; None means ``$MLFLOW_TRACKING_URI`` or the local SQLite
    store under ``./.usina`` (read when the tracker is built, not at import). experiment: the
    MLflow experiment; None means one experiment per pipeline, named after it.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        *,
        root: str | os.PathLike[str] = DEFAULT_ROOT,
    ) -> None:
        self.tracking_uri = tracking_uri or default_tracking_uri(root)
        self.experiment = experiment
        self._client: MlflowClient | None = None
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, str] = {}
        self._steps: dict[tuple[str, str], str] = {}

    # -- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = _mlflow().MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self, run: RunRecord) -> str:
        name = self.experiment or run.pipeline
        if name not in self._experiments:
            self._experiments[name] = ensure_experiment(self.client, name, self.tracking_uri)
        return self._experiments[name]

    def _find(self, experiment_id: str, **tags: str) -> Run | None:
        query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
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
        from mlflow.entities import Metric, Param, RunTag

        stamp = _ms(at) or 0
        batch_metrics = [
            Metric(k, float(v), stamp, 0) for k, v in (metrics or {}).items() if math.isfinite(v)
        ]
        batch_params = [Param(k, v) for k, v in (params or {}).items()]
        batch_tags = [RunTag(k, _text(v, _MAX_TAG)) for k, v in (tags or {}).items()]
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
        # MLflow prints "View run ... at" to stdout when a run ends on a tracking server; the
        # library must not write into the CLI's stdout (``--output json`` is parsed by tools).
        with contextlib.redirect_stdout(sys.stderr):
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
            filter_string=f"tags.`{TAG_RUN}` = {_quote(run.id)} and "
            f"tags.`{TAG_KIND}` = 'step' and attributes.status = 'RUNNING'",
        ):
            self._terminate(step_run.info.run_id, "KILLED", None)
        self._terminate(parent, status, _ms(run.finished_at))

    # -- lineage helpers -----------------------------------------------------------------

    @staticmethod
    def _sources(run: RunRecord) -> list[str]:
        """Nodes that read no other step's output: where the pipeline's data comes in."""
        return [
            n["id"]
            for n in run.plan.get("nodes", ())
            if not any("ref" in v for v in n.get("inputs", {}).values())
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
    mlflow = _mlflow()
    try:
        return str(client.create_experiment(name, artifact_location=_artifact_root(tracking_uri)))
    except mlflow.exceptions.MlflowException:
        # Created meanwhile by another process.
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


# -- the registry gate ---------------------------------------------------------------------


def _usina_run_id() -> str | None:
    try:
        return current().run_id
    except StateError:
        return os.environ.get("USINA_RUN_ID") or None


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    """What ``register_model`` did, and why."""

    name: str
    version: str
    promoted: bool
    metric: str
    challenger_score: float
    champion_score: float | None  # the previous champion on the same data; None if none
    champion_version: str | None  # the champion before this decision
    reason: str
    model_uri: str
    run_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_FLAVORS = frozenset({"lightgbm", "pytorch"})


def _score(flavor: str, model: Any, features: pd.DataFrame) -> np.ndarray:
    """The model's fraud scores for ``features`` (higher means more likely fraud)."""
    import numpy as np

    if flavor == "lightgbm":
        names = list(model.feature_name())
        missing = set(names) - set(features.columns)
        if missing:
            raise ValueError(f"it needs features this data lacks: {sorted(missing)}")
        return np.asarray(model.predict(features[names]))
    import torch

    with torch.no_grad():
        x = torch.as_tensor(features.to_numpy(dtype=np.float32))
        out = torch.sigmoid(torch.as_tensor(model(x))).reshape(-1)
    return out.numpy().astype(np.float64)


def _log_model(mlflow: Any, flavor: str, model: Any, signature: Any, example: Any) -> Any:
    if flavor == "lightgbm":
        import lightgbm

        return mlflow.lightgbm.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=[f"lightgbm=={lightgbm.__version__}"],
        )
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    # PyTorch models are logged as a traced program (MLflow's "pt2"): loading one needs no
    # Python class, so a served model does not depend on the training code. Its inputs are a
    # float32 matrix of the features, in the signature's order.
    rows = example.to_numpy(dtype=np.float32)
    with torch.no_grad():
        out = model(torch.as_tensor(rows)).numpy()
    return mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(rows, out),
        input_example=rows,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )


def _load_model(mlflow: Any, flavor: str, uri: str) -> Any:
    if flavor == "lightgbm":
        return mlflow.lightgbm.load_model(uri)
    return mlflow.pytorch.load_model(uri)  # a traced program: already in inference mode


def register_model(
    model: Any,
    *,
    name: str,
    features: pd.DataFrame,
    labels: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    metric_name: str = "score",
    min_improvement: float = 0.0,
    extra_metrics: Mapping[str, float] | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    example_rows: int = 5,
    flavor: str = "lightgbm",
) -> PromotionDecision:
    """Log a model, register it as a version of ``name``, and gate its promotion.

    model: a ``lightgbm.Booster`` (``flavor="lightgbm"``) or a ``torch.nn.Module`` returning one
    logit per row (``flavor="pytorch"``; scores are its sigmoid). features/labels: the test set
    both models are scored on (float columns: the signature then accepts missing values);
    ``metric(labels, scores)`` is the gate, higher is better. The new version gets alias
    ``challenger``; it takes ``champion`` if there is none, or if it beats the current one by
    more than ``min_improvement``. A champion that cannot score these features (another
    feature set) keeps its alias: promotion then needs a person, and the reason says so.

    Logs into ``run_id``, else ``$MLFLOW_RUN_ID`` (set for a step by ``MlflowTracker``), else
    a new run in experiment ``name``.
    """
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
    experiment_id = None
    if run_id is None:
        experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or ensure_experiment(
            client, name, uri
        )

    import pandas

    if flavor not in _FLAVORS:
        raise ValueError(f"flavor {flavor!r} is not one of {sorted(_FLAVORS)}")
    # Plain object column labels: MLflow compares them with a range, which pandas >= 3
    # deprecates for its Arrow-backed string labels.
    features = features.set_axis(pandas.Index(list(features.columns), dtype=object), axis=1)
    scores = _score(flavor, model, features)
    challenger = float(metric(labels, scores))
    signature = infer_signature(features.head(100), scores[:100])
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id) as active:
        info = _log_model(mlflow, flavor, model, signature, features.head(example_rows))
        usina_run = _usina_run_id()
        version = mlflow.register_model(
            info.model_uri, name, tags={"usina.run_id": usina_run} if usina_run else None
        )
        client.set_registered_model_alias(name, CHALLENGER, version.version)

        champion_version: str | None = None
        champion: float | None = None
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
            champion_version = str(current.version)
        except mlflow.exceptions.MlflowException:
            current = None
        if current is None:
            promoted, reason = True, f"no {CHAMPION} yet: version {version.version} becomes it"
        else:
            try:
                old = _load_model(mlflow, flavor, f"models:/{name}/{champion_version}")
                champion = float(metric(labels, _score(flavor, old, features)))
            except Exception as exc:
                promoted = False
                reason = (
                    f"{CHAMPION} v{champion_version} could not be scored on this test set "
                    f"({exc}); it stays {CHAMPION}. Promote v{version.version} by hand if "
                    f"intended: MlflowClient().set_registered_model_alias({name!r}, "
                    f"{CHAMPION!r}, {str(version.version)!r})"
                )
            else:
                promoted = challenger > champion + min_improvement
                verb = "beats" if promoted else "does not beat"
                reason = (
                    f"v{version.version} {verb} {CHAMPION} v{champion_version} on {metric_name}: "
                    f"{challenger:.4f} vs {champion:.4f} (min improvement {min_improvement})"
                )
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version.version)

        decision = PromotionDecision(
            name=name,
            version=str(version.version),
            promoted=promoted,
            metric=metric_name,
            challenger_score=challenger,
            champion_score=champion,
            champion_version=champion_version,
            reason=reason,
            model_uri=f"models:/{name}/{version.version}",
            run_id=active.info.run_id,
        )
        gate = {f"gate.challenger_{metric_name}": challenger, "gate.promoted": float(promoted)}
        if champion is not None:
            gate[f"gate.champion_{metric_name}"] = champion
        gate.update({k: float(v) for k, v in (extra_metrics or {}).items()})
        mlflow.log_metrics({k: v for k, v in gate.items() if math.isfinite(v)})
        mlflow.set_tags({"gate.decision": reason, "gate.version": str(version.version)})
        mlflow.log_dict(decision.to_json(), "gate_decision.json")
        for key, value in {
            f"gate.{metric_name}": f"{challenger:.6f}",
            "gate.decision": "promoted" if promoted else "kept champion",
            "gate.reason": reason,
            "gate.run_id": active.info.run_id,
        }.items():
            client.set_model_version_tag(name, version.version, key, value)
    log.info("model %s v%s: %s", name, version.version, reason)
    return decision


# -- monitoring: drift references and the models' KPIs -------------------------------------

DRIFT_REFERENCE = "drift_reference.json"


def log_drift_reference(
    reference: Mapping[str, Any], *, run_id: str | None = None, tracking_uri: str | None = None
) -> str:
    """Store a model's drift reference (``DriftReference.to_json()``: the training features'
    and scores' distributions) as artifact ``drift_reference.json`` of the MLflow run that logged
    the model, so every version registered from that run carries it.

    Logs into ``run_id``, else ``$MLFLOW_RUN_ID`` (a step's run, as ``register_model`` does).
    Returns the MLflow run id.
    """
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri or default_tracking_uri())
    rid = run_id or os.environ.get("MLFLOW_RUN_ID")
    if not rid:
        raise StateError(
            "log_drift_reference needs the MLflow run that logged the model: pass run_id= "
            "(PromotionDecision.run_id) or call it inside a tracked step"
        )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DRIFT_REFERENCE
        path.write_text(json.dumps(dict(reference)))
        client.log_artifact(rid, str(path))
    return str(rid)


def _model_version(client: MlflowClient, model_uri: str) -> Any:
    """The registry's model version for ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
    if not model_uri.startswith("models:/"):
        raise ValueError(f"{model_uri!r} is not a registry URI (models:/NAME/VERSION or @ALIAS)")
    rest = model_uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return client.get_model_version_by_alias(name, alias)
    name, _, version = rest.rpartition("/")
    return client.get_model_version(name, version)


def load_drift_reference(
    model_uri: str, *, tracking_uri: str | None = None
) -> dict[str, Any] | None:
    """The drift reference stored with the model version ``model_uri`` (``models:/NAME/VERSION``
    or ``models:/NAME@ALIAS``), as JSON for ``DriftReference.from_json``; None when the version's
    run has none."""
    mlflow = _mlflow()
    uri = tracking_uri or default_tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    version = _model_version(client, model_uri)
    if not version.run_id:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=version.run_id,
                artifact_path=DRIFT_REFERENCE,
                dst_path=tmp,
                tracking_uri=uri,
            )
        except (mlflow.exceptions.MlflowException, OSError):
            return None
        data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


@contextlib.contextmanager
def _short_http(timeout: float) -> Any:
    """MLflow's HTTP client retries for minutes by default; a report wants an answer fast."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _promoted(new: list[Any], champion: Any) -> set[str]:
    """Versions among ``new`` that became the champion: the gate's promotions, plus the
    current champion when it is new and was set by hand or by plain MLflow calls (MLflow keeps
    no alias history: an alias set and moved again within the period leaves no trace)."""
    found = {str(v.version) for v in new if (v.tags or {}).get("gate.decision") == "promoted"}
    if champion is not None and any(str(v.version) == str(champion) for v in new):
        found.add(str(champion))
    return found


def model_kpis(
    *, tracking_uri: str | None = None, since: float | None = None, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Each registered model's numbers: versions (all, and registered since ``since``), how many
    of those the gate promoted, the ``champion`` and ``challenger`` versions and the champion's
    gate tags (``gate.<metric>``, ``gate.decision``).

    Raises ``StoreError`` when the registry cannot be read (a local store that does not exist,
    a server that does not answer within ``timeout`` seconds).
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise StoreError(f"no MLflow store at {uri}")
    mlflow = _mlflow()
    since_ms = int(since * 1000) if since is not None else 0
    out: list[dict[str, Any]] = []
    try:
        with _short_http(timeout):
            client = mlflow.MlflowClient(tracking_uri=uri)
            for model in client.search_registered_models():
                versions = client.search_model_versions(f"name = {_quote(model.name)}")
                aliases = dict(getattr(model, "aliases", {}) or {})
                new = [v for v in versions if int(v.creation_timestamp or 0) >= since_ms]
                champion = aliases.get(CHAMPION)
                gate: dict[str, str] = {}
                for v in versions:
                    if str(v.version) == str(champion):
                        gate = {
                            k: str(x) for k, x in (v.tags or {}).items() if k.startswith("gate.")
                        }
                out.append(
                    {
                        "name": model.name,
                        "versions": len(versions),
                        "new_versions": len(new),
                        "promoted": len(_promoted(new, champion)),
                        "champion": str(champion) if champion is not None else None,
                        "challenger": (str(aliases[CHALLENGER]) if CHALLENGER in aliases else None),
                        "champion_gate": gate,
                    }
                )
    except mlflow.exceptions.MlflowException as exc:
        raise StoreError(f"cannot read the MLflow registry at {uri}: {exc}") from exc
    return sorted(out, key=lambda m: str(m["name"]))
