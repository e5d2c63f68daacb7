"""Build the test models in a local MLflow registry (run in a subprocess by conftest.py).

Usage: ``python make_models.py TRACKING_URI OUT_DIR`` creates, in the registry at TRACKING_URI:

- ``fraud``: version 1, a 40-tree LightGBM booster on 9 float features and one integer
  feature (``hour``, which forbids NaN); alias ``champion`` -> 1.
- ``fraud_reload``: version 1 (same data), version 2 (a different booster), version 3 (broken:
  its model file is garbage), version 4 (a pyfunc around version 2's booster that fails 5 % of
  its calls: a challenger to roll back); alias ``champion`` -> 1.

and writes to OUT_DIR: ``x.npy`` (test rows), ``pred_v1.npy`` and ``pred_v2.npy`` (the models'
in-process predictions on them, via ``mlflow.lightgbm.load_model``), ``columns.txt``.
``python make_models.py TRACKING_URI --alias NAME ALIAS VERSION`` moves an alias.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

import lightgbm as lgb  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402

COLUMNS = [f"v{i}" for i in range(9)] + ["hour"]


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 9)), columns=COLUMNS[:9])
    df["hour"] = rng.integers(0, 24, size=n).astype(np.int64)
    return df


def train(df: pd.DataFrame, seed: int, trees: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    logit = df.v0 - 0.5 * df.v1 + 0.1 * (df.hour - 12) + rng.normal(scale=0.5, size=len(df))
    y = (logit > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 15, "seed": seed}
    return lgb.train(params, lgb.Dataset(df, y), trees)


def log(booster: lgb.Booster, df: pd.DataFrame, name: str, drift: bool = False) -> str:
    sig = infer_signature(df, booster.predict(df))
    with mlflow.start_run() as run:
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=sig,
            registered_model_name=name,
            pip_requirements=["lightgbm"],  # skip mlflow's slow requirement inference
        )
        if drift:  # the training reference usina serve compares live traffic with
            from usina.monitoring.drift import DriftReference
            from usina.tracking.mlflow import log_drift_reference

            reference = DriftReference.from_training(
                {c: df[c].to_numpy(dtype=float) for c in df.columns}, booster.predict(df)
            )
            log_drift_reference(
                reference.to_json(), run_id=run.info.run_id, tracking_uri=mlflow.get_tracking_uri()
            )
    return str(info.registered_model_version)


def log_broken(name: str) -> str:
    """A version whose MLmodel says lightgbm but whose model file cannot be parsed."""
    tmp = Path(tempfile.mkdtemp())
    good = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp)))
    for f in good.iterdir():
        if f.name.endswith((".lgb", ".txt", ".bin")) and f.name != "requirements.txt":
            f.write_text("this is not a LightGBM model\n")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(good), artifact_path="model")
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    return str(mv.version)


class Flaky(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """A challenger that errors on 5 % of its calls (after the server's warm-up)."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.calls = 0

    def predict(self, context: object, model_input: pd.DataFrame, params: object = None) -> object:
        import random

        self.calls += 1
        if self.calls > 3 and random.random() < 0.05:
            raise RuntimeError("the flaky challenger failed, as it does on 5 % of calls")
        return self.booster.predict(model_input)


def log_flaky(booster: lgb.Booster, df: pd.DataFrame, name: str) -> str:
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Flaky(booster),
            signature=infer_signature(df, booster.predict(df)),
            registered_model_name=name,
            pip_requirements=["lightgbm"],
        )
    return str(info.registered_model_version)


def main() -> None:
    uri = sys.argv[1]
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    if sys.argv[2] == "--alias":
        name, alias, version = sys.argv[3:6]
        client.set_registered_model_alias(name, alias, version)
        return
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    artifacts = (out / "artifacts").resolve().as_uri()
    mlflow.set_experiment(experiment_id=client.create_experiment("serving-tests", artifacts))
    train_df = frame(2000, 0)
    b1 = train(train_df, 1, 40)
    b2 = train(train_df, 2, 60)
    client.set_registered_model_alias("fraud", "champion", log(b1, train_df, "fraud", drift=True))
    client.set_registered_model_alias("fraud_reload", "champion", log(b1, train_df, "fraud_reload"))
    log(b2, train_df, "fraud_reload")
    log_broken("fraud_reload")
    log_flaky(b2, train_df, "fraud_reload")
    x = frame(64, 7)
    np.save(out / "x.npy", x.to_numpy(dtype=np.float64))
    for v in ("1", "2"):
        model = mlflow.lightgbm.load_model(f"models:/fraud_reload/{v}")
        np.save(out / f"pred_v{v}.npy", model.predict(x))
    (out / "columns.txt").write_text("\n".join(COLUMNS))


if __name__ == "__main__":
    main()
