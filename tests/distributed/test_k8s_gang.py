"""The Kubernetes objects of a 4-node x 8-GPU distributed step: a headless Service and an
Indexed Job, valid against the official schemas (strict) of Kubernetes 1.31 and the newest
version ``kubernetes-validate`` knows, and shaped for gang semantics."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from tests.k8s.support import make_task
from usina import Resources, Torchrun
from usina.backends.kubernetes import KubernetesSettings, render_task_manifests

OLDEST = "1.31.0"
NEWEST = kv_utils.latest_version()


def gang_manifests(spec: Torchrun | None = None, **settings_changes: object) -> list[dict]:
    settings = KubernetesSettings(
        namespace="ml", image="registry.example.com/usina/fraud:1.4.2", **settings_changes
    )
    task = make_task(
        "fraud-20261127-1200-train-1",
        resources=Resources(cpu=64, memory="900Gi", gpus=8, gpu_type="NVIDIA-H100-80GB-HBM3"),
        timeout=86400,
        node_extra={"distributed": (spec or Torchrun(nodes=4, procs_per_node=8)).to_json()},
    )
    return json.loads(json.dumps(render_task_manifests(task, settings)))  # plain JSON, as sent


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("queue", [None, "team-risk"])
def test_gang_validates_strictly(version: str, queue: str | None) -> None:
    objects = gang_manifests(queue=queue)
    assert [o["kind"] for o in objects] == ["Service", "Job"]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_indexed_job_and_headless_service_make_one_gang() -> None:
    service, job = gang_manifests(queue="team-risk")
    name = job["metadata"]["name"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimit"] == 0
    assert spec["podReplacementPolicy"] == "Failed"
    rules = spec["podFailurePolicy"]["rules"]
    assert {r["action"] for r in rules} == {"FailJob"}  # a disruption too: the gang restarts
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    # Gang admission: Kueue admits the Job (all 4 pods) as one workload.
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-risk"
    assert "kueue.x-k8s.io/queue-name" not in service["metadata"]["labels"]

    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    main = pod["containers"][0]
    master = f"{name}-0.{service['metadata']['name']}"
    assert main["command"][:6] == [
        "torchrun",
        "--nnodes=4",
        "--nproc-per-node=8",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={master}",
        "--master-port=29500",
    ]
    assert main["command"][-5:] == [
        "usina.runtime",
        "--artifacts",
        "s3://bucket/usina",
        "--attempt",
        "fraud-20261127-1200-train-1",
    ]
    env = {e["name"]: e for e in main["env"]}
    assert env["USINA_DIST_BACKEND"]["value"] == "nccl"
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    # Resources are per node (pod): 8 GPUs each, 32 in all.
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert any(m["mountPath"] == "/dev/shm" for m in main["volumeMounts"])


def test_long_names_keep_pod_hostnames_within_63_characters() -> None:
    settings = KubernetesSettings(namespace="ml", image="img:1")
    task = make_task(
        "a-very-long-pipeline-name-20261127-120000-abcd-train-with-many-words-1",
        node_extra={"distributed": Torchrun(nodes=16, procs_per_node=8).to_json()},
    )
    service, job = render_task_manifests(task, settings)
    assert job["metadata"]["name"] == service["metadata"]["name"]
    assert len(job["metadata"]["name"] + "-15") <= 63
    for obj in (service, job):
        kubernetes_validate.validate(json.loads(json.dumps(obj)), NEWEST, strict=True)


def test_single_pod_steps_are_unchanged() -> None:
    settings = KubernetesSettings(namespace="ml", image="img:1")
    [job] = render_task_manifests(make_task("r1-train-1"), settings)
    assert "completionMode" not in job["spec"]
    assert job["metadata"]["name"] == "r1-train-1"


def test_the_pod_command_parses_as_torchrun_does() -> None:
    """torchrun's own parser reads the pod's command (with the index the kubelet substitutes):
    static rendezvous on rank 0's pod, this pod's node rank, no in-place restarts."""
    from torch.distributed.run import get_args_parser

    service, job = gang_manifests()
    name = job["metadata"]["name"]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "torchrun"
    argv = [arg.replace("$(JOB_COMPLETION_INDEX)", "3") for arg in command[1:]]
    args = get_args_parser().parse_args(argv)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("4", "8", 3)
    assert args.rdzv_backend == "static"
    assert args.master_addr == f"{name}-0.{service['metadata']['name']}"
    assert (args.master_port, args.max_restarts) == (29500, 0)
    assert args.module
    assert args.training_script == "usina.runtime"
    assert args.training_script_args == [
        "--artifacts",
        "s3://bucket/usina",
        "--attempt",
        "fraud-20261127-1200-train-1",
    ]


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_an_elastic_gang_asks_kueue_for_partial_admission(version: str) -> None:
    """``Torchrun(nodes=(2, 4))``: 4 pods asked, Kueue's partial-admission annotations with the
    minimum, and torchrun's dynamic rendezvous (``--nnodes=2:4``, c10d on rank 0's pod) as
    torchrun's own parser reads it; a fixed gang carries neither."""
    from torch.distributed.run import get_args_parser

    service, job = gang_manifests(Torchrun(nodes=(2, 4), procs_per_node=8), queue="team-risk")
    for obj in (service, job):
        kubernetes_validate.validate(obj, version, strict=True)
    annotations = job["metadata"]["annotations"]
    assert annotations["kueue.x-k8s.io/job-min-parallelism"] == "2"
    assert annotations["kueue.x-k8s.io/job-completions-equal-parallelism"] == "true"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-risk"
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (4, 4)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    args = get_args_parser().parse_args(command[1:])
    assert (args.nnodes, args.nproc_per_node) == ("2:4", "8")
    assert args.rdzv_backend == "c10d"
    name = job["metadata"]["name"]
    assert args.rdzv_endpoint == f"{name}-0.{service['metadata']['name']}:29500"
    assert args.rdzv_id == "fraud-20261127-1200-train-1"
    assert args.max_restarts == 0
    assert args.rdzv_conf == "join_timeout=300"
    assert "$(JOB_COMPLETION_INDEX)" not in " ".join(command)  # the rendezvous assigns ranks

    _, fixed = gang_manifests()
    assert not {k for k in fixed["metadata"]["annotations"] if k.startswith("kueue.x-k8s.io/job-")}
