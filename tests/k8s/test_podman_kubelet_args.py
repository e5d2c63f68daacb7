"""The podman kubelet's translation of a pod to ``podman run`` (no podman needed here; the runs
themselves are in tests/images)."""

from __future__ import annotations

import json

import pytest

from tests.k8s.podman_kubelet import cpus, memory_bytes, run_args
from usina.backends.kubernetes.manifests import build_job
from usina.backends.kubernetes.settings import KubernetesSettings
from usina.engine.ports import Task


def job() -> dict:
    task = Task(
        attempt_id="r-train-1",
        run_id="r",
        pipeline="p",
        node={"id": "train", "step": "train"},
        number=1,
        resources={"cpu": "500m", "memory": "1536Mi", "shm": "64Mi"},
        inputs={},
        artifacts_url="/data/artifacts",
        params={},
        env={"EXTRA": "1"},
    )
    return dict(build_job(task, KubernetesSettings(namespace="ml", image="img:1")))


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("1536Mi", 1536 * 2**20), ("1G", 10**9), ("2Gi", 2 * 2**30), ("123", 123), ("1.5Ki", 1536)],
)
def test_memory_quantities(quantity, expected):
    assert memory_bytes(quantity) == expected


def test_bad_memory_quantity_is_refused():
    with pytest.raises(ValueError, match="not a memory quantity"):
        memory_bytes("lots")


def test_cpu_quantities():
    assert cpus("500m") == 0.5
    assert cpus("2") == 2.0


def test_a_jobs_pod_becomes_its_podman_run():
    pod = job()["spec"]["template"]
    pod["metadata"]["name"] = "r-train-1-abcde"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    argv = run_args(pod, container, env, mounts=["/data"], read_only=["/code"], name="c1")
    assert argv[:2] == ["podman", "run"]
    assert "--user=1000:1000" in argv  # runAsUser/runAsGroup of the pod
    assert f"--memory={1536 * 2**20}b" in argv
    assert f"--memory-swap={1536 * 2**20}b" in argv  # no swap, as on a node
    assert "--cpus=0.5" in argv
    assert "--cap-drop=ALL" in argv
    assert "--security-opt=no-new-privileges" in argv
    assert f"--shm-size={64 * 2**20}b" in argv  # the Memory emptyDir at /dev/shm
    assert "--volume=/data:/data:U" in argv  # writable, handed to the pod's user (fsGroup)
    assert "--volume=/code:/code:ro" in argv
    assert "--env=USINA_ARTIFACTS=/data/artifacts" in argv
    assert "--env=EXTRA=1" in argv
    assert "--name=c1" in argv
    entry = next(a for a in argv if a.startswith("--entrypoint="))
    assert json.loads(entry.split("=", 1)[1]) == container["command"]
    assert argv[-1] == "img:1"  # the command is the entrypoint; a pod without args has none


def test_a_volume_the_kubelet_cannot_provide_is_refused():
    pod = job()["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    pod["spec"]["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "x"}})
    container["volumeMounts"].append({"name": "data", "mountPath": "/data"})
    with pytest.raises(ValueError, match="no cluster storage"):
        run_args(pod, container, {})
