"""Manifests: one attempt (a ``Task``) becomes one ``batch/v1`` Job, as plain JSON data.

Pure functions, no I/O and no ``kubernetes`` import, so ``usina k8s render`` works without a
cluster or the client installed. Field choices follow DESIGN.md ("Attempts and failure classes")
and ``reference/kubernetes-jobs.md``: ``restartPolicy: Never``, a ``podFailurePolicy`` that fails
the Job at once on the runtime's reserved exit codes, a small ``backoffLimit`` (the engine owns
retries: each retry is a new Job), ``activeDeadlineSeconds`` and ``ttlSecondsAfterFinished``
always set. A distributed step's attempt is a gang instead (``distributed.py``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from typing import TYPE_CHECKING, Any, TypedDict

from usina.backends.kubernetes.settings import (
    ATTEMPT_ANNOTATION,
    CONTAINER,
    LABEL_PREFIX,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    QUEUE_TIMEOUT_ANNOTATION,
    RUN_ANNOTATION,
    TIMEOUT_ANNOTATION,
    KubernetesSettings,
)
from usina.engine.ports import EXIT_INFRA, EXIT_OOM, EXIT_USER_ERROR, Task
from usina.errors import BackendError

if TYPE_CHECKING:
    from usina.sdk.resources import Resources

#: Exit codes after which the Job fails at once (FailJob): the runtime's reserved codes, and 137
#: (SIGKILL, in practice the cgroup OOM killer) so an OOM is not re-run with the same memory.
FAIL_JOB_EXIT_CODES = (EXIT_USER_ERROR, EXIT_OOM, EXIT_INFRA, 137)
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"
MAX_NAME = 63

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


class JobManifest(TypedDict):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@functools.lru_cache(maxsize=65536)
def job_name(attempt_id: str) -> str:
    """The Job name of an attempt: deterministic, DNS-1123 label safe, at most 63 characters.

    A name that had to be changed (case, characters, length) gets a hash of the original id, so
    two attempt ids never share a Job name.
    """
    clean = _NOT_DNS.sub("-", attempt_id.lower()).strip("-")
    clean = re.sub(r"-{2,}", "-", clean)
    if clean and clean[0].isalpha() and clean == attempt_id and len(clean) <= MAX_NAME:
        return clean
    head = clean[: MAX_NAME - 9].strip("-") or "usina"
    if not head[0].isalpha():
        head = ("u-" + head)[: MAX_NAME - 9].strip("-")
    return f"{head}-{_digest(attempt_id)}"


def label_value(value: str) -> str:
    """A label value for any string: at most 63 characters of ``[A-Za-z0-9._-]``, starting and
    ending alphanumeric; changed values get a hash suffix so they stay distinct."""
    clean = _NOT_LABEL.sub("-", value).strip("-_.")
    if clean == value and len(clean) <= MAX_NAME:
        return clean
    head = clean[: MAX_NAME - 9].strip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def _label_key(key: str) -> str:
    return key if "/" in key else LABEL_PREFIX + key


def job_labels(task: Task) -> dict[str, str]:
    """Labels on the Job and its pods: the task's own, then run/step/attempt/pipeline."""
    labels = {_label_key(k): label_value(str(v)) for k, v in sorted(task.labels.items())}
    labels.update(
        {
            LABEL_PREFIX + "run": label_value(task.run_id),
            LABEL_PREFIX + "step": label_value(str(task.node.get("step", task.node.get("id")))),
            LABEL_PREFIX + "node": label_value(str(task.node.get("id", ""))),
            LABEL_PREFIX + "attempt": label_value(task.attempt_id),
            LABEL_PREFIX + "pipeline": label_value(task.pipeline),
            MANAGED_BY: MANAGED_BY_VALUE,
        }
    )
    return {k: v for k, v in labels.items() if v}


def _quantity(value: object) -> str:
    return str(value)


def container_resources(resources: Resources) -> dict[str, dict[str, str]]:
    """Requests and limits of the step container (one pod: a gang's resources are per node).

    Memory: request = limit (an attempt that exceeds it is ``oom``; the engine grows it).
    CPU: the request, limited by ``cpu_limit`` or else ``cpu``. GPUs: whole devices, as
    ``nvidia.com/gpu`` limits (requests must equal limits for extended resources).
    """
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    cpu = resources.cpu
    if cpu is not None:
        requests["cpu"] = _quantity(cpu)
        limits["cpu"] = _quantity(resources.cpu_limit or cpu)
    if resources.memory is not None:
        requests["memory"] = limits["memory"] = _quantity(resources.memory)
    storage = resources.ephemeral_storage
    if storage:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = _quantity(storage)
    if resources.gpus:
        device = gpu_resource(resources)
        requests[device] = limits[device] = str(resources.gpus)
    for name, value in sorted(dict(resources.extra or {}).items()):
        requests[name] = limits[name] = _quantity(value)
    return {"requests": requests, "limits": limits}


def gpu_resource(resources: Resources) -> str:
    """The extended resource of the step's GPUs: a MIG slice (``nvidia.com/mig-1g.10gb``), a
    time-sliced share (``nvidia.com/gpu.shared``, the GPU operator's renamed resource), or
    whole devices."""
    if resources.mig:
        return f"nvidia.com/mig-{resources.mig}"
    if resources.shared_gpu:
        return SHARED_GPU_RESOURCE
    return GPU_RESOURCE


def pod_failure_policy(settings: KubernetesSettings) -> dict[str, Any]:
    """Rule 0: disruptions (``DisruptionTarget``) -> ``settings.disruption_action``.
    Rule 1: the runtime's reserved exit codes and 137 -> ``FailJob``. Anything else counts
    against ``backoffLimit``."""
    return {
        "rules": [
            {
                "action": settings.disruption_action,
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": list(FAIL_JOB_EXIT_CODES),
                },
            },
        ]
    }


def _tolerations(task_gpus: int, settings: KubernetesSettings) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [dict(t) for t in settings.tolerations]
    if task_gpus:
        found += [dict(t) for t in settings.gpu_tolerations if dict(t) not in found]
    if settings.node_loss_seconds is not None:
        for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            found.append(
                {
                    "key": taint,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": settings.node_loss_seconds,
                }
            )
    return found


def queue_timeout(task: Task, settings: KubernetesSettings) -> float:
    """The step's queue timeout (its node may override the settings)."""
    value = task.node.get("queue_timeout")
    return float(value) if value is not None else float(settings.queue_timeout)


def build_job(task: Task, settings: KubernetesSettings) -> JobManifest:
    """The ``batch/v1`` Job that runs one attempt. Raises ``BackendError`` when it cannot."""
    problems = settings.problems()
    if task.node.get("distributed"):
        problems.append(
            f"step '{task.node.get('step')}' is distributed: its attempt is a gang (headless "
            "Service + Indexed Job); build it with render_task_manifests()"
        )
    image = task.node.get("image") or settings.image
    if not image:
        problems.append("no container image: set the backend's image (usina run --image IMG)")
    if problems:
        raise BackendError(
            f"cannot build the Job for attempt {task.attempt_id}: " + "; ".join(problems)
        )
    resources = task.resources  # per pod: a gang's resources are per node
    gpus = resources.gpus
    name = job_name(task.attempt_id)
    labels = job_labels(task)
    if settings.queue:
        labels[KUEUE_QUEUE_LABEL] = settings.queue  # validated, never rewritten
        priority = task.node.get("priority") or settings.workload_priority_class
        if priority:  # a step's priority= names a WorkloadPriorityClass
            labels[KUEUE_PRIORITY_LABEL] = label_value(str(priority))
    annotations = {
        ATTEMPT_ANNOTATION: task.attempt_id,
        RUN_ANNOTATION: task.run_id,
        QUEUE_TIMEOUT_ANNOTATION: f"{queue_timeout(task, settings):g}",
    }
    if task.timeout is not None:
        annotations[TIMEOUT_ANNOTATION] = f"{task.timeout:g}"
    env: list[dict[str, Any]] = [
        {"name": "USINA_ATTEMPT_ID", "value": task.attempt_id},
        {"name": "USINA_RUN_ID", "value": task.run_id},
        {"name": "USINA_ARTIFACTS", "value": task.artifacts_url},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    seen = {e["name"] for e in env}
    for key, value in [*sorted(settings.env.items()), *sorted(task.env.items())]:
        if key in seen:
            env = [e for e in env if e["name"] != key]
        seen.add(key)
        env.append({"name": key, "value": str(value)})
    for key, ref in sorted(settings.secret_env.items()):
        secret, _, secret_key = ref.partition("/")
        env = [e for e in env if e["name"] != key]
        env.append(
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}}
        )

    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    shm = resources.shm or (settings.default_shm if gpus else None)
    if shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(shm)}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": ["python", *runtime_args(task)],
        "env": env,
        "resources": container_resources(resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "runAsNonRoot": True,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = [{"secretRef": {"name": n}} for n in settings.env_from_secrets] + [
        {"configMapRef": {"name": n}} for n in settings.env_from_config_maps
    ]
    if env_from:
        container["envFrom"] = env_from
    if mounts:
        container["volumeMounts"] = mounts
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy

    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if settings.run_as_user is not None:
        pod_security["runAsUser"] = settings.run_as_user
        pod_security["runAsGroup"] = settings.run_as_user
        pod_security["fsGroup"] = settings.run_as_user

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": pod_security,
        "automountServiceAccountToken": settings.automount_service_account_token,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
    }
    if volumes:
        pod_spec["volumes"] = volumes
    tolerations = _tolerations(gpus, settings)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    gpu_type = resources.gpu_type
    if gpus and gpu_type:
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": settings.gpu_label,
                                    "operator": "In",
                                    "values": [str(gpu_type)],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(settings.node_selector.items()))
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.priority_class:
        pod_spec["priorityClassName"] = settings.priority_class
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]

    deadline = (
        math.ceil(max(1.0, task.timeout) + queue_timeout(task, settings)) + settings.deadline_margin
        if task.timeout is not None
        else settings.default_deadline
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": settings.ttl_seconds,
            "podFailurePolicy": pod_failure_policy(settings),
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }


def runtime_args(task: Task) -> list[str]:
    """The step runtime's arguments (after the interpreter, or after ``torchrun``'s options)."""
    return ["-m", "usina.runtime", "--artifacts", task.artifacts_url, "--attempt", task.attempt_id]


def render_task_manifests(task: Task, settings: KubernetesSettings) -> list[dict[str, Any]]:
    """Every object the backend would create for this attempt, in creation order
    (``usina k8s render``): the Job; for a distributed step, a headless Service and an
    Indexed Job (``usina.backends.kubernetes.distributed``)."""
    if task.node.get("distributed"):
        from usina.backends.kubernetes.distributed import render_gang

        return render_gang(task, settings)
    return [dict(build_job(task, settings))]
