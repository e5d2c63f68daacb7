"""The zygote forks each attempt's process ahead of need (a spare waiting for its attempt), so
the fork and the pages an attempt first copies are paid while the previous step runs. The spare
must never outlive the zygote, and a spare that died waiting must not lose an attempt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.distributed.support import wait_for


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Zygote:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "usina.runtime.zygote", "--artifacts", (tmp / "a").as_uri()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.read()["op"] == "ready"

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the zygote ended"
        return dict(json.loads(line))

    def spawn(self, attempt: str, task: dict[str, Any] | None = None) -> Path:
        folder = self.tmp / attempt
        folder.mkdir()
        assert self.proc.stdin is not None
        message: dict[str, Any] = {"op": "spawn", "attempt": attempt, "dir": str(folder), "env": {}}
        if task is not None:
            message["task"] = task
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        return folder

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_the_spare_ends_with_the_zygote(tmp_path: Path) -> None:
    zygote = Zygote(tmp_path)
    try:
        [spare] = wait_for(lambda: _children(zygote.proc.pid), 10, "the spare child")
        assert _alive(spare)
    finally:
        zygote.close()
    wait_for(lambda: not _alive(spare), 10, "the spare to end after the zygote")


def test_an_attempt_is_run_by_a_fresh_child_when_the_spare_died(tmp_path: Path) -> None:
    zygote = Zygote(tmp_path)
    try:
        [spare] = wait_for(lambda: _children(zygote.proc.pid), 10, "the spare child")
        os.kill(spare, signal.SIGKILL)
        wait_for(lambda: not _alive(spare), 10, "the spare to die")
        folder = zygote.spawn("a-1")  # no task record: the child runs and reports that
        spawned = zygote.read()
        assert spawned["op"] == "spawned"
        assert spawned["attempt"] == "a-1"
        assert spawned["pid"] != spare
        ended = zygote.read()
        assert ended == {
            "op": "exit", "attempt": "a-1", "pid": spawned["pid"], "code": 44, "signal": None,
        }  # fmt: skip
        assert "no task record for attempt a-1" in (folder / "output.log").read_text()
        # and a new spare waits for the next attempt
        [fresh] = wait_for(lambda: _children(zygote.proc.pid), 10, "a new spare")
        assert fresh not in (spare, spawned["pid"])
    finally:
        zygote.close()


def test_a_task_sent_inline_runs_without_its_record(tmp_path: Path) -> None:
    """The local backend sends the task with the spawn; the engine writes the task record
    only after the launch, so the child must not need it."""
    (tmp_path / "steps.py").write_text("def double(x):\n    return 2 * x\n")
    task = {
        "attempt_id": "r-double-1",
        "run_id": "r",
        "pipeline": "p",
        "number": 1,
        "node": {
            "id": "double", "step": "double", "module": "steps", "qualname": "double",
            "outputs": 1, "pickle": False,
        },
        "resources": {"cpu": 1, "memory": "1Gi"},
        "inputs": {"x": {"const": 21}},
        "params": {},
        "artifacts_url": (tmp_path / "a").as_uri(),
        "sys_path": [str(tmp_path)],
    }  # fmt: skip
    zygote = Zygote(tmp_path)
    try:
        zygote.spawn("r-double-1", task)
        assert zygote.read()["op"] == "spawned"
        assert zygote.read()["code"] == 0
    finally:
        zygote.close()
    from usina.stores.artifacts import FsspecArtifactStore

    store = FsspecArtifactStore((tmp_path / "a").as_uri())
    assert store.read_record("attempts/r-double-1/task.json") is None
    result = json.loads(store.read_record("attempts/r-double-1/result.json") or b"{}")
    [output] = result["outputs"]
    assert json.loads(store.get_bytes(output["digest"])) == 42
