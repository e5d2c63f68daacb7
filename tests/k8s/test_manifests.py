"""Every Job the backend can produce is valid against the official schemas (strict), and says
what DESIGN.md promises: restartPolicy Never, the failure policy, deadlines, labels, GPUs."""

from __future__ import annotations

import json
from dataclasses import replace

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from tests.k8s.support import make_task
from usina.backends.kubernetes import KubernetesSettings, job_name, render_task_manifests
from usina.backends.kubernetes.manifests import FAIL_JOB_EXIT_CODES, build_job, label_value
from usina.errors import BackendError
from usina.sdk.resources import Resources

OLDEST = "1.31.0"
NEWEST = kv_utils.latest_version()


def _cpu(settings: KubernetesSettings) -> dict:
    return build_job(make_task("r1-features-1"), settings)  # type: ignore[return-value]


def _gpu(settings: KubernetesSettings) -> dict:
    res = Resources(cpu=8, memory="60Gi", gpus=2, gpu_type="NVIDIA-H100-80GB-HBM3")
    return build_job(make_task("r1-train-1", resources=res, timeout=3600), settings)  # type: ignore[return-value]


def _queued(settings: KubernetesSettings) -> dict:
    s = replace(
        settings,
        queue="team-risk",
        workload_priority_class="prod",
        priority_class="batch-high",
        service_account="usina-steps",
    )
    return build_job(make_task("r1-score-1"), s)  # type: ignore[return-value]


def _oom_retry(settings: KubernetesSettings) -> dict:
    grown = Resources(cpu=2, memory="4Gi").with_memory(int(4 * 2**30 * 1.5))
    return build_job(make_task("r1-train-2", resources=grown), settings)  # type: ignore[return-value]


KINDS = {"cpu": _cpu, "gpu": _gpu, "queued": _queued, "oom_retry": _oom_retry}


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_manifest_validates_strictly(kind: str, version: str, settings: KubernetesSettings) -> None:
    manifest = json.loads(json.dumps(KINDS[kind](settings)))  # plain JSON, as sent
    kubernetes_validate.validate(manifest, version, strict=True)


def test_strict_validation_catches_a_typo(settings: KubernetesSettings) -> None:
    manifest = _cpu(settings)
    manifest["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, OLDEST, strict=True)


def test_cpu_step_job(settings: KubernetesSettings) -> None:
    job = _cpu(settings)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    main = pod["containers"][0]
    assert job["metadata"]["name"] == "r1-features-1"
    assert job["metadata"]["namespace"] == "ml"
    assert pod["restartPolicy"] == "Never"
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == settings.default_deadline
    assert spec["ttlSecondsAfterFinished"] == 3600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "FailJob"
    assert rules[1]["onExitCodes"]["values"] == [42, 43, 44, 137] == list(FAIL_JOB_EXIT_CODES)
    assert main["command"] == [
        "python",
        "-m",
        "usina.runtime",
        "--artifacts",
        "s3://bucket/usina",
        "--attempt",
        "r1-features-1",
    ]
    assert main["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "volumes" not in pod  # no GPU, no shm asked: no /dev/shm volume
    assert "affinity" not in pod
    assert {"name": "LOG_LEVEL", "value": "info"} in main["env"]
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "usina"
    assert labels["usina.dev/run"] == "r1"
    assert labels["usina.dev/step"] == "train" or labels["usina.dev/step"]
    assert labels["usina.dev/attempt"] == "r1-features-1"
    assert labels["usina.dev/pipeline"] == "fraud"
    assert labels["usina.dev/team"] == "risk"
    assert spec["template"]["metadata"]["labels"] == labels
    assert "kueue.x-k8s.io/queue-name" not in labels
    assert job["metadata"]["annotations"]["usina.dev/attempt-id"] == "r1-features-1"


def test_gpu_step_job(settings: KubernetesSettings) -> None:
    job = _gpu(settings)
    pod = job["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert main["resources"]["requests"]["nvidia.com/gpu"] == "2"
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    ]
    assert main["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    # The step's timeout is timed by the backend; the Job gets a backstop (+ queue + margin).
    assert job["spec"]["activeDeadlineSeconds"] == 3600 + 600 + 600
    assert job["metadata"]["annotations"]["usina.dev/timeout"] == "3600"


def test_gpu_label_is_configurable(settings: KubernetesSettings) -> None:
    job = _gpu(replace(settings, gpu_label="cloud.google.com/gke-accelerator"))
    term = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["key"] == "cloud.google.com/gke-accelerator"


def test_queued_step_job(settings: KubernetesSettings) -> None:
    job = _queued(settings)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-risk"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "prod"
    pod = job["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "batch-high"
    assert pod["serviceAccountName"] == "usina-steps"


def test_oom_retry_has_grown_memory(settings: KubernetesSettings) -> None:
    job = _oom_retry(settings)
    assert job["metadata"]["name"] == "r1-train-2"
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "6Gi"


def test_shm_when_asked_without_gpus(settings: KubernetesSettings) -> None:
    job = build_job(make_task(resources=Resources(shm="2Gi")), settings)
    assert job["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "2Gi"


@pytest.mark.parametrize(
    "attempt_id",
    [
        "r1-train-1",
        "Run_2024.01-Train-3",
        "x" * 200 + "-train-1",
        "2024-run-step-1",
        "run--step--1",
        "ÜBER-step-1",
    ],
)
def test_job_names_are_dns_safe_deterministic_and_short(attempt_id: str) -> None:
    name = job_name(attempt_id)
    assert name == job_name(attempt_id)
    assert len(name) <= 63
    assert name[0].isalpha()
    assert name[-1].isalnum()
    assert all(c.islower() or c.isdigit() or c == "-" for c in name)


def test_similar_attempt_ids_get_distinct_names() -> None:
    base = "r" * 80
    names = {job_name(f"{base}-train-{n}") for n in range(50)}
    assert len(names) == 50
    assert job_name("a_b-1") != job_name("a-b-1")


def test_label_values_are_valid() -> None:
    for value in ["ok", "with space", "x" * 100, "-edge-", "ÜBER"]:
        out = label_value(value)
        assert len(out) <= 63
        assert out[0].isalnum()
        assert out[-1].isalnum()


def test_refuses_without_image() -> None:
    with pytest.raises(BackendError, match="image"):
        build_job(make_task(), KubernetesSettings())


def test_refuses_distributed_steps_clearly(settings: KubernetesSettings) -> None:
    task = make_task(node_extra={"distributed": {"nodes": 2}})
    with pytest.raises(BackendError, match="distributed"):
        build_job(task, settings)


def test_render_lists_the_job(settings: KubernetesSettings) -> None:
    manifests = render_task_manifests(make_task(), settings)
    assert [m["kind"] for m in manifests] == ["Job"]
