"""The local backend hands out GPUs through CUDA_VISIBLE_DEVICES, and says so when it cannot."""

from __future__ import annotations

import json

from tests.contract.test_backend import Harness
from usina.backends.local import LocalBackend
from usina.engine.ports import Task, TaskState, result_key, task_key
from usina.stores import serializers
from usina.stores.artifacts import FsspecArtifactStore


def _gpu_task(h: Harness, step: str, gpus: int) -> Task:
    """A task of ``step`` asking for ``gpus`` GPUs, with its record written."""
    task = Task.from_json({**h.task(step).to_json(), "resources": {"memory": "1Gi", "gpus": gpus}})
    h.store.write_record(task_key(task.attempt_id), json.dumps(task.to_json()).encode())
    return task


def _value(store: FsspecArtifactStore, attempt: str) -> str:
    ref = json.loads(store.read_record(result_key(attempt)))["outputs"][0]
    return serializers.load(store.get_bytes(ref["digest"]), ref["serializer"], ref["type_name"])


def test_gpus_are_assigned_and_released(tmp_path):
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    backend = LocalBackend(str(tmp_path / "attempts"), store, gpus=[0, 1, 2])
    h = Harness(backend, store)
    try:
        first = _gpu_task(h, "show_gpus", 2)
        backend.launch(first)
        h.wait_for(first.attempt_id, {TaskState.SUCCEEDED})
        assert _value(store, first.attempt_id) == "0,1"
        second = _gpu_task(h, "show_gpus", 3)
        backend.launch(second)
        h.wait_for(second.attempt_id, {TaskState.SUCCEEDED})
        assert sorted(_value(store, second.attempt_id).split(",")) == ["0", "1", "2"]  # released
    finally:
        backend.close()


def test_gpus_asked_for_but_absent_run_on_cpu_with_a_warning(tmp_path):
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    backend = LocalBackend(str(tmp_path / "attempts"), store, gpus=[])
    h = Harness(backend, store)
    try:
        task = _gpu_task(h, "show_gpus", 1)
        backend.launch(task)
        h.wait_for(task.attempt_id, {TaskState.SUCCEEDED})
        assert _value(store, task.attempt_id) == ""
        assert "asks for 1 GPU(s) but only 0 are present here; running on the CPU" in backend.logs(
            task.attempt_id
        )
    finally:
        backend.close()


def test_a_gpu_step_waits_for_a_free_gpu_instead_of_running_on_the_cpu(tmp_path):
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    backend = LocalBackend(str(tmp_path / "attempts"), store, gpus=[0])
    h = Harness(backend, store)

    try:
        busy = _gpu_task(h, "sleepy", 1)
        backend.launch(busy)
        h.wait_for(busy.attempt_id, {TaskState.RUNNING})
        queued = _gpu_task(h, "show_gpus", 1)
        backend.launch(queued)
        for _ in range(10):  # it waits while the only GPU is taken
            assert (
                backend.observe([queued.attempt_id])[queued.attempt_id].state is TaskState.PENDING
            )
            backend.wait(0.05)
        backend.cancel(busy.attempt_id)
        h.wait_for(queued.attempt_id, {TaskState.SUCCEEDED}, timeout=30)
        assert _value(store, queued.attempt_id) == "0"
    finally:
        backend.close()
