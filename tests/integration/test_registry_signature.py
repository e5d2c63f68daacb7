"""The registered signature says which columns may be missing, from the whole test set: a
column whose first gap comes after row 100 is optional all the same, so ``usina serve``
accepts a null there (and still refuses one in a column that never had gaps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from usina.tracking.mlflow import register_model


def test_a_late_gap_makes_its_column_optional(tmp_path: Path) -> None:
    import lightgbm
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    n = 600
    x = pd.DataFrame({"amount": rng.normal(size=n), "days_since_last": rng.normal(size=n)})
    y = (x["amount"] > 0).astype(int).to_numpy()
    x.loc[450:460, "days_since_last"] = np.nan  # the first gap, well past row 100
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, y), num_boost_round=5
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_model(
        booster, name="late", features=x, labels=y, metric=roc_auc_score, flavor="lightgbm",
        tracking_uri=uri,
    )  # fmt: skip
    import mlflow
    import yaml

    version = mlflow.MlflowClient(uri).get_model_version("late", "1")
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=version.source, dst_path=str(tmp_path / "model"), tracking_uri=uri
    )
    mlmodel = yaml.safe_load((Path(folder) / "MLmodel").read_text())
    inputs = {c["name"]: c for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs["days_since_last"].get("required") is False
    assert inputs["amount"].get("required", True) is True
