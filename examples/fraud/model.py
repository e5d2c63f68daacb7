"""LightGBM fraud model: training with class-imbalance handling, scoring, (de)serialisation.

The model travels between steps as bytes of LightGBM's own text format, which is stable,
readable, and needs no pickle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
import polars as pl

from examples.fraud.features import CATEGORICAL, FEATURES


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    learning_rate: float = 0.05
    num_leaves: int = 31
    max_rounds: int = 400  # upper bound; early stopping on the validation window decides
    min_child_samples: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    # Class imbalance: weight of a fraud relative to a legitimate row. None = the ratio of
    # legitimate to fraud rows in the training window, square-rooted (full reweighting
    # over-predicts fraud and hurts calibration; none at all starves the minority class).
    pos_weight: float | None = None
    early_stopping: int = 40
    seed: int = 7
    # OpenMP threads. 1 by default: on a small or shared machine LightGBM's spin-waiting
    # threads slow down badly when the cores are oversubscribed (measured: 2 threads ~10x
    # slower than 1 on a busy 2-core box). Raise it on a dedicated machine.
    threads: int = 1

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def matrix(df: pl.DataFrame) -> np.ndarray:
    """The model's input: ``FEATURES`` as float64, nulls as NaN (LightGBM's missing value)."""
    return df.select(pl.col(FEATURES).cast(pl.Float64).fill_null(float("nan"))).to_numpy()


def frame(df: pl.DataFrame) -> pd.DataFrame:
    """The model's input as a pandas frame of float64 columns (what the registry logs)."""
    return df.select(pl.col(FEATURES).cast(pl.Float64)).to_pandas()


def train(train_df: pl.DataFrame, valid_df: pl.DataFrame, hp: Hyperparameters) -> lgb.Booster:
    y = train_df["label"].to_numpy()
    positives = max(1, int(y.sum()))
    pos_weight = (
        hp.pos_weight
        if hp.pos_weight is not None
        else float(np.sqrt((y.size - positives) / positives))
    )
    params = {
        "objective": "binary",
        "metric": "average_precision",
        "learning_rate": hp.learning_rate,
        "num_leaves": hp.num_leaves,
        "min_child_samples": hp.min_child_samples,
        "feature_fraction": hp.feature_fraction,
        "bagging_fraction": hp.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": hp.lambda_l2,
        "scale_pos_weight": pos_weight,
        "seed": hp.seed,
        "deterministic": True,
        "num_threads": hp.threads,
        "verbosity": -1,
    }
    dtrain = lgb.Dataset(
        matrix(train_df),
        label=y,
        feature_name=FEATURES,
        categorical_feature=CATEGORICAL,
        free_raw_data=True,
        params={"verbosity": -1},
    )
    dvalid = lgb.Dataset(matrix(valid_df), label=valid_df["label"].to_numpy(), reference=dtrain)
    return lgb.train(
        params,
        dtrain,
        num_boost_round=hp.max_rounds,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(hp.early_stopping, verbose=False)],
    )


def score(model: lgb.Booster, df: pl.DataFrame) -> np.ndarray:
    """Fraud probability per row."""
    return np.asarray(model.predict(matrix(df), num_iteration=model.best_iteration or None))


def to_bytes(model: lgb.Booster) -> bytes:
    return model.model_to_string(num_iteration=model.best_iteration or None).encode()


def from_bytes(data: bytes) -> lgb.Booster:
    return lgb.Booster(model_str=data.decode())
