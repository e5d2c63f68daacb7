"""An LLM endpoint on GPUs: vLLM's OpenAI-compatible server as a Deployment and a Service.

usina serves small models itself (``usina serve`` on CPU, continuous batching in Python); on a
GPU cluster the engine is vLLM, behind the same OpenAI API, so clients do not change. The
rendered pod:

- an init container (usina's image) copies the registered checkpoint out of MLflow
  (``python -m usina.llm fetch models:/NAME@ALIAS /models/NAME``) into a shared volume, since
  vLLM reads a plain checkpoint directory; a model that is not a ``models:/`` URI (a Hugging
  Face id, a path on a mounted volume) is handed to vLLM as it is;
- the vLLM container with ``--tensor-parallel-size`` equal to the GPU count (one pod, all its
  GPUs), ``nvidia.com/gpu`` requests and limits, a memory-backed ``/dev/shm`` (NCCL and
  PyTorch share tensors through it between tensor-parallel workers), the scheduler limits
  (``--max-num-seqs``, ``--max-model-len``, ``--gpu-memory-utilization``) and probes on
  ``/health`` (startup allows for minutes of weight loading).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from usina.errors import DefinitionError

Obj = dict[str, Any]
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
USINA_IMAGE = "ghcr.io/usina/usina:0.1.0"
PORT = 8000
MODELS_DIR = "/models"


@dataclass(frozen=True, slots=True)
class VllmEndpoint:
    """One GPU LLM endpoint.

    gpus: GPUs of the pod; the tensor-parallel size (it must divide the model's attention
        heads, which vLLM checks at start).
    gpu_type: a ``nvidia.com/gpu.product`` node label value (GPU feature discovery), or None.
    shm_size: size of the memory-backed /dev/shm.
    max_num_seqs / max_model_len / gpu_memory_utilization: vLLM's scheduler and KV-cache
        budget (None: vLLM's default).
    """

    name: str
    model: str
    gpus: int = 1
    gpu_type: str | None = None
    replicas: int = 1
    image: str = VLLM_IMAGE
    fetch_image: str = USINA_IMAGE
    max_num_seqs: int | None = 256
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.90
    shm_size: str = "8Gi"
    cpu: str = "8"
    memory: str = "64Gi"
    tracking_uri: str | None = None
    extra_args: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        found = []
        if not _DNS_LABEL.match(self.name) or len(self.name) > 50:
            found.append(f"name {self.name!r} must be a DNS label of at most 50 characters")
        if not self.model.strip():
            found.append("the model is empty (models:/NAME@ALIAS, or a Hugging Face id)")
        if self.gpus < 1:
            found.append(f"gpus must be at least 1 (vLLM needs a GPU), not {self.gpus}")
        if self.replicas < 1:
            found.append(f"replicas must be at least 1, not {self.replicas}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            found.append(
                f"gpu_memory_utilization must be in (0, 1], not {self.gpu_memory_utilization}"
            )
        return found

    @property
    def from_registry(self) -> bool:
        return self.model.startswith("models:/")

    def vllm_args(self) -> list[str]:
        served = f"{MODELS_DIR}/{self.name}" if self.from_registry else self.model
        args = [
            "--model", served,
            "--served-model-name", self.name,
            "--host", "0.0.0.0",
            "--port", str(PORT),
            "--tensor-parallel-size", str(self.gpus),
            "--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}",
        ]  # fmt: skip
        if self.max_num_seqs is not None:
            args += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        return args + list(self.extra_args)


def render_vllm(endpoint: VllmEndpoint, namespace: str = "default") -> list[Obj]:
    """The Deployment and Service of ``endpoint``."""
    problems = endpoint.problems()
    if problems:
        raise DefinitionError(
            f"cannot deploy LLM endpoint {endpoint.name!r}: " + "; ".join(problems)
        )
    name = f"llm-{endpoint.name}"
    labels = {
        "app.kubernetes.io/name": "usina",
        "app.kubernetes.io/component": "llm",
        "app.kubernetes.io/instance": name,
        **endpoint.labels,
    }
    selector = {"app.kubernetes.io/component": "llm", "app.kubernetes.io/instance": name}
    gpu = {"nvidia.com/gpu": str(endpoint.gpus)}
    security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    env = [{"name": "HF_HOME", "value": f"{MODELS_DIR}/.cache"}]
    volumes: list[Obj] = [
        {"name": "models", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": endpoint.shm_size}},
    ]
    init: list[Obj] = []
    if endpoint.from_registry:
        fetch_env = [{"name": "HOME", "value": "/tmp"}]
        if endpoint.tracking_uri:
            fetch_env.append({"name": "MLFLOW_TRACKING_URI", "value": endpoint.tracking_uri})
        init.append(
            {
                "name": "fetch-model",
                "image": endpoint.fetch_image,
                "command": ["python", "-m", "usina.llm", "fetch"],
                "args": [endpoint.model, f"{MODELS_DIR}/{endpoint.name}"],
                "env": fetch_env,
                "resources": {
                    "requests": {"cpu": "1", "memory": "2Gi"},
                    "limits": {"memory": "4Gi"},
                },
                "securityContext": {**security, "runAsNonRoot": True},
                "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}],
            }
        )

    def probe(period: int, failures: int) -> Obj:
        return {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    container: Obj = {
        "name": "vllm",
        "image": endpoint.image,
        "args": endpoint.vllm_args(),
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "startupProbe": probe(10, 90),  # up to 15 minutes to load the weights
        "readinessProbe": probe(5, 3),
        "livenessProbe": probe(15, 4),
        "resources": {
            "requests": {"cpu": endpoint.cpu, "memory": endpoint.memory, **gpu},
            "limits": {"memory": endpoint.memory, **gpu},
        },
        "securityContext": security,
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    pod: Obj = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 60,
        "initContainers": init,
        "containers": [container],
        "volumes": volumes,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if endpoint.gpu_type:
        pod["nodeSelector"] = {"nvidia.com/gpu.product": endpoint.gpu_type}
    if not init:
        del pod["initContainers"]
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"usina.dev/model": endpoint.model, "usina.dev/engine": "vllm"},
        },
        "spec": {
            "replicas": endpoint.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            # A new pod needs GPUs of its own: surge only when the cluster has spare ones.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod,
            },
        },
    }
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]
