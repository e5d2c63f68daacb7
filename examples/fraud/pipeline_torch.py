"""The fraud MLP trained as a distributed step: ``usina run examples/fraud/pipeline_torch.py``.

``data`` makes the features (the fraud example's own when ``examples.fraud.features`` is
present, else synthetic fraud-like data), and ``train_mlp`` trains the PyTorch MLP of
``torch_model.py`` on a gang of ``nodes x procs`` ranks (gloo on CPU, NCCL on GPUs), with a
checkpoint every ``checkpoint_every`` steps so a preempted or lost gang resumes where it was.
Only rank 0's return value (the metrics) is the step's output.

    usina run examples/fraud/pipeline_torch.py -p steps=300 -p synthetic=true
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

import usina
from usina import Resources, Retry, Torchrun, pipeline, step

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from examples.fraud import torch_model as tm  # noqa: E402


def _fraud_features(
    rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """The fraud example's features and the same time split as the LightGBM model: train on
    train + validation, test on the out-of-time test set, labels as of the split's cutoff."""
    try:
        from examples.fraud import data as gen
        from examples.fraud import features as feats
        from examples.fraud import split as splitting
    except ImportError:
        return None
    table = feats.build(gen.generate(gen.GeneratorConfig(rows=rows, seed=seed)))
    train, valid, test = splitting.split(table, splitting.boundaries(table))
    fit = train.vstack(valid.select(train.columns))
    x, x_test = (tm.as_matrix(t.select(feats.FEATURES)) for t in (fit, test))
    y, y_test = (t["label"].to_numpy() for t in (fit, test))
    return x, y, x_test, y_test, list(feats.FEATURES)


@step(resources=Resources(cpu=1, memory="2Gi"))
def data(
    rows: int, seed: int, synthetic: bool, test_frac: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """Features and labels split by time, and the feature names: the fraud example's (split as
    the LightGBM model's), or synthetic ones (the last ``test_frac`` is the test set)."""
    found = None if synthetic else _fraud_features(rows, seed)
    if found is None:
        x, y = tm.synthetic(rows, seed=seed)
        cut = int(len(y) * (1.0 - test_frac))
        names = [f"f{i}" for i in range(x.shape[1])]
        x, y, x_test, y_test = x[:cut], y[:cut], x[cut:], y[cut:]
    else:
        x, y, x_test, y_test, names = found
    usina.set_tag("features", "synthetic" if found is None else "fraud")
    usina.log_metric("rows", float(len(y) + len(y_test)))
    f32 = np.float32
    return x.astype(f32), y.astype(f32), x_test.astype(f32), y_test.astype(f32), names


def _init() -> None:
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(os.environ.get("USINA_DIST_BACKEND", "gloo"))


HIDDEN = (64, 32)


# Two simulated nodes of two ranks each; per-node resources. Disruptions (a lost rank) retry.
@step(
    resources=Resources(cpu=2, memory="2Gi"),
    distributed=Torchrun(nodes=2, procs_per_node=2),
    retry=Retry(max_disruptions=5, backoff=0.5),
)
def train_mlp(
    x: np.ndarray, y: np.ndarray, steps: int, checkpoint_every: int
) -> tuple[dict, bytes]:
    """DDP training of the MLP on every rank; rank 0 returns the metrics and the model."""
    import torch.distributed as dist

    _init()
    try:
        result = tm.train_mlp(
            x,
            y,
            tm.MLPConfig(
                hidden=HIDDEN, steps=steps, checkpoint_every=checkpoint_every, global_batch=256
            ),
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    usina.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
    return result.metrics, tm.to_bytes(result, HIDDEN)


@step(cache=False)
def register(
    model: bytes, x_test: np.ndarray, y_test: np.ndarray, names: list, model_name: str
) -> dict:
    """Score the out-of-time test set, log the MLP to MLflow and gate ``champion`` on PR-AUC."""
    import pandas as pd

    from usina.tracking.mlflow import register_model

    scorer = tm.from_bytes(model)
    test = tm.evaluate(scorer, x_test, y_test)
    usina.log_metrics({f"test_{k}": v for k, v in test.items() if np.isfinite(v)})
    decision = register_model(
        scorer,
        name=model_name,
        features=pd.DataFrame(x_test.astype(np.float64), columns=names),
        labels=y_test,
        metric=lambda labels, scores: tm._average_precision(np.asarray(scores), labels),
        metric_name="pr_auc",
        flavor="pytorch",
    )
    usina.log_metric("promoted", float(decision.promoted))
    return decision.to_json()


@pipeline(tracking="mlflow", experiment="fraud")
def fraud_mlp(
    rows: int = 20000,
    seed: int = 0,
    synthetic: bool = False,
    steps: int = 200,
    checkpoint_every: int = 50,
    test_frac: float = 0.2,
    model_name: str = "fraud-mlp",
):
    x, y, x_test, y_test, names = data(rows, seed, synthetic, test_frac)
    _metrics, model = train_mlp(x, y, steps=steps, checkpoint_every=checkpoint_every)
    register(model, x_test, y_test, names, model_name)
