"""The process kubelet: the emulator's pods run as local processes with the pod's environment
(values, field and Secret references), a working directory each, the memory limit enforced
(OOMKilled/137) and their output as the pod log; then the engine drives pipelines through the
Kubernetes backend with the real runtime in every pod, against a local artifact folder and
against SeaweedFS (S3) whose credentials reach the pods only through the Job's env."""

from __future__ import annotations

import base64
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.k8s.emulator import Emulator
from tests.k8s.process_kubelet import ProcessKubelet, memory_bytes
from tests.k8s.process_steps import process_fails, process_ok
from tests.seaweedfs import SeaweedS3
from usina.backends.kubernetes import KubernetesBackend, KubernetesSettings
from usina.engine.engine import Engine, EngineSettings
from usina.engine.records import RunState
from usina.sdk.retry import FailureClass
from usina.stores.artifacts import FsspecArtifactStore
from usina.testing import InMemoryMetadataStore


def job(
    name: str,
    script: str,
    *,
    env: list[dict[str, object]] | None = None,
    memory: str | None = None,
    env_from: list[dict[str, object]] | None = None,
) -> dict:  # type: ignore[type-arg]
    container: dict[str, object] = {
        "name": "main",
        "image": "usina:test",
        "command": ["python", "-c", script],
        "env": env or [],
    }
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    if env_from:
        container["envFrom"] = env_from
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "annotations": {"usina.dev/attempt-id": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"team": "risk"}},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }


def finished_pod(emulator: Emulator, job_name: str, timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in emulator.list("pods", "ml"):
            labels = pod["metadata"].get("labels", {})
            if labels.get("job-name") == job_name and pod["status"]["phase"] in (
                "Succeeded",
                "Failed",
            ):
                return pod
        time.sleep(0.05)
    raise AssertionError(f"no finished pod of {job_name} in {timeout} s")


def terminated(pod: dict) -> dict:  # type: ignore[type-arg]
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]  # type: ignore[no-any-return]


@pytest.fixture
def kubelet(tmp_path: Path) -> ProcessKubelet:
    return ProcessKubelet(tmp_path / "pods")


@pytest.fixture
def emulator(kubelet: ProcessKubelet) -> Iterator[Emulator]:
    with Emulator(kubelet=kubelet) as emu:
        yield emu


def test_memory_quantities() -> None:
    assert memory_bytes("128Mi") == 128 << 20
    assert memory_bytes("1G") == 10**9
    assert memory_bytes("1536") == 1536
    with pytest.raises(ValueError, match="not a memory quantity"):
        memory_bytes("lots")


def test_pod_env_workdir_and_log(
    emulator: Emulator, kubelet: ProcessKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-only")  # never reaches a pod
    kubelet.add_secret("s3-creds", {"AWS_ACCESS_KEY_ID": "key-1", "AWS_SECRET_ACCESS_KEY": "s"})
    kubelet.add_secret_object(
        {
            "metadata": {"name": "db", "namespace": "ml"},
            "data": {"password": base64.b64encode(b"hunter2").decode()},
        }
    )
    script = (
        "import os, sys\n"
        "for k in ('PLAIN', 'ECHO', 'POD', 'TEAM', 'PASSWORD', 'AWS_ACCESS_KEY_ID',"
        " 'AWS_SECRET_ACCESS_KEY'):\n"
        "    print(k, '=', os.environ.get(k))\n"
        "print('cwd', '=', os.getcwd())\n"
        "print('python', '=', sys.executable)\n"
        "print('to stderr', file=sys.stderr)\n"
    )
    env: list[dict[str, object]] = [
        {"name": "PLAIN", "value": "hello"},
        {"name": "ECHO", "value": "$(PLAIN)-again"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
    ]
    emulator.create_raw(
        "jobs",
        "ml",
        job("env-job", script, env=env, env_from=[{"secretRef": {"name": "s3-creds"}}]),
    )
    pod = finished_pod(emulator, "env-job")
    assert pod["status"]["phase"] == "Succeeded", emulator.logs
    name = pod["metadata"]["name"]
    config = client.Configuration()
    config.host = emulator.url
    with client.ApiClient(config) as api:
        log = client.CoreV1Api(api).read_namespaced_pod_log(name, "ml")
    lines = set(log.splitlines())
    assert {
        "PLAIN = hello",
        "ECHO = hello-again",
        f"POD = {name}",
        "TEAM = risk",
        "PASSWORD = hunter2",
        "AWS_ACCESS_KEY_ID = key-1",
        "AWS_SECRET_ACCESS_KEY = s",  # the Secret's, not the host's
        f"cwd = {kubelet.workdir(pod)}",
        f"python = {sys.executable}",
        "to stderr",
    } <= lines, log
    assert terminated(pod)["reason"] == "Completed"


def test_exit_code_and_missing_secret(emulator: Emulator) -> None:
    emulator.create_raw("jobs", "ml", job("exit-job", "import sys; sys.exit(3)"))
    pod = finished_pod(emulator, "exit-job")
    assert (terminated(pod)["exitCode"], terminated(pod)["reason"]) == (3, "Error")

    ref = {"secretKeyRef": {"name": "absent", "key": "k"}}
    emulator.create_raw(
        "jobs", "ml", job("cfg-job", "print('ran')", env=[{"name": "X", "valueFrom": ref}])
    )
    pod = finished_pod(emulator, "cfg-job")
    assert terminated(pod)["reason"] == "CreateContainerConfigError"
    assert emulator.logs[pod["metadata"]["name"]] == ['secret "absent" not found']


def test_memory_limit_kills_the_process_tree_as_oomkilled(emulator: Emulator) -> None:
    # The memory is held by a child process: the limit is the pod's, not one process's.
    script = (
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', "
        "'import time; b = bytes(150 << 20) + b\"x\"; time.sleep(30)'])\n"
    )
    started = time.monotonic()
    emulator.create_raw("jobs", "ml", job("oom-job", script, memory="96Mi"))
    pod = finished_pod(emulator, "oom-job")
    assert time.monotonic() - started < 20  # killed, not slept out
    assert (terminated(pod)["exitCode"], terminated(pod)["reason"]) == (137, "OOMKilled")
    assert pod["status"]["phase"] == "Failed"

    emulator.create_raw("jobs", "ml", job("fits-job", "b = bytes(20 << 20) + b'x'", memory="256Mi"))
    assert terminated(finished_pod(emulator, "fits-job"))["reason"] == "Completed"


Outcome = tuple[RunState, InMemoryMetadataStore, KubernetesBackend]


def drive(
    emulator: Emulator,
    artifacts: FsspecArtifactStore,
    pipeline: object,
    run_id: str,
    env: dict[str, str] | None = None,
) -> Outcome:
    metadata = InMemoryMetadataStore()
    config = client.Configuration()
    config.host = emulator.url
    api = client.ApiClient(config)
    settings = KubernetesSettings(
        namespace="ml", image="usina:test", backoff_base=0.01, env=env or {}
    )
    backend = KubernetesBackend(settings, api, artifacts)
    try:
        engine = Engine(
            backend=backend,
            metadata=metadata,
            artifacts=artifacts,
            settings=EngineSettings(poll_interval=0.2, environment="process-kubelet"),
        )
        run = engine.submit(pipeline.compile(), run_id=run_id)  # type: ignore[attr-defined]
        final = engine.drive(run.id)
    finally:
        backend.close()
        api.close()  # type: ignore[no-untyped-call]
    return final.state, metadata, backend


def check_ok_run(emulator: Emulator, kubelet: ProcessKubelet, metadata: InMemoryMetadataStore,
                 run_id: str) -> None:  # fmt: skip
    train = metadata.get_attempts(run_id, "train")
    assert [a.failure_class for a in train] == [FailureClass.OOM, None]
    assert train[0].reason == "OOMKilled"
    assert train[1].resources["memory"] == "384Mi"
    score = metadata.get_attempts(run_id, "score")
    assert [a.failure_class for a in score] == [None]
    assert emulator.count("create jobs") == 4  # extract, train x2, score
    pods = emulator.list("pods", "ml")
    extract_pod = next(p for p in pods if p["metadata"]["name"].startswith(f"{run_id}-extract"))
    log = "\n".join(emulator.logs[extract_pod["metadata"]["name"]])
    assert f"cwd={kubelet.workdir(extract_pod)}" in log
    assert f"attempt={run_id}-extract-1" in log


def test_engine_on_process_kubelet_with_a_local_store(
    emulator: Emulator, kubelet: ProcessKubelet, tmp_path: Path
) -> None:
    artifacts = FsspecArtifactStore(str(tmp_path / "artifacts"))
    state, metadata, backend = drive(emulator, artifacts, process_ok, "proc-ok")
    assert state is RunState.SUCCEEDED, metadata.list_events("proc-ok")
    check_ok_run(emulator, kubelet, metadata, "proc-ok")

    state, metadata, backend = drive(emulator, artifacts, process_fails, "proc-bad")
    assert state is RunState.FAILED
    (attempt,) = metadata.get_attempts("proc-bad", "broken")
    assert attempt.failure_class is FailureClass.USER_ERROR
    pod = next(p for p in emulator.list("pods", "ml") if "proc-bad" in p["metadata"]["name"])
    assert "ValueError: learning rate must be positive" in "\n".join(
        emulator.logs[pod["metadata"]["name"]]
    )


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


def test_engine_on_process_kubelet_with_seaweedfs(
    emulator: Emulator, kubelet: ProcessKubelet, s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3.env().items():  # this process (the engine) reaches S3 from its env
        monkeypatch.setenv(key, value)
    assert "AWS_ENDPOINT_URL" not in kubelet.base_env  # the pods, only from the Job's env
    artifacts = FsspecArtifactStore(s3.url(f"proc-{uuid.uuid4().hex[:8]}"))
    state, metadata, _ = drive(emulator, artifacts, process_ok, "proc-s3", env=s3.env())
    assert state is RunState.SUCCEEDED, metadata.list_events("proc-s3")
    check_ok_run(emulator, kubelet, metadata, "proc-s3")
    s3_client = s3.client()  # type: ignore[no-untyped-call]
    prefix = artifacts.url.split("/", 3)[3]
    keys = s3_client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    names = [o["Key"] for o in keys.get("Contents", [])]
    assert any("/records/attempts/proc-s3-score-1/result.json" in n for n in names), names
    assert any("/sha256/" in n for n in names)


BOOT = (
    "import os\n"
    "from usina.bundles import bootstrap\n"
    "from usina.stores.artifacts import FsspecArtifactStore\n"
    "folder = bootstrap(os.environ, FsspecArtifactStore(os.environ['USINA_ARTIFACTS']))\n"
    "print('bundle at', folder)\n"
    "import {module}\n"
    "print('answer', {module}.answer())\n"
)


def test_a_pod_runs_code_from_a_bundle_in_s3(
    emulator: Emulator,
    kubelet: ProcessKubelet,
    s3: SeaweedS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the runtime will do at a pod's start with ``USINA_BUNDLE`` set: fetch the bundle from
    the run's store (S3, credentials from the Job's env), verify it, import the user's code
    from it; a tampered bundle fails the pod with the bundle named."""
    from usina.bundles import put_bundle

    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    module = f"bundled_{uuid.uuid4().hex[:8]}"  # importable from the bundle only
    project = tmp_path / "project"
    (project / module).mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (project / module / "__init__.py").write_text("def answer():\n    return 42\n")
    store = FsspecArtifactStore(s3.url(f"bundle-{uuid.uuid4().hex[:8]}"))
    ref = put_bundle(store, project)
    assert ref.uploaded
    project.rename(tmp_path / "moved-away")  # the pod cannot read the laptop's copy

    env: list[dict[str, object]] = [
        {"name": "USINA_BUNDLE", "value": ref.digest},
        {"name": "USINA_ARTIFACTS", "value": store.url},
    ]
    env += [{"name": k, "value": v} for k, v in s3.env().items()]
    emulator.create_raw("jobs", "ml", job("bundle-job", BOOT.format(module=module), env=env))
    pod = finished_pod(emulator, "bundle-job", timeout=60)
    log = emulator.logs[pod["metadata"]["name"]]
    assert pod["status"]["phase"] == "Succeeded", log
    assert "answer 42" in log
    assert f"bundle at {kubelet.workdir(pod)}/tmp/" in log[0]  # no USINA_WORKDIR: a temp dir

    hex_ = ref.digest.removeprefix("sha256:")
    key = f"{store.url.split('/', 3)[3]}/sha256/{hex_[:2]}/{hex_}"
    s3_client = s3.client()  # type: ignore[no-untyped-call]
    data = s3_client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    s3_client.put_object(Bucket=s3.bucket, Key=key, Body=data + b"tampered")
    env.append({"name": "USINA_WORKDIR", "value": str(tmp_path / "workdir")})
    emulator.create_raw("jobs", "ml", job("tampered-job", BOOT.format(module=module), env=env))
    pod = finished_pod(emulator, "tampered-job", timeout=60)
    text = "\n".join(emulator.logs[pod["metadata"]["name"]])
    assert pod["status"]["phase"] == "Failed"
    assert f"BundleIntegrityError: bundle {ref.digest} in {store.url} is corrupt" in text
    assert not (tmp_path / "workdir").exists()  # nothing extracted from a bad bundle
