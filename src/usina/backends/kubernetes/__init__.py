"""The Kubernetes backend: each attempt of a step runs as one ``batch/v1`` Job.

``settings`` and ``manifests`` are pure and import no Kubernetes client, so manifests render
without the ``k8s`` extra; ``KubernetesBackend`` needs it (``pip install 'usina[k8s]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from usina.backends.kubernetes.manifests import build_job, job_name, render_task_manifests
from usina.backends.kubernetes.settings import KubernetesSettings

if TYPE_CHECKING:
    from usina.backends.kubernetes.backend import KubernetesBackend

__all__ = [
    "KubernetesBackend",
    "KubernetesSettings",
    "build_job",
    "job_name",
    "render_task_manifests",
]


def __getattr__(name: str) -> Any:
    if name == "KubernetesBackend":
        from usina.backends.kubernetes.backend import KubernetesBackend

        return KubernetesBackend
    raise AttributeError(name)
