"""Every attempt's whole process tree ends with it (issue #14, finding 4): a grandchild that
ignores SIGTERM, in the attempt's process group or in a session of its own, is gone after a
cancel, after a timeout, and after the step's main process exits normally."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from usina.backends.local import LocalBackend
from usina.engine.ports import Task, TaskState, task_key
from usina.sdk.resources import Resources
from usina.stores.artifacts import FsspecArtifactStore

ROOT = Path(__file__).resolve().parents[2]
STEPS = Path(__file__).with_name("tree_steps.py")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[tuple[LocalBackend, FsspecArtifactStore]]:
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    made = LocalBackend(str(tmp_path / "attempts"), store, kill_grace=1.0)
    try:
        yield made, store
    finally:
        made.close()


def _task(
    store: FsspecArtifactStore, name: str, inputs: dict[str, str], timeout: float | None
) -> Task:
    node = {
        "id": "leaky",
        "step": "leaky",
        "module": "tests.integration.tree_steps",
        "qualname": "leaky",
        "file": str(STEPS),
        "inputs": {k: {"const": v} for k, v in inputs.items()},
        "upstream": [],
        "outputs": 1,
        "resources": {"cpu": 1, "memory": "1Gi", "gpus": 0},
        "retry": {},
        "timeout": timeout,
        "cache": False,
        "cache_version": None,
        "pickle": False,
        "env": [],
        "code_hash": "x",
        "distributed": None,
    }
    task = Task(
        attempt_id=f"run-leaky-{name}",
        run_id="run",
        pipeline="tree",
        node=node,
        number=1,
        resources=Resources(cpu=1, memory="1Gi"),
        inputs={k: {"const": v} for k, v in inputs.items()},
        artifacts_url=store.url,
        params={},
        sys_path=(str(ROOT),),
        timeout=timeout,
    )
    store.write_record(task_key(task.attempt_id), json.dumps(task.to_json()).encode())
    return task


def _wait(backend: LocalBackend, attempt: str, states: set[TaskState]) -> TaskState:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = backend.observe([attempt])[attempt].state
        if state in states:
            return state
        backend.wait(0.05)
    raise AssertionError(f"{attempt} never reached {states}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_pid_file(path: Path) -> int:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, "the step never started its grandchild"
        time.sleep(0.05)
    return int(path.read_text())


@pytest.mark.parametrize("how", ["group", "setsid"])
@pytest.mark.parametrize("ending", ["cancel", "timeout", "exit"])
def test_no_process_outlives_its_attempt(
    backend: tuple[LocalBackend, FsspecArtifactStore], tmp_path: Path, how: str, ending: str
) -> None:
    local, store = backend
    pid_file = tmp_path / f"{ending}-{how}.pid"
    then = "exit" if ending == "exit" else "sleep"
    timeout = 3.0 if ending == "timeout" else None
    task = _task(
        store, f"{ending}-{how}", {"pid_file": str(pid_file), "how": how, "then": then}, timeout
    )
    local.launch(task)
    grandchild = _wait_pid_file(pid_file)
    if ending != "exit":  # with "exit" the attempt may be over (and swept) already
        assert _alive(grandchild)
    if ending == "cancel":
        _wait(local, task.attempt_id, {TaskState.RUNNING})
        local.cancel(task.attempt_id)
    final = _wait(local, task.attempt_id, {TaskState.SUCCEEDED, TaskState.FAILED})
    assert final is (TaskState.SUCCEEDED if ending == "exit" else TaskState.FAILED)
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(grandchild), f"grandchild {grandchild} outlived attempt ({ending})"
    finally:
        if _alive(grandchild):
            os.kill(grandchild, 9)


def test_an_adopted_attempt_takes_its_tree_with_it(tmp_path: Path) -> None:
    """The engine restarted while the attempt ran: the new backend adopts it, and cancelling
    it still ends the grandchild."""
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    first = LocalBackend(str(tmp_path / "attempts"), store, kill_grace=1.0)
    pid_file = tmp_path / "adopted.pid"
    task = _task(
        store, "adopted", {"pid_file": str(pid_file), "how": "group", "then": "sleep"}, None
    )
    first.launch(task)
    grandchild = _wait_pid_file(pid_file)
    _wait(first, task.attempt_id, {TaskState.RUNNING})
    first.close()  # the engine went away; the attempt lives on
    assert _alive(grandchild)
    second = LocalBackend(str(tmp_path / "attempts"), store, kill_grace=1.0)
    try:
        assert second.observe([task.attempt_id])[task.attempt_id].state is TaskState.RUNNING
        second.cancel(task.attempt_id)
        assert _wait(second, task.attempt_id, {TaskState.FAILED, TaskState.SUCCEEDED}) is (
            TaskState.FAILED
        )
        deadline = time.monotonic() + 10
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild), f"grandchild {grandchild} outlived the adopted attempt"
    finally:
        second.close()
        if _alive(grandchild):
            os.kill(grandchild, 9)
