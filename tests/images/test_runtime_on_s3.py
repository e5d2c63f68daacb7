"""Platform mode in the runtime image: the artifact store is S3 (SeaweedFS) and the code comes
as a bundle, nothing is mounted into the container.

The pipeline's project is a folder of its own; ``usina k8s render`` prints its Job with the
``s3://`` store and the bundle's id (``USINA_BUNDLE``); the test stores the bundle and the
attempt's task record in S3, as ``usina run --backend kubernetes`` does before it creates the
Job, then runs the Job's container with podman (its image, command, environment and user) and
the store's credentials in its environment, standing in for the Secret the Job names. The step
fetches the bundle with s3fs, runs from it and writes its output to S3.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.images.test_runtime_image import STEPS, run_container
from tests.seaweedfs import SeaweedS3
from usina.bundles import ENV_BUNDLE
from usina.compose.bundling import bundle_plan
from usina.engine.ports import Task, result_key, task_key
from usina.engine.records import ArtifactRef
from usina.runtime.loader import load_pipeline
from usina.sdk.resources import Resources
from usina.stores import serializers
from usina.stores.artifacts import FsspecArtifactStore


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SeaweedS3]:
    server = SeaweedS3.start(tmp_path / "seaweedfs")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)  # this process reads the store too
    yield server
    server.stop()


def test_a_step_runs_from_its_bundle_against_s3_in_the_runtime_image(
    images, s3: SeaweedS3, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'on-s3'\n")
    steps = project / "steps.py"
    shutil.copy(STEPS, steps)
    url = s3.url("platform")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "usina.cli.main", "k8s", "render", f"{steps}:good"),
            *("--image", images["runtime"], "--namespace", "ml"),
            *("--env-from-secret", "s3-credentials"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "USINA_HOME": str(tmp_path / "home"), "USINA_ARTIFACTS_URL": url},
    )
    assert proc.returncode == 0, proc.stderr
    (job,) = [o for o in yaml.safe_load_all(proc.stdout) if o]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["USINA_ARTIFACTS"] == url
    assert {"secretRef": {"name": "s3-credentials"}} in container["envFrom"]
    assert not pod.get("volumes")  # nothing from the host: the code and data come from S3

    store = FsspecArtifactStore(url)
    plan, bundle = bundle_plan(load_pipeline(f"{steps}:good").compile({}), store)
    assert env[ENV_BUNDLE] == bundle.digest  # render named the bundle the run stores
    (node,) = plan.nodes
    assert str(node.file).startswith("bundle:")
    annotations = job["metadata"]["annotations"]
    task = Task(
        attempt_id=annotations["usina.dev/attempt-id"],
        run_id=annotations["usina.dev/run-id"],
        pipeline=plan.pipeline,
        node=node.to_json(),
        number=1,
        resources=Resources.from_json(dict(node.resources)),
        inputs={},
        artifacts_url=url,
        params=dict(plan.params),
        timeout=node.timeout,
    )
    store.write_record(task_key(task.attempt_id), json.dumps(task.to_json()).encode())

    # The Secret's keys, as envFrom gives them to the container.
    secret_job: dict[str, Any] = copy.deepcopy(job)
    secret_env = [{"name": k, "value": v} for k, v in s3.env().items()]
    secret_job["spec"]["template"]["spec"]["containers"][0]["env"] += secret_env
    code, _, log = run_container(
        secret_job, f"usina-test-s3-{os.getpid()}", mounts=(), read_only=()
    )
    assert code == 0, log
    assert "making 5 rows" in log
    result = json.loads(store.read_record(result_key(task.attempt_id)))
    (ref,) = result["outputs"]
    artifact = ArtifactRef.from_json(ref)
    value = serializers.load(
        store.get_bytes(artifact.digest), artifact.serializer, artifact.type_name
    )
    assert value == [1, 2, 3, 4, 5]
