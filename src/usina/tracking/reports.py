"""What serving and monitoring read back from the registry: drift references and model KPIs.

A model's drift reference (the training features' and scores' distributions) is stored as an
artifact of the MLflow run that logged it, so every version registered from that run carries
it; ``usina serve`` loads it to measure drift. ``model_kpis`` summarises each registered model:
versions, promotions by the gate, and who is ``champion`` and ``challenger``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usina.errors import StateError, StoreError
from usina.tracking import adapter
from usina.tracking.registry import CHALLENGER, CHAMPION
from usina.tracking.tracker import quote
from usina.tracking.uri import default_tracking_uri, local_store_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.tracking.adapter import MlflowClient

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
    client = adapter.new_client(tracking_uri or default_tracking_uri())
    rid = run_id or os.environ.get("MLFLOW_RUN_ID")
    if not rid:
        raise StateError(
            "log_drift_reference needs the MLflow run that logged the model: pass run_id= "
            "(PromotionDecision.run_id) or call it inside a tracked step"
        )
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
    uri = tracking_uri or default_tracking_uri()
    client = adapter.new_client(uri)
    version = _model_version(client, model_uri)
    if not version.run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = adapter.download_run_artifact(version.run_id, DRIFT_REFERENCE, tmp, uri)
        except (adapter.error_type(), OSError):
            return None
        data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


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
    uri = tracking_uri or default_tracking_uri()
    store = local_store_path(uri)
    if store is not None and not store.exists():
        raise StoreError(f"no MLflow store at {uri}")
    since_ms = int(since * 1000) if since is not None else 0
    out: list[dict[str, Any]] = []
    try:
        with adapter.short_http(timeout):
            client = adapter.new_client(uri)
            for model in client.search_registered_models():
                versions = client.search_model_versions(f"name = {quote(model.name)}")
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
    except adapter.error_type() as exc:
        raise StoreError(f"cannot read the MLflow registry at {uri}: {exc}") from exc
    return sorted(out, key=lambda m: str(m["name"]))
