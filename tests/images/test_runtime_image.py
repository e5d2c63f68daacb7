"""The runtime image runs exactly what a rendered Job gives its container.

``usina k8s render`` prints the Job; the test writes the attempt's task record into an artifact
folder (what the engine does before it creates the Job), then runs the Job's container with
podman: the same image, command, environment and user, its memory and CPU limits as cgroup
limits, the artifact folder and the pipeline's file mounted at their paths. Success writes the
output; a raising step exits with the user-error code; an allocation past the memory limit is
killed by the kernel (137) and usina's classifier calls it ``oom``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.images.image_steps import HOG_LIMIT
from tests.k8s.podman_kubelet import ContainerProcess, memory_bytes, run_args
from usina.backends.kubernetes.classify import pod_failure
from usina.engine.ports import EXIT_USER_ERROR, Task, error_key, result_key, task_key
from usina.engine.records import ArtifactRef
from usina.runtime.loader import load_pipeline
from usina.sdk.resources import Resources
from usina.sdk.retry import FailureClass
from usina.stores import serializers
from usina.stores.artifacts import FsspecArtifactStore

STEPS = Path(__file__).with_name("image_steps.py")


def render(pipeline: str, image: str, home: Path) -> dict[str, Any]:
    """The one Job ``usina k8s render`` prints for ``pipeline``."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "usina.cli.main", "k8s", "render", f"{STEPS}:{pipeline}"),
            *("--image", image, "--namespace", "ml", "--allow-local-artifacts"),
            "--no-bundle",  # the pipeline's file is mounted into the container at its path
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "USINA_HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stderr
    objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
    assert [o["kind"] for o in objects] == ["Job"]
    return objects[0]


def write_task(job: dict[str, Any], pipeline: str, store: FsspecArtifactStore) -> Task:
    """The attempt's task record, as the engine writes it before it creates the Job."""
    plan = load_pipeline(f"{STEPS}:{pipeline}").compile({})
    (node,) = plan.nodes
    annotations = job["metadata"]["annotations"]
    task = Task(
        attempt_id=annotations["usina.dev/attempt-id"],
        run_id=annotations["usina.dev/run-id"],
        pipeline=plan.pipeline,
        node=node.to_json(),
        number=1,
        resources=Resources.from_json(dict(node.resources)),
        inputs={},
        artifacts_url=store.url,
        params=dict(plan.params),
        timeout=node.timeout,
    )
    store.write_record(task_key(task.attempt_id), json.dumps(task.to_json()).encode())
    return task


def run_container(
    job: dict[str, Any], name: str, *, mounts: Sequence[str], read_only: Sequence[str]
) -> tuple[int, str, str]:
    """Runs the Job's container as its pod spec says, with host folders ``mounts`` (writable)
    and ``read_only`` at their own paths; (exit status, reason, log)."""
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    argv = run_args(pod, container, env, mounts=mounts, read_only=read_only, name=name)
    proc = ContainerProcess(argv, name, "podman")
    assert proc.stdout is not None
    with proc.stdout:
        log = proc.stdout.read().decode(errors="replace")
    code = proc.wait(timeout=300)
    return code, proc.reason or "", log


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "usina"


def attempt(pipeline: str, image: str, home: Path, job_edit: Any = None):
    job = render(pipeline, image, home)
    artifacts = home / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    store = FsspecArtifactStore(str(artifacts))
    container = job["spec"]["template"]["spec"]["containers"][0]
    # The rendered Job is what runs: its artifact store is this folder, its user is not root.
    assert {"name": "USINA_ARTIFACTS", "value": artifacts.as_uri()} in container["env"]
    assert "USINA_BUNDLE" not in {e["name"] for e in container["env"]}
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000
    if job_edit is not None:
        job = job_edit(copy.deepcopy(job))
    task = write_task(job, pipeline, store)
    code, reason, log = run_container(
        job,
        f"usina-test-{pipeline}-{os.getpid()}",
        mounts=[str(artifacts)],
        read_only=[str(STEPS.parent)],
    )
    return task, store, code, reason, log


def test_a_step_runs_in_the_runtime_image_and_writes_its_output(images, home):
    task, store, code, _, log = attempt("good", images["runtime"], home)
    assert code == 0, log
    assert "making 5 rows" in log
    result = json.loads(store.read_record(result_key(task.attempt_id)))
    (ref,) = result["outputs"]
    artifact = ArtifactRef.from_json(ref)
    value = serializers.load(
        store.get_bytes(artifact.digest), artifact.serializer, artifact.type_name
    )
    assert value == [1, 2, 3, 4, 5]


def test_a_raising_step_exits_with_the_user_error_code(images, home):
    task, store, code, reason, log = attempt("bad", images["runtime"], home)
    assert code == EXIT_USER_ERROR, log
    assert "learning rate must be positive" in log
    assert store.read_record(result_key(task.attempt_id)) is None
    error = json.loads(store.read_record(error_key(task.attempt_id)))
    assert "learning rate must be positive" in json.dumps(error)
    failure = pod_failure(_finished_pod(code, reason))
    assert failure[0] is FailureClass.USER_ERROR


def _finished_pod(code: int, reason: str) -> dict[str, Any]:
    """The pod status a kubelet reports for the container's real exit."""
    terminated = {"exitCode": code, "reason": reason, "startedAt": "2026-12-01T00:00:00Z"}
    return {
        "metadata": {"name": "p", "namespace": "ml"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "main", "state": {"terminated": terminated}}],
        },
    }


def test_an_allocation_past_the_memory_limit_is_killed_by_the_cgroup_and_is_oom(images, home):
    task, store, code, reason, log = attempt("greedy", images["runtime"], home)
    limits = render("greedy", images["runtime"], home)["spec"]["template"]["spec"]
    assert limits["containers"][0]["resources"]["limits"]["memory"] == HOG_LIMIT
    assert code == 137, log  # SIGKILL from the kernel's OOM killer, not an exception
    assert store.read_record(result_key(task.attempt_id)) is None
    failure_class, exit_code, _, message = pod_failure(_finished_pod(code, reason))
    assert failure_class is FailureClass.OOM, message
    assert exit_code == 137


def test_the_same_allocation_fits_under_a_larger_limit(images, home):
    """The kill above came from the limit: the same attempt with 2Gi succeeds."""

    def grow(job: dict[str, Any]) -> dict[str, Any]:
        resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
        resources["limits"]["memory"] = resources["requests"]["memory"] = "2Gi"
        return job

    task, store, code, _, log = attempt("greedy", images["runtime"], home, grow)
    assert memory_bytes("2Gi") > 600 * 2**20
    assert code == 0, log
    assert store.read_record(result_key(task.attempt_id)) is not None
