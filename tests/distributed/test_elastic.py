"""Elastic gangs locally: ``Torchrun(nodes=(MIN, MAX))`` survives losing a node.

Through the real CLI, engine and local backend, with gloo: a 4-node elastic gang (at least 2)
counts steps with an all-reduce each, checkpointing every 5. The test SIGKILLs rank 3 (node 3)
once it has passed step 12. The launcher must restart the remaining 3 nodes in place (the same
attempt, as torchrun's elastic agent does), the ranks must see ``WORLD_SIZE=3``, resume from
the newest checkpoint and finish; the step's result says the world it finished with. With no
restarts allowed, the same loss ends the attempt as ``node_lost`` and the engine's retry starts
the whole gang again.
"""

from __future__ import annotations

import signal

import pytest

from tests.distributed.support import kill, read_progress, wait_for
from tests.integration.cli_helpers import Usina
from usina import Client

STEPS = 30
KILL_AFTER = 12

PIPELINE = """
import json, os, time
from usina import Retry, Torchrun, checkpoint, pipeline, step

@step(distributed=Torchrun(nodes=(2, 4), max_restarts=MAX_RESTARTS),
      retry=Retry(max_disruptions=2, backoff=0.1))
def train(steps: int, progress: str) -> dict:
    import torch
    import torch.distributed as dist
    dist.init_process_group(os.environ["USINA_DIST_BACKEND"])
    rank, world = dist.get_rank(), dist.get_world_size()
    start, total = 0, 0.0
    found = checkpoint.load_latest()
    if found is not None:
        state, start = found
        total = state["total"]
    for i in range(start, steps):
        seen = torch.ones(1)
        dist.all_reduce(seen)
        assert int(seen.item()) == world
        total += 1.0
        with open(progress, "a") as fh:
            fh.write(json.dumps({
                "rank": rank, "world": world, "pid": os.getpid(), "step": i + 1,
                "start": start, "restart": int(os.environ["TORCHELASTIC_RESTART_COUNT"]),
            }) + "\\n")
        if (i + 1) % 5 == 0 and i + 1 < steps:
            checkpoint.save({"total": total}, i + 1)
        time.sleep(0.05)
    dist.destroy_process_group()
    return {"world": world, "start": start, "total": total}

@pipeline
def elastic(steps: int = 30, progress: str = "progress.jsonl"):
    train(steps, progress)
"""


@pytest.fixture
def usina(tmp_path):
    return Usina(tmp_path)  # the step needs no model file beside it


def _kill_rank_3(usina, progress, max_restarts: int):
    usina.write("p.py", PIPELINE.replace("MAX_RESTARTS", str(max_restarts)))
    proc = usina.popen("run", "p.py", "-p", f"steps={STEPS}", "-p", f"progress={progress}")
    try:
        victim = wait_for(
            lambda: next(
                (r for r in read_progress(progress) if r["rank"] == 3 and r["step"] >= KILL_AFTER),
                None,
            ),
            timeout=120,
            what="rank 3 to pass step 12",
        )
        kill(victim["pid"], signal.SIGKILL)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            kill(proc.pid)
            proc.wait()
    return code, victim


def test_an_elastic_gang_loses_a_node_and_finishes_smaller_from_its_checkpoint(usina, tmp_path):
    progress = tmp_path / "progress.jsonl"
    code, victim = _kill_rank_3(usina, progress, max_restarts=3)
    log = (tmp_path / "popen.log").read_text()
    assert code == 0, log
    run = usina.last_run()
    assert run["state"] == "succeeded"
    shown = usina("runs", "show", run["id"], "--output", "json").json()
    # One attempt: the launcher restarted the gang in place, the engine saw no failure.
    attempts = [a for a in shown["attempts"] if a["node"] == "train"]
    assert [a["failure_class"] for a in attempts] == [None]
    logs = usina("runs", "logs", run["id"], "train").out
    assert "elastic gang: node(s) [3] lost (rank 3 was killed)" in logs
    assert "restarting 3 of 4 node(s) in place" in logs

    rows = read_progress(progress)
    before = [r for r in rows if r["restart"] == 0]
    after = [r for r in rows if r["restart"] == 1]
    assert {r["world"] for r in before} == {4}
    assert {r["world"] for r in after} == {3}
    assert {r["rank"] for r in after} == {0, 1, 2}
    assert not {r["pid"] for r in before} & {r["pid"] for r in after}  # new processes
    # Resumed from the newest checkpoint the 4-node gang wrote before the loss.
    [start] = {r["start"] for r in after}
    assert start % 5 == 0
    assert KILL_AFTER - KILL_AFTER % 5 <= start <= max(r["step"] for r in before)
    for rank in (0, 1, 2):
        assert sorted(r["step"] for r in after if r["rank"] == rank) == list(
            range(start + 1, STEPS + 1)
        )
    # The step's code saw the world it got, and the count carried over from the checkpoint.
    with Client(usina.env["USINA_HOME"]) as client:
        result = client.load(run["id"], "train")
    assert result == {"world": 3, "start": start, "total": float(STEPS)}


def test_without_restarts_left_a_lost_node_fails_the_attempt_and_the_gang_starts_again(
    usina, tmp_path
):
    progress = tmp_path / "progress.jsonl"
    code, victim = _kill_rank_3(usina, progress, max_restarts=0)
    assert code == 0, (tmp_path / "popen.log").read_text()
    run = usina.last_run()
    shown = usina("runs", "show", run["id"], "--output", "json").json()
    attempts = [a for a in shown["attempts"] if a["node"] == "train"]
    assert [a["failure_class"] for a in attempts] == ["node_lost", None]
    assert (
        f"rank 3 of 4 (node 3, pid {victim['pid']}) was killed by SIGKILL"
        in (attempts[0]["message"])
    )
    rows = read_progress(progress)
    assert {r["restart"] for r in rows} == {0}
    # The next attempt got the whole gang again (the engine restarts with every node asked).
    last_pids = {r["pid"] for r in rows if r["step"] == STEPS}
    assert len(last_pids) == 4
