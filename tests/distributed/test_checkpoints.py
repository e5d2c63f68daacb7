"""``usina.checkpoint``: durable, atomic, the newest ``keep`` kept; a torn write is never loaded."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import usina
from usina import checkpoint
from usina.errors import DefinitionError, StateError
from usina.runtime.checkpoints import MANIFEST, StoreCheckpointer, checkpoint_url
from usina.runtime.gang import rank_env
from usina.sdk.context import StepContext, set_current


@pytest.fixture
def folder(tmp_path):
    return checkpoint_url(tmp_path.as_uri(), "run-1", "train")


@pytest.fixture
def in_step(folder):
    def enter(rank: int = 0) -> StepContext:
        ctx = StepContext(
            run_id="run-1",
            step="train",
            attempt=1,
            attempt_id="run-1-train-1",
            pipeline="p",
            checkpoint_dir=folder,
            checkpointer=StoreCheckpointer(folder, rank=rank),
            rank=rank,
        )
        set_current(ctx)
        return ctx

    yield enter
    set_current(None)


def _files(path: str) -> list[str]:
    return sorted(os.listdir(path.removeprefix("file://")))


def test_save_then_load_latest_round_trips_and_keeps_the_newest(in_step, folder):
    in_step()
    assert checkpoint.load_latest() is None
    assert checkpoint.latest_step() is None
    for step in (5, 10, 15, 20):
        assert checkpoint.save({"w": [step] * 3, "note": "x"}, step, keep=2)
    state, step = checkpoint.load_latest()
    assert (state, step) == ({"w": [20, 20, 20], "note": "x"}, 20)
    assert checkpoint.latest_step() == 20
    manifest = json.loads(Path(folder.removeprefix("file://"), MANIFEST).read_text())
    assert [e["step"] for e in manifest["checkpoints"]] == [15, 20]
    data = [f for f in _files(folder) if f != MANIFEST]
    assert len(data) == 2
    assert all(f.endswith(".pkl") for f in data)


def test_only_rank_0_writes_unless_every_rank_is_asked_to(in_step, folder):
    in_step(rank=1)
    assert checkpoint.save({"w": 1}, 1) is False
    assert checkpoint.load_latest() is None
    assert checkpoint.save({"shard": 1}, 1, all_ranks=True) is True
    assert checkpoint.load_latest(all_ranks=True) == ({"shard": 1}, 1)
    in_step(rank=0)
    assert checkpoint.load_latest(all_ranks=True) is None  # rank 0's own shard folder
    assert checkpoint.save({"w": 0}, 1)
    in_step(rank=1)
    assert checkpoint.load_latest() == ({"w": 0}, 1)  # every rank reads rank 0's


def test_checkpoint_misuse_is_refused_clearly(in_step):
    with pytest.raises(StateError, match="only available inside a running step"):
        checkpoint.save({}, 1)
    in_step()
    with pytest.raises(ValueError, match="whole number"):
        checkpoint.save({}, -1)
    with pytest.raises(ValueError, match="keep"):
        checkpoint.save({}, 1, keep=0)


def test_torchrun_is_validated_and_recorded_in_the_plan():
    with pytest.raises(DefinitionError, match="Torchrun nodes=0"):

        @usina.step(distributed=usina.Torchrun(nodes=0))
        def bad() -> None: ...

    spec = usina.Torchrun(nodes=4, procs_per_node=8)
    assert spec.world_size == 32
    assert usina.Torchrun.from_json(spec.to_json()) == spec


def test_each_simulated_node_sees_its_own_gpus():
    spec = usina.Torchrun(nodes=2, procs_per_node=2)
    envs = [rank_env(spec, r, 29400, "a-1", ["0", "1", "2", "3"]) for r in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "0,1", "2,3", "2,3"]
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1", "0", "1"]
    assert [e["GROUP_RANK"] for e in envs] == ["0", "0", "1", "1"]
    assert {e["USINA_DIST_BACKEND"] for e in envs} == {"nccl"}
    assert rank_env(spec, 3, 29400, "a-1", [])["USINA_DIST_BACKEND"] == "gloo"


WRITER = """
import sys
import torch
from usina import checkpoint
from usina.runtime.checkpoints import StoreCheckpointer
from usina.sdk.context import StepContext, set_current

url = sys.argv[1]
if len(sys.argv) > 2:  # stall inside the save of checkpoint 3, after its data file is written
    import os, time
    real_fsync = os.fsync
    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(name).startswith(".tmp-") and step == 3:
            print("stalled", flush=True)
            time.sleep(3600)
        return real_fsync(fd)
    os.fsync = fsync
set_current(StepContext("run-1", "train", 1, "a", "p", checkpointer=StoreCheckpointer(url)))
step = 0
while True:
    step += 1
    checkpoint.save({"w": torch.full((4_000_000,), float(step)), "step": step}, step, keep=2)
    print(step, flush=True)
"""


def test_a_checkpoint_killed_while_being_written_is_never_loaded(tmp_path, folder):
    """A writer saving 16 MB torch checkpoints back to back is SIGKILLed at random moments
    (it is always in the middle of a save); the newest loadable checkpoint is always a whole
    one, and it is the one the manifest names."""
    import torch

    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(6)
    torn = 0
    last = 0
    for round_ in range(3):
        stall = ["stall"] if round_ == 2 else []  # one kill certainly lands inside a write
        proc = subprocess.Popen(
            [sys.executable, str(script), folder, *stall], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            seen = [int(proc.stdout.readline()) for _ in range(2)]
            if stall:
                assert proc.stdout.readline().strip() == "stalled"
            else:
                time.sleep(rng.uniform(0.0, 0.15))
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert seen == [last + 1, last + 2]  # each writer resumes counting at 1: new files
        last = 0
        torn += any(f.startswith(".tmp-") for f in _files(folder))
        loaded = StoreCheckpointer(folder).load_latest()
        assert loaded is not None
        state, step = loaded
        assert state["step"] == step
        assert torch.equal(state["w"], torch.full((4_000_000,), float(step)))
        assert step >= seen[-1]
    assert torn >= 1  # at least one kill landed inside a write and left its temp file
