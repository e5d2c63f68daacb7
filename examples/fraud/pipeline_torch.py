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


def _fraud_features(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from examples.fraud import data as gen
        from examples.fraud import features as feats
    except ImportError:
        return None
    table = feats.build(gen.generate(gen.GeneratorConfig(rows=rows, seed=seed)))
    return tm.as_matrix(table.select(feats.FEATURES)), table["label"].to_numpy()


@step(resources=Resources(cpu=1, memory="2Gi"))
def data(rows: int, seed: int, synthetic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels: the fraud example's, or synthetic ones."""
    found = None if synthetic else _fraud_features(rows, seed)
    x, y = found if found is not None else tm.synthetic(rows, seed=seed)
    usina.set_tag("features", "synthetic" if found is None else "fraud")
    usina.log_metric("rows", float(len(y)))
    return x.astype(np.float32), y.astype(np.float32)


def _init() -> None:
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(os.environ.get("USINA_DIST_BACKEND", "gloo"))


# Two simulated nodes of two ranks each; per-node resources. Disruptions (a lost rank) retry.
@step(
    resources=Resources(cpu=2, memory="2Gi"),
    distributed=Torchrun(nodes=2, procs_per_node=2),
    retry=Retry(max_disruptions=5, backoff=0.5),
)
def train_mlp(x: np.ndarray, y: np.ndarray, steps: int, checkpoint_every: int) -> dict:
    """DDP training of the MLP on every rank; rank 0 returns the metrics."""
    import torch.distributed as dist

    _init()
    try:
        result = tm.train_mlp(
            x, y, tm.MLPConfig(steps=steps, checkpoint_every=checkpoint_every, global_batch=256)
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    usina.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
    return result.metrics


@pipeline
def fraud_mlp(
    rows: int = 4000,
    seed: int = 0,
    synthetic: bool = False,
    steps: int = 200,
    checkpoint_every: int = 50,
):
    x, y = data(rows, seed, synthetic)
    train_mlp(x, y, steps=steps, checkpoint_every=checkpoint_every)
