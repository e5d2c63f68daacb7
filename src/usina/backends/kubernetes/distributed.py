"""A distributed step's attempt as Kubernetes objects: an Indexed Job plus a headless Service.

One pod per node (``completions = parallelism = nodes``, ``completionMode: Indexed``); pod *i*
runs ``torchrun --nnodes=N --nproc-per-node=M --node-rank=$(JOB_COMPLETION_INDEX)`` with rank
0's stable hostname ``<job>-0.<service>`` as the rendezvous endpoint (static rendezvous:
``--master-addr``/``--master-port``), and each rank runs ``python -m usina.runtime``, which
reads ``RANK`` and writes the outputs on rank 0 only. The gang lives and dies together:
``backoffLimit: 0`` and a ``podFailurePolicy`` that fails the Job on any failure, a disruption
included (``FailJob`` on ``DisruptionTarget``: replacing one pod of an NCCL gang hangs it), so
the engine restarts the whole gang as the next attempt, a new Job for all ranks, which resumes
from ``usina.checkpoint``. ``podReplacementPolicy: Failed`` never lets two pods hold one rank.
With a queue configured, the Job carries Kueue's queue-name label; Kueue admits a Job as one
workload, all ``nodes`` pods or none (gang admission).

An elastic gang (``Torchrun(nodes=(MIN, MAX))``) asks for MAX pods and carries Kueue's
partial-admission annotations (``job-min-parallelism: MIN`` and
``job-completions-equal-parallelism``), so Kueue may admit it with fewer pods when the quota is
short, lowering ``parallelism`` and ``completions`` together before it starts; the backend never
sets them back (KEP-420: under partial admission Kueue owns them). Its pods run torchrun's
dynamic rendezvous (``--nnodes=MIN:MAX``, c10d on rank 0's pod), which forms the world from the
pods that came, so the step's code sees the size it got and resumes from its checkpoint.

The pod template is ``manifests.build_job``'s, so security, resources (per node), GPUs,
``/dev/shm``, tolerations and labels are the same as for a single-pod step.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from usina.backends.kubernetes.manifests import (
    FAIL_JOB_EXIT_CODES,
    JobManifest,
    build_job,
    runtime_args,
)
from usina.backends.kubernetes.settings import ATTEMPT_ANNOTATION, CONTAINER, KubernetesSettings
from usina.engine.ports import EXIT_RANK_LOST, Task
from usina.errors import BackendError

if TYPE_CHECKING:
    from usina.sdk.distributed import Torchrun

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
#: On a gang's Job: ``"<nodes>x<procs_per_node>"`` (the backend maps a pod's index to ranks).
GANG_ANNOTATION = "usina.dev/gang"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
#: Kueue's partial admission (KEP-420), on an elastic gang's Job.
MIN_PARALLELISM = "kueue.x-k8s.io/job-min-parallelism"
COMPLETIONS_EQUAL_PARALLELISM = "kueue.x-k8s.io/job-completions-equal-parallelism"
MAX_HOSTNAME = 63


def gang_spec(task: Task) -> Torchrun:
    try:
        spec = task.distributed
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(
            f"attempt {task.attempt_id}: step '{task.node.get('step')}' has a distributed "
            f"spec this backend does not know ({task.node.get('distributed')!r})"
        ) from exc
    if spec is None:
        raise BackendError(f"attempt {task.attempt_id}: step is not distributed")
    return spec


def gang_name(job: str, nodes: int) -> str:
    """The name of a gang's Job and headless Service: the attempt's Job name, shortened (with
    a hash) where the pods' hostnames ``<name>-<index>`` would pass 63 characters."""
    room = MAX_HOSTNAME - len(f"-{nodes - 1}")
    digest = hashlib.sha256(job.encode()).hexdigest()[:8]
    return job if len(job) <= room else f"{job[: room - 9].rstrip('-')}-{digest}"


def gang_failure_policy() -> dict[str, Any]:
    """Every failure fails the Job at once: the engine, not the Job controller, restarts it,
    and always as a whole gang."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": sorted({*FAIL_JOB_EXIT_CODES, EXIT_RANK_LOST}),
                },
            },
        ]
    }


def torchrun_command(task: Task, spec: Torchrun, master: str) -> list[str]:
    if spec.elastic:
        return [
            "torchrun",
            f"--nnodes={spec.fewest_nodes}:{spec.nodes}",
            f"--nproc-per-node={spec.procs_per_node}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={master}:{spec.port}",
            f"--rdzv-id={task.attempt_id}",
            "--max-restarts=0",  # the engine restarts the gang, never torchrun in place
            f"--rdzv-conf=join_timeout={math.ceil(spec.rdzv_timeout)}",
            *runtime_args(task),
        ]
    return [
        "torchrun",
        f"--nnodes={spec.nodes}",
        f"--nproc-per-node={spec.procs_per_node}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={master}",
        f"--master-port={spec.port}",
        "--max-restarts=0",  # the engine restarts the gang, never torchrun in place
        # How long a rank waits for the others to join (static rendezvous reads "timeout").
        f"--rdzv-conf=timeout={math.ceil(spec.rdzv_timeout)}",
        *runtime_args(task),
    ]


def build_gang(task: Task, settings: KubernetesSettings) -> tuple[dict[str, Any], JobManifest]:
    """The headless Service and the Indexed Job of one attempt of a distributed step."""
    spec = gang_spec(task)
    job: JobManifest = build_job(replace(task, node={**task.node, "distributed": None}), settings)
    job = copy.deepcopy(job)
    # The Job and its Service share one name, short enough for the pods' hostnames.
    name = service = gang_name(job["metadata"]["name"], spec.nodes)
    job["metadata"]["name"] = name
    master = f"{name}-0.{service}"
    gpus = task.resources.gpus  # per node (pod)

    job_spec = job["spec"]
    job_spec.update(
        {
            "completionMode": "Indexed",
            "completions": spec.nodes,
            "parallelism": spec.nodes,
            "backoffLimit": 0,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": gang_failure_policy(),
        }
    )
    pod = job_spec["template"]["spec"]
    pod["subdomain"] = service
    container = pod["containers"][0]
    container["command"] = torchrun_command(task, spec, master)
    env = [e for e in container["env"] if e["name"] not in _GANG_ENV]
    env += [
        {
            # Also injected by the Job controller; declared so $(JOB_COMPLETION_INDEX) in the
            # command always expands.
            "name": "JOB_COMPLETION_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
        },
        {"name": "USINA_DIST_BACKEND", "value": "nccl" if gpus else "gloo"},
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(spec.port)},
        {"name": "TORCH_NCCL_ASYNC_ERROR_HANDLING", "value": "1"},
    ]
    container["env"] = env
    container["ports"] = [{"name": "rdzv", "containerPort": spec.port, "protocol": "TCP"}]
    job["metadata"]["annotations"][GANG_ANNOTATION] = f"{spec.nodes}x{spec.procs_per_node}"
    if spec.elastic:
        job["metadata"]["annotations"].update(
            {
                MIN_PARALLELISM: str(spec.fewest_nodes),
                COMPLETIONS_EQUAL_PARALLELISM: "true",
            }
        )

    labels = {k: v for k, v in job["metadata"]["labels"].items() if not k.startswith("kueue.")}
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service,
            "namespace": job["metadata"]["namespace"],
            "labels": labels,
            "annotations": {ATTEMPT_ANNOTATION: task.attempt_id},
        },
        "spec": {
            "clusterIP": "None",
            # Rank 0's name must resolve before its pod is Ready, or the other ranks' first
            # rendezvous attempts fail on DNS (pytorch/pytorch#73682).
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: name},
            "ports": [{"name": "rdzv", "port": spec.port, "targetPort": spec.port}],
        },
    }
    return headless, job


_GANG_ENV = frozenset({"JOB_COMPLETION_INDEX", "USINA_DIST_BACKEND", "MASTER_ADDR", "MASTER_PORT"})


def render_gang(task: Task, settings: KubernetesSettings) -> list[dict[str, Any]]:
    """The objects in creation order: the Service first, so rank 0's name exists when pods start."""
    service, job = build_gang(task, settings)
    return [service, dict(job)]
