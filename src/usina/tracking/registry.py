"""The model registry's gate: log a model, register a version, and promote it only on merit.

``register_model`` is called from a pipeline step: it logs a model (any flavour of
``usina.tracking.flavours``) with its signature and an input example, registers a version,
points alias ``challenger`` at it, and moves ``champion`` to it only if it scores better than the
current champion on the *same* test data (the champion is re-scored, never compared by a number
from another test set). The decision is logged to MLflow and tagged on the version.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from usina.errors import StateError
from usina.sdk.context import current
from usina.tracking import adapter
from usina.tracking.flavours import flavour as find_flavour
from usina.tracking.tracker import ensure_experiment
from usina.tracking.uri import default_tracking_uri

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def _usina_run_id() -> str | None:
    try:
        return current().run_id
    except StateError:
        return os.environ.get("USINA_RUN_ID") or None


def _usina_step() -> str | None:
    try:
        return current().step
    except StateError:
        return None


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

    model: a model of ``flavor`` (one of ``usina.tracking.flavours.NAMES``): a
    ``lightgbm.Booster``, an xgboost or scikit-learn model (a classifier is scored by its
    probability of class 1), a ``torch.nn.Module`` returning one logit per row (scored by its
    sigmoid), an ONNX ``ModelProto`` or an ``mlflow.pyfunc.PythonModel``. features/labels: the
    test set both models are scored on (a column with a missing value anywhere in it is
    optional in the signature, so the served model accepts missing values there);
    ``metric(labels, scores)`` is the gate, higher is better. The new version gets alias
    ``challenger``; it takes ``champion`` if there is none, or if it beats the current one by
    more than ``min_improvement``. A champion that cannot score these features (another
    feature set) keeps its alias: promotion then needs a person, and the reason says so.

    Logs into ``run_id``, else ``$MLFLOW_RUN_ID`` (set for a step by ``MlflowTracker``), else
    a new run in experiment ``name``.
    """
    mlflow = adapter.mlflow()
    kind = find_flavour(flavor)
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = adapter.new_client(uri)
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
    experiment_id = None
    if run_id is None:
        experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or ensure_experiment(
            client, name, uri
        )

    import pandas

    # Plain object column labels: MLflow compares them with a range, which pandas >= 3
    # deprecates for its Arrow-backed string labels.
    features = features.set_axis(pandas.Index(list(features.columns), dtype=object), axis=1)
    scores = kind.score(model, features)
    challenger = float(metric(labels, scores))
    # From every row: MLflow marks a column optional (``required: false``, which serving
    # follows) only where the frame it sees has a gap, so a sample would miss later ones.
    signature = adapter.infer_signature(features, scores)
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id) as active:
        info = kind.log(model, signature=signature, example=features.head(example_rows))
        usina_run = _usina_run_id()
        made_by = {"usina.run_id": usina_run} if usina_run else {}
        step = _usina_step()
        if step:
            made_by["usina.step"] = step
        version = mlflow.register_model(info.model_uri, name, tags=made_by or None)
        client.set_registered_model_alias(name, CHALLENGER, version.version)

        champion_version: str | None = None
        champion: float | None = None
        try:
            current = client.get_model_version_by_alias(name, CHAMPION)
            champion_version = str(current.version)
        except adapter.error_type():
            current = None
        if current is None:
            promoted, reason = True, f"no {CHAMPION} yet: version {version.version} becomes it"
        else:
            try:
                old = kind.load(f"models:/{name}/{champion_version}")
                champion = float(metric(labels, kind.score(old, features)))
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
