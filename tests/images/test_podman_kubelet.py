"""The Kubernetes backend against the API emulator whose kubelet runs pods in podman.

The contract suite's scenarios (tests/contract/test_backend.py: success, user error, logs,
cancel) run here unchanged, with a harness whose backend is Kubernetes and whose kubelet starts
each pod's container from the runtime image with the pod's command, env, user and limits
(tests/k8s/podman_kubelet.py). An OOM is real: a step allocates past its memory limit, the
kernel kills the container, and the backend classifies the pod the kubelet reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.contract import test_backend as contract
from tests.images.conftest import REPO
from tests.images.image_steps import HOG_LIMIT
from tests.k8s.emulator import Emulator
from tests.k8s.podman_kubelet import PodmanKubelet
from usina.backends.kubernetes import KubernetesBackend, KubernetesSettings
from usina.engine.ports import Task, TaskState, result_key, task_key
from usina.runtime.loader import load_pipeline
from usina.sdk.resources import Resources
from usina.sdk.retry import FailureClass
from usina.stores.artifacts import FsspecArtifactStore

HERE = Path(__file__).resolve().parent


@pytest.fixture
def harness(images: dict[str, str], tmp_path: Path) -> Iterator[contract.Harness]:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    store = FsspecArtifactStore(str(artifacts))
    # The artifact store is a writable volume; the code (this repository) is mounted read-only.
    kubelet = PodmanKubelet(mounts=[str(artifacts)], read_only=[str(REPO)])
    emulator = Emulator(kubelet=kubelet).start()
    config = client.Configuration()
    config.host = emulator.url
    api = client.ApiClient(config)
    settings = KubernetesSettings(
        namespace="ml", image=images["runtime"], backoff_base=0.01, backoff_max=0.1
    )
    backend = KubernetesBackend(settings, api, store)
    try:
        yield contract.Harness(backend, store)
    finally:
        backend.close()
        api.close()
        emulator.stop()


# The contract suite's scenarios, collected here with the podman-backed harness above.
test_success_is_observed_and_the_result_is_written = (
    contract.test_success_is_observed_and_the_result_is_written
)
test_failure_is_classified_as_user_error = contract.test_failure_is_classified_as_user_error
test_logs_are_kept = contract.test_logs_are_kept
test_cancel_stops_a_running_attempt = contract.test_cancel_stops_a_running_attempt


def hog_task(harness: contract.Harness) -> Task:
    """The ``greedy`` pipeline's one step as the engine hands it to the backend."""
    plan = load_pipeline(f"{HERE / 'image_steps.py'}:greedy").compile({})
    (step,) = plan.nodes
    node = step.to_json()
    assert node["resources"]["memory"] == HOG_LIMIT
    task = Task(
        attempt_id="run-hog-1",
        run_id="run",
        pipeline="contract",
        node=node,
        number=1,
        resources=Resources.from_json(dict(node["resources"])),
        inputs={},
        artifacts_url=harness.store.url,
        params={},
        sys_path=(str(REPO),),
    )
    harness.store.write_record(task_key(task.attempt_id), json.dumps(task.to_json()).encode())
    return task


def test_an_allocation_past_the_pod_memory_limit_is_an_oom(harness):
    task = hog_task(harness)
    harness.backend.launch(task)
    obs = harness.wait_for(task.attempt_id, {TaskState.SUCCEEDED, TaskState.FAILED}, timeout=120)
    assert obs.state is TaskState.FAILED, obs
    assert obs.failure_class is FailureClass.OOM, obs
    assert obs.exit_code == 137, obs
    assert harness.store.read_record(result_key(task.attempt_id)) is None
