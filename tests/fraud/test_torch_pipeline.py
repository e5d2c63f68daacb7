"""The fraud MLP trained as a 2x2 gang through the engine, logged and registered in MLflow
like the LightGBM model: a version with alias ``champion`` that MLflow can load and score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.cli_helpers import Usina

REPO = Path(__file__).resolve().parents[2]
PIPELINE = str(REPO / "examples" / "fraud" / "pipeline_torch.py")

pytestmark = pytest.mark.timeout(600)


def test_the_mlp_is_trained_on_a_gang_and_registered_as_champion(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    usina = Usina(tmp_path)
    usina.env["MLFLOW_TRACKING_URI"] = uri
    res = usina(
        "run",
        PIPELINE,
        "-p",
        "rows=20000",
        "-p",
        "steps=60",
        "-p",
        "checkpoint_every=20",
        "-o",
        "json",
        timeout=540,
    )
    assert res.code == 0, res.out[-3000:] + res.err[-3000:]
    run = res.json()
    assert [s["state"] for s in run["steps"]] == ["succeeded"] * 3
    train = next(s for s in run["steps"] if s["node"] == "train_mlp")
    assert train["metrics"]["world_size"] == 4.0

    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias("fraud-mlp", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["gate.decision"] == "promoted"
    exp = client.get_experiment_by_name("fraud")
    assert exp is not None
    nested = client.search_runs(
        [exp.experiment_id], f"tags.`usina.run_id` = '{run['id']}' and tags.`usina.kind` = 'step'"
    )
    assert sorted(r.data.tags["usina.node"] for r in nested) == ["data", "register", "train_mlp"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # restored after the test
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/fraud-mlp@champion")
    from examples.fraud import features as feats

    width = len(feats.FEATURES)
    rows = np.random.default_rng(0).normal(size=(5, width)).astype(np.float32)
    scores = np.asarray(model.predict(rows)).reshape(-1)
    assert scores.shape == (5,)
    assert np.isfinite(scores).all()
