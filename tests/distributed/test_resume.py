"""A rank SIGKILLed mid-training: the gang restarts and resumes from the last checkpoint.

Through the real CLI, engine and local backend: a 2-node gang trains 60 steps with a
checkpoint every 5. When rank 1 has passed step 17 the test SIGKILLs it. The attempt must be
classified (``node_lost``: a rank killed from outside), the whole gang must restart as
attempt 2 (new processes for every rank), resume from the newest complete checkpoint, finish
at step 60, and redo at most one checkpoint interval of work, read from the ranks' step
counters.
"""

from __future__ import annotations

import signal

import pytest

from tests.distributed.support import kill, read_progress, usina_with_model, wait_for

EVERY = 5
STEPS = 60
KILL_AFTER = 17

PIPELINE = """
import os
import numpy as np
from usina import Retry, Torchrun, pipeline, step
from torch_model import MLPConfig, synthetic, train_mlp

@step(distributed=Torchrun(nodes=2, procs_per_node=1), retry=Retry(max_disruptions=2, backoff=0.1))
def train(steps: int, every: int, progress: str) -> dict:
    import torch.distributed as dist
    dist.init_process_group(os.environ["USINA_DIST_BACKEND"])
    x, y = synthetic(2000, seed=1)
    cfg = MLPConfig(
        steps=steps, global_batch=64, checkpoint_every=every, step_delay=0.05,
        progress_file=progress, hidden=(16, 8),
    )
    result = train_mlp(x, y, cfg)
    dist.destroy_process_group()
    return {"start_step": result.start_step, "auc": result.metrics["auc"]}

@pipeline
def resumable(steps: int = 60, every: int = 5, progress: str = "progress.jsonl"):
    train(steps, every, progress)
"""


@pytest.fixture
def usina(tmp_path):
    return usina_with_model(tmp_path)


def test_sigkilled_rank_restarts_the_gang_from_the_last_checkpoint(usina, tmp_path):
    progress = tmp_path / "progress.jsonl"
    usina.write("p.py", PIPELINE)
    proc = usina.popen(
        "run", "p.py", "-p", f"steps={STEPS}", "-p", f"every={EVERY}", "-p", f"progress={progress}"
    )
    try:
        victim = wait_for(
            lambda: next(
                (
                    r
                    for r in read_progress(progress)
                    if r["rank"] == 1 and r["attempt"] == 1 and r["step"] >= KILL_AFTER
                ),
                None,
            ),
            timeout=90,
            what="rank 1 of attempt 1 to pass step 17",
        )
        kill(victim["pid"], signal.SIGKILL)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            kill(proc.pid)
            proc.wait()
    assert code == 0, (tmp_path / "popen.log").read_text()

    run = usina.last_run()
    assert run["state"] == "succeeded"
    shown = usina("runs", "show", run["id"], "--output", "json").json()
    attempts = [a for a in shown["attempts"] if a["node"] == "train"]
    assert [a["failure_class"] for a in attempts] == ["node_lost", None]
    assert attempts[0]["reason"] == "RankLost"
    assert (
        f"rank 1 of 2 (node 1, pid {victim['pid']}) was killed by SIGKILL"
        in (attempts[0]["message"])
    )

    rows = read_progress(progress)
    first = [r for r in rows if r["attempt"] == 1]
    second = [r for r in rows if r["attempt"] == 2]
    # The whole gang restarted: attempt 2 has both ranks, all in new processes.
    assert {r["rank"] for r in second} == {0, 1}
    assert not {r["pid"] for r in first} & {r["pid"] for r in second}
    # It resumed from the newest complete checkpoint before the kill...
    reached = max(r["step"] for r in first)
    resumed = {r["start"] for r in second}
    assert len(resumed) == 1
    [start] = resumed
    assert start % EVERY == 0
    assert start >= KILL_AFTER - KILL_AFTER % EVERY
    # ...redid at most one checkpoint interval of work, and finished at the target step.
    assert reached - start <= EVERY, (reached, start)
    assert min(r["step"] for r in second) == start + 1
    assert max(r["step"] for r in second) == STEPS
    for rank in (0, 1):
        steps = sorted(r["step"] for r in second if r["rank"] == rank)
        assert steps == list(range(start + 1, STEPS + 1))
    [train] = [s for s in shown["steps"] if s["node"] == "train"]
    assert train["attempts"] == 2
