"""Gradient sync is real: DDP over 2 and 4 gloo ranks ends with the weights of one process.

The three trainings run as steps of one pipeline through the real CLI, engine and local
backend (the 2- and 4-rank ones as ``Torchrun`` gangs: 2 nodes x 1 and 2 nodes x 2), and a
fourth step receives the three rank-0 outputs and compares them. Every rank takes its slice
of the same global batch, so averaged gradients equal the full-batch gradient; what differs
is only the order of float additions. Tolerance: 1e-5 absolute on every weight (float32,
60 SGD steps; measured differences are ~1e-7), while the weights move by far more than that.
"""

from __future__ import annotations

import json

import pytest

from tests.distributed.support import usina_with_model

TOLERANCE = 1e-5

PIPELINE = """
import json, os
import numpy as np
from usina import Torchrun, pipeline, step
from torch_model import MLPConfig, make_mlp, synthetic, train_mlp

CONFIG = MLPConfig(steps=60, global_batch=64, lr=0.1, hidden=(16, 8), seed=3)

def _train(gang: bool) -> np.ndarray:
    import torch.distributed as dist
    if gang:
        dist.init_process_group(os.environ["USINA_DIST_BACKEND"])
    x, y = synthetic(2000, seed=1)
    result = train_mlp(x, y, CONFIG)
    rank = dist.get_rank() if gang else 0
    world = dist.get_world_size() if gang else 1
    if gang:
        dist.destroy_process_group()
    with open(f"ranks-{world}.txt", "a") as fh:
        fh.write(f"{rank}\\n")
    return result.weights()

@step
def single() -> np.ndarray:
    return _train(False)

@step(distributed=Torchrun(nodes=2, procs_per_node=1))
def ddp2() -> np.ndarray:
    return _train(True)

@step(distributed=Torchrun(nodes=2, procs_per_node=2))
def ddp4() -> np.ndarray:
    return _train(True)

@step
def compare(one: np.ndarray, two: np.ndarray, four: np.ndarray) -> dict:
    import torch
    fresh = make_mlp(12, CONFIG.hidden, CONFIG.seed)
    start = torch.cat([p.detach().flatten() for p in fresh.parameters()]).numpy()
    report = {
        "size": int(one.size),
        "moved": float(np.abs(one - start).max()),
        "diff2": float(np.abs(one - two).max()),
        "diff4": float(np.abs(one - four).max()),
    }
    with open("compare.json", "w") as fh:
        json.dump(report, fh)
    return report

@pipeline
def sync():
    compare(single(), ddp2(), ddp4())
"""


@pytest.fixture
def usina(tmp_path):
    return usina_with_model(tmp_path)


def test_ddp_on_2_and_4_gloo_ranks_matches_one_process(usina, tmp_path):
    usina.write("p.py", PIPELINE)
    res = usina("run", "p.py", "--output", "json", timeout=150)
    assert res.code == 0, res.out + res.err
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["size"] == 12 * 16 + 16 + 16 * 8 + 8 + 8 + 1
    assert report["moved"] > 100 * TOLERANCE  # training really changed the weights
    assert report["diff2"] <= TOLERANCE, report
    assert report["diff4"] <= TOLERANCE, report
    # Each rank of each gang ran the function in its own process; only rank 0's value was used.
    assert sorted((tmp_path / "ranks-2.txt").read_text().split()) == ["0", "1"]
    assert sorted((tmp_path / "ranks-4.txt").read_text().split()) == ["0", "1", "2", "3"]
    shown = usina("runs", "show", res.json()["id"], "--output", "json").json()
    assert {s["node"]: s["attempts"] for s in shown["steps"]} == {
        "single": 1,
        "ddp2": 1,
        "ddp4": 1,
        "compare": 1,
    }
