"""A PyTorch MLP for the fraud features, trained the same way on 1 process or a DDP gang.

``train_mlp(features, labels, config)`` takes a numpy array or a polars DataFrame of features
and a 0/1 label vector, and returns the trained model and its metrics. Inside a
``@step(distributed=usina.Torchrun(...))`` it trains with ``DistributedDataParallel``: every
step draws one *global* batch (the same on every rank, from the seed and the step number) and
each rank takes its contiguous slice, so the averaged gradient equals the single-process
gradient of the whole batch and the weights match one process to float rounding. It resumes
from ``usina.checkpoint`` when a checkpoint exists and saves one every
``config.checkpoint_every`` steps.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import usina


@dataclass(frozen=True, slots=True)
class MLPConfig:
    hidden: tuple[int, ...] = (64, 32)
    steps: int = 200  # optimizer steps (global batches)
    global_batch: int = 256  # rows per step across all ranks; divisible by the world size
    lr: float = 0.05
    momentum: float = 0.0
    pos_weight: float | None = None  # None: sqrt(negatives / positives), as the LightGBM model
    seed: int = 7
    checkpoint_every: int = 0  # steps between checkpoints; 0 = none
    keep: int = 2  # checkpoints kept
    step_delay: float = 0.0  # seconds slept per step (tests: make a run last long enough)
    progress_file: str | None = None  # appended one JSON line per step (tests read it)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def as_matrix(features: Any) -> np.ndarray:
    """float32 rows x features, NaN -> 0, from numpy or polars/pandas."""
    if hasattr(features, "to_numpy"):
        features = features.to_numpy()
    x = np.asarray(features, dtype=np.float32)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return (x - mean) / std, mean, std


def make_mlp(n_features: int, hidden: tuple[int, ...], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _in_step() -> bool:
    try:
        usina.current()
    except usina.UsinaError:
        return False
    return True


@dataclass
class TrainResult:
    model: nn.Module
    metrics: dict[str, float]
    start_step: int  # 0, or the checkpoint step this attempt resumed from
    mean: np.ndarray
    std: np.ndarray

    def weights(self) -> np.ndarray:
        """Every parameter, flattened and concatenated (to compare runs)."""
        return torch.cat([p.detach().flatten() for p in self.model.parameters()]).numpy()


def train_mlp(features: Any, labels: Any, config: MLPConfig | None = None) -> TrainResult:
    """Train the MLP; in a DDP gang, call it on every rank (after ``init_process_group``)."""
    cfg = config or MLPConfig()
    rank, world = _world()
    if cfg.global_batch % world:
        raise ValueError(
            f"global_batch={cfg.global_batch} must be divisible by the world size {world}"
        )
    x, mean, std = standardize(as_matrix(features))
    y = np.asarray(labels, dtype=np.float32).reshape(-1)
    positives = max(1.0, float(y.sum()))
    pos_weight = cfg.pos_weight or math.sqrt(max(1.0, (y.size - positives) / positives))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    model = make_mlp(x.shape[1], cfg.hidden, cfg.seed)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))

    start = 0
    checkpoints = cfg.checkpoint_every > 0 and _in_step()
    if checkpoints:
        found = usina.checkpoint.load_latest()
        if found is not None:
            state, start = found
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])

    local = cfg.global_batch // world
    loss = torch.tensor(0.0)
    for step in range(start, cfg.steps):
        # The same global batch on every rank: a generator seeded by (seed, step).
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        batch = torch.randint(0, x.shape[0], (cfg.global_batch,), generator=gen)
        mine = batch[rank * local : (rank + 1) * local]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt[mine]).squeeze(1), yt[mine])
        loss.backward()  # DDP: gradients are averaged over the ranks here
        opt.step()
        done = step + 1
        if cfg.progress_file:
            with open(cfg.progress_file, "a") as fh:
                attempt = usina.current().attempt if _in_step() else 0
                fh.write(
                    f'{{"rank": {rank}, "pid": {os.getpid()}, "attempt": {attempt}, '
                    f'"step": {done}, "start": {start}}}\n'
                )
        if checkpoints and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            usina.checkpoint.save(
                {"model": model.state_dict(), "opt": opt.state_dict()}, done, keep=cfg.keep
            )
        if cfg.step_delay:
            time.sleep(cfg.step_delay)

    metrics = evaluate(model, x, y)
    metrics["final_loss"] = float(loss.detach())
    metrics["start_step"] = float(start)
    metrics["world_size"] = float(world)
    return TrainResult(model, metrics, start, mean, std)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return torch.sigmoid(model(torch.from_numpy(x)).squeeze(1)).numpy()


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """ROC AUC (rank statistic) and average precision of the model on (x, y)."""
    scores = predict(model, x)
    return {"auc": _auc(scores, y), "average_precision": _average_precision(scores, y)}


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    pos, neg = int(y.sum()), int(y.size - y.sum())
    if not pos or not neg:
        return float("nan")
    order = scores.argsort()
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(1, scores.size + 1)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = y[order]
    if not hits.sum():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float((precision * hits).sum() / hits.sum())


def synthetic(
    rows: int = 4000, n_features: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fraud-like synthetic data (about 3% positives) for when the real features are absent."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n_features)).astype(np.float32)
    w = rng.normal(size=n_features)
    logits = x @ w - 4.0 + 0.5 * x[:, 0] * x[:, 1]
    y = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return x, y


class Scorer(nn.Module):
    """The trained MLP with its standardization: raw feature rows in, one fraud logit out.

    This is what is registered in MLflow, so a served model needs no preprocessing."""

    def __init__(self, model: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nan_to_num(x.float())
        return self.model((x - self.mean) / self.std)


def to_bytes(result: TrainResult, hidden: tuple[int, ...]) -> bytes:
    """The trained weights and standardization, for passing between steps."""
    import io

    buf = io.BytesIO()
    state = {
        "model": result.model.state_dict(),
        "mean": result.mean,
        "std": result.std,
        "hidden": list(hidden),
    }
    torch.save(state, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> Scorer:
    """The ``Scorer`` saved by ``to_bytes``, in eval mode."""
    import io

    state = torch.load(io.BytesIO(data), weights_only=False)
    n_features = int(np.asarray(state["mean"]).shape[-1])
    model = make_mlp(n_features, tuple(state["hidden"]), seed=0)
    model.load_state_dict(state["model"])
    scorer = Scorer(model, state["mean"], state["std"])
    scorer.eval()
    return scorer
