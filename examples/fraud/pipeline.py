"""The fraud reference pipeline: ingest -> validate -> features -> split -> train -> evaluate
-> register.

Run it with ``usina run examples/fraud/pipeline.py`` (parameters: ``--param rows=50000``).
Each step is a thin call into the modules next to this file; the data size and the model's
hyperparameters are pipeline parameters. ``register`` logs the model to MLflow, registers a
version with alias ``challenger`` and moves ``champion`` only if the new model beats the current
champion on this run's test set; it is never cached.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import polars as pl

import usina
from usina import Resources, pipeline, step

# The steps import their helpers as ``examples.fraud.*``: make the repository root importable
# however this file was loaded (``usina run FILE``, a worker process, pytest).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.fraud import data as gen  # noqa: E402
from examples.fraud import features as feats  # noqa: E402
from examples.fraud import metrics as fm  # noqa: E402
from examples.fraud import model as fraud_model  # noqa: E402
from examples.fraud import split as splitting  # noqa: E402
from examples.fraud import validate as checks  # noqa: E402

MODEL_NAME = "fraud"


def content_hash(path: str) -> str:
    """The sha256 of a file, so that a changed source file is a changed step input (the path
    alone would let the cache serve yesterday's data)."""
    if not path:
        return ""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return "unreadable"  # ingest itself reports the missing file
    return digest.hexdigest()


@step(resources=Resources(cpu=1, memory="2Gi"))
def ingest(rows: int, seed: int, source: str, source_hash: str) -> pl.DataFrame:
    """Read ``source`` (Parquet or CSV) if given, else generate ``rows`` synthetic transactions.

    ``source_hash`` is not used here: it is the file's content hash, part of the cache key."""
    config = gen.GeneratorConfig(rows=rows, seed=seed)
    raw = checks.read(source) if source else gen.generate(config)
    usina.log_metric("rows", raw.height)
    return raw


@step
def validate(raw: pl.DataFrame) -> pl.DataFrame:
    """Schema and data-quality checks; fails listing every problem and the first bad rows."""
    clean = checks.validate(raw)
    usina.log_metric("rows", clean.height)
    return clean


@step(resources=Resources(cpu=1, memory="2Gi"))
def features(transactions: pl.DataFrame) -> pl.DataFrame:
    """Point-in-time velocity features per card and merchant."""
    table = feats.build(transactions)
    usina.log_metric("features", len(feats.FEATURES))
    return table


@step
def split(
    table: pl.DataFrame, train_frac: float, valid_frac: float, label_delay_days: float
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Train / validation / out-of-time test by timestamp, labelled as of the cutoff."""
    when = splitting.boundaries(
        table, train_frac=train_frac, valid_frac=valid_frac, label_delay_days=label_delay_days
    )
    train_set, valid_set, test_set = splitting.split(table, when)
    for name, part in (("train", train_set), ("valid", valid_set), ("test", test_set)):
        usina.log_metric(f"{name}_rows", part.height)
        usina.log_metric(f"{name}_fraud_rate", float(part["label"].mean() or 0.0))
    for key, value in when.to_json().items():
        usina.set_tag(key, value)
    return train_set, valid_set, test_set


@step(resources=Resources(cpu=1, memory="2Gi"))
def train(
    train_set: pl.DataFrame,
    valid_set: pl.DataFrame,
    learning_rate: float,
    num_leaves: int,
    max_rounds: int,
    min_child_samples: int,
    pos_weight: float | None,
) -> bytes:
    """LightGBM, early-stopped on the validation window; returns the model as text bytes."""
    hp = fraud_model.Hyperparameters(
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        max_rounds=max_rounds,
        min_child_samples=min_child_samples,
        pos_weight=pos_weight,
    )
    booster = fraud_model.train(train_set, valid_set, hp)
    usina.log_metric("best_iteration", booster.best_iteration)
    return fraud_model.to_bytes(booster)


@step
def evaluate(
    model: bytes, valid_set: pl.DataFrame, test_set: pl.DataFrame, friction: float
) -> dict:
    """Metrics on the out-of-time test, overall and per payment method."""
    booster = fraud_model.from_bytes(model)
    threshold = fm.best_threshold(
        valid_set["label"].to_numpy(),
        fraud_model.score(booster, valid_set),
        valid_set["amount"].to_numpy(),
        friction,
    )
    report = fm.report(
        test_set["label"].to_numpy(),
        fraud_model.score(booster, test_set),
        test_set["amount"].to_numpy(),
        test_set["payment_method"].to_numpy(),
        threshold=threshold,
        friction=friction,
    )
    usina.log_metrics(fm.flatten(report))
    return fm.jsonable(report)


@step(cache=False)
def register(
    model: bytes, test_set: pl.DataFrame, report: dict, model_name: str, min_improvement: float
) -> dict:
    """Register the model; promote it to ``champion`` only if it beats the current one. The
    features' and scores' distributions go with the version, so ``usina serve`` can measure
    drift against them."""
    from usina.monitoring.drift import DriftReference
    from usina.tracking.mlflow import log_drift_reference, register_model

    booster = fraud_model.from_bytes(model)
    features = fraud_model.frame(test_set)
    decision = register_model(
        booster,
        name=model_name,
        features=features,
        labels=test_set["label"].to_numpy(),
        metric=fm.pr_auc,
        metric_name="pr_auc",
        min_improvement=min_improvement,
        extra_metrics={f"test.{k}": v for k, v in report["overall"].items() if v is not None},
    )
    reference = DriftReference.from_training(
        {c: features[c].to_numpy(dtype=float) for c in features.columns},
        booster.predict(features),
    )
    log_drift_reference(reference.to_json(), run_id=decision.run_id)
    usina.log_metric("challenger_pr_auc", decision.challenger_score)
    if decision.champion_score is not None:
        usina.log_metric("champion_pr_auc", decision.champion_score)
    usina.log_metric("promoted", float(decision.promoted))
    usina.set_tag("decision", decision.reason)
    return decision.to_json()


@pipeline(tracking="mlflow")
def fraud(
    rows: int = gen.DEFAULT_ROWS,
    seed: int = gen.DEFAULT_SEED,
    source: str = "",
    train_frac: float = 0.70,
    valid_frac: float = 0.15,
    label_delay_days: float = 30.0,
    learning_rate: float = 0.05,
    num_leaves: int = 31,
    max_rounds: int = 400,
    min_child_samples: int = 50,
    pos_weight: float | None = None,
    friction: float = fm.DEFAULT_FRICTION,
    model_name: str = MODEL_NAME,
    min_improvement: float = 0.0,
) -> None:
    """Fraud scoring on payment transactions, from raw data to a gated model registry."""
    raw = ingest(rows, seed, source, content_hash(source))
    clean = validate(raw)
    table = features(clean)
    train_set, valid_set, test_set = split(table, train_frac, valid_frac, label_delay_days)
    model = train(
        train_set, valid_set, learning_rate, num_leaves, max_rounds, min_child_samples, pos_weight
    )
    report = evaluate(model, valid_set, test_set, friction)
    register(model, test_set, report, model_name, min_improvement)
