"""One contract for every backend: launch is idempotent, outcomes are observed and classified,
cancel stops an attempt, an unknown attempt is reported as such, logs are kept."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from usina.backends.local import LocalBackend
from usina.engine.ports import Backend, Task, TaskState, result_key, task_key
from usina.sdk.resources import Resources
from usina.sdk.retry import FailureClass
from usina.stores.artifacts import FsspecArtifactStore
from usina.testing.backend import FakeBackend
from usina.testing.clock import FakeClock

HERE = Path(__file__).resolve().parent


@dataclass
class Harness:
    backend: Backend
    store: FsspecArtifactStore
    counter: int = 0

    def task(self, step_name: str, x: int = 1) -> Task:
        self.counter += 1
        attempt = f"run-{step_name}-{self.counter}"
        node = {
            "id": step_name,
            "step": step_name,
            "module": "tests.contract.backend_steps",
            "qualname": step_name,
            "file": str(HERE / "backend_steps.py"),
            "inputs": {"x": {"const": x}},
            "upstream": [],
            "outputs": 1,
            "resources": {"cpu": 1, "memory": "1Gi", "gpus": 0},
            "retry": {},
            "timeout": None,
            "cache": True,
            "cache_version": None,
            "pickle": False,
            "env": [],
            "code_hash": "x",
            "distributed": None,
        }
        task = Task(
            attempt_id=attempt,
            run_id="run",
            pipeline="contract",
            node=node,
            number=1,
            resources=Resources(cpu=1, memory="1Gi"),
            inputs={"x": {"const": x}},
            artifacts_url=self.store.url,
            params={},
            sys_path=(str(HERE.parent.parent),),
        )
        self.store.write_record(task_key(attempt), json.dumps(task.to_json()).encode())
        return task

    def wait_for(self, attempt: str, states: set[TaskState], timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obs = self.backend.observe([attempt])[attempt]
            if obs.state in states:
                return obs
            self.backend.wait(0.05)
        raise AssertionError(f"{attempt} never reached {states}")


def _local(tmp_path: Path) -> tuple[Backend, FsspecArtifactStore]:
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    return LocalBackend(str(tmp_path / "attempts"), store), store


def _fake(tmp_path: Path) -> tuple[Backend, FsspecArtifactStore]:
    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    fake = FakeBackend(store, FakeClock())
    fake.script("fail", FailureClass.USER_ERROR)
    fake.hold.add("sleepy")
    return fake, store


def _kubernetes(tmp_path: Path) -> tuple[Backend, FsspecArtifactStore]:
    """Kubernetes Jobs, through the real client, against the API emulator whose kubelet runs
    each pod's command (``python -m usina.runtime ...``) as a local process."""
    from kubernetes import client

    from tests.k8s.emulator import Emulator
    from usina.backends.kubernetes import KubernetesBackend, KubernetesSettings

    store = FsspecArtifactStore(str(tmp_path / "artifacts"))
    emulator = Emulator(execute=True).start()
    config = client.Configuration()
    config.host = emulator.url
    api = client.ApiClient(config)
    settings = KubernetesSettings(
        namespace="ml", image="usina:test", backoff_base=0.01, backoff_max=0.1
    )
    backend = KubernetesBackend(settings, api, store)
    close = backend.close

    def close_all() -> None:
        close()
        api.close()
        emulator.stop()

    backend.close = close_all  # type: ignore[method-assign]
    return backend, store


BACKENDS: dict[str, Callable[[Path], tuple[Backend, FsspecArtifactStore]]] = {
    "local": _local,
    "fake": _fake,
    "kubernetes": _kubernetes,
}


@pytest.fixture(params=sorted(BACKENDS))
def harness(request, tmp_path) -> Iterator[Harness]:
    backend, store = BACKENDS[request.param](tmp_path)
    try:
        yield Harness(backend, store)
    finally:
        backend.close()


def test_success_is_observed_and_the_result_is_written(harness):
    task = harness.task("ok", 41)
    harness.backend.launch(task)
    obs = harness.wait_for(task.attempt_id, {TaskState.SUCCEEDED, TaskState.FAILED})
    assert obs.state is TaskState.SUCCEEDED
    assert obs.failure_class is None
    result = json.loads(harness.store.read_record(result_key(task.attempt_id)))
    assert len(result["outputs"]) == 1


def test_launch_is_idempotent(harness):
    task = harness.task("ok", 1)
    harness.backend.launch(task)
    harness.backend.launch(task)
    harness.wait_for(task.attempt_id, {TaskState.SUCCEEDED})
    harness.backend.launch(task)  # after it finished: still nothing new
    obs = harness.backend.observe([task.attempt_id])[task.attempt_id]
    assert obs.state is TaskState.SUCCEEDED


def test_failure_is_classified_as_user_error(harness):
    task = harness.task("fail", 3)
    harness.backend.launch(task)
    obs = harness.wait_for(task.attempt_id, {TaskState.SUCCEEDED, TaskState.FAILED})
    assert obs.state is TaskState.FAILED
    assert obs.failure_class is FailureClass.USER_ERROR
    assert harness.store.read_record(result_key(task.attempt_id)) is None


def test_cancel_stops_a_running_attempt(harness):
    task = harness.task("sleepy", 1)
    harness.backend.launch(task)
    harness.wait_for(task.attempt_id, {TaskState.RUNNING})
    harness.backend.cancel(task.attempt_id)
    obs = harness.wait_for(task.attempt_id, {TaskState.FAILED, TaskState.SUCCEEDED}, timeout=30)
    assert obs.state is TaskState.FAILED
    assert obs.failure_class is FailureClass.CANCELLED


def test_an_attempt_never_launched_is_unknown(harness):
    obs = harness.backend.observe(["run-never-1"])["run-never-1"]
    assert obs.state is TaskState.UNKNOWN


def test_logs_are_kept(harness):
    task = harness.task("ok", 5)
    harness.backend.launch(task)
    harness.wait_for(task.attempt_id, {TaskState.SUCCEEDED})
    text = harness.backend.logs(task.attempt_id)
    assert text
    if not isinstance(harness.backend, FakeBackend):
        assert "ok got 5" in text


def test_local_backend_adopts_a_running_attempt_after_a_restart(tmp_path):
    backend, store = _local(tmp_path)
    h = Harness(backend, store)
    task = h.task("sleepy", 1)
    backend.launch(task)
    h.wait_for(task.attempt_id, {TaskState.RUNNING})
    backend.close()  # the engine went away; the attempt's process lives on
    second = LocalBackend(str(tmp_path / "attempts"), store)
    try:
        obs = second.observe([task.attempt_id])[task.attempt_id]
        assert obs.state is TaskState.RUNNING  # adopted, not re-run
        second.launch(task)  # a re-launch after a crash must not start a second process
        second.cancel(task.attempt_id)
        obs = Harness(second, store).wait_for(task.attempt_id, {TaskState.FAILED}, timeout=30)
        assert obs.failure_class is FailureClass.CANCELLED
    finally:
        second.close()
    pids = (tmp_path / "attempts" / task.attempt_id / "output.log").read_text()
    assert pids.count("ok got") == 0
