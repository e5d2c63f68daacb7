"""The ``kubernetes`` entry of the ``usina.backends`` group: the backend from its options.

Options are ``KubernetesSettings`` fields by name (``namespace``, ``queue``, ``image``,
``service_account``, ``priority_class``, ``image_pull_secrets``, ``env``, ``secret_env``,
``env_from_secrets``, ``env_from_config_maps``, ``node_selector``, ``tolerations``, ...), plus
``context``/``kubeconfig`` (which cluster: default the in-cluster service account, else the
kubeconfig's current context) and ``allow_local_artifacts`` (accept an artifact store on this
machine's disk, for a one-node cluster that mounts it). The values are checked against
Kubernetes' naming rules (``validation``): a bad one is a ``DefinitionError`` naming the rule,
never a rewritten name.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from usina.backends.kubernetes.settings import KubernetesSettings
from usina.backends.kubernetes.validation import shared_artifacts_problem
from usina.errors import DefinitionError, MissingExtraError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.engine.ports import ArtifactStore, Backend


class BackendRequest(Protocol):
    """What the composition root passes (``usina.compose.backends.BackendRequest``); named
    structurally so this adapter does not import the layer above it."""

    @property
    def artifacts(self) -> ArtifactStore: ...
    @property
    def options(self) -> Mapping[str, Any]: ...


#: Options that are ``KubernetesSettings`` fields (the others choose the cluster).
SETTINGS_OPTIONS = tuple(f.name for f in dataclasses.fields(KubernetesSettings))
#: Options that are not settings.
OTHER_OPTIONS = ("context", "kubeconfig", "allow_local_artifacts")
_TUPLES = {
    "image_pull_secrets",
    "env_from_secrets",
    "env_from_config_maps",
    "tolerations",
    "gpu_tolerations",
}


def kubernetes_settings(options: Mapping[str, Any]) -> KubernetesSettings:
    """``KubernetesSettings`` from options by name; ``DefinitionError`` (exit 2) for an unknown
    option or a value Kubernetes would refuse."""
    unknown = sorted(set(options) - set(SETTINGS_OPTIONS) - set(OTHER_OPTIONS))
    if unknown:
        raise DefinitionError(
            f"unknown kubernetes backend option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted((*SETTINGS_OPTIONS, *OTHER_OPTIONS)))}"
        )
    values: dict[str, Any] = {}
    for key in SETTINGS_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        values[key] = tuple(value) if key in _TUPLES else value
    try:
        settings = KubernetesSettings(**values)
    except TypeError as exc:
        raise DefinitionError(f"invalid kubernetes backend options: {exc}") from exc
    problems = settings.problems()
    if problems:
        raise DefinitionError("invalid Kubernetes settings: " + "; ".join(problems))
    return settings


def require_shared_artifacts(url: str, options: Mapping[str, Any]) -> None:
    """Refuse an artifact store the Jobs' pods cannot reach (``DefinitionError``, exit 2)."""
    problem = None if options.get("allow_local_artifacts") else shared_artifacts_problem(url)
    if problem is not None:
        raise DefinitionError(problem)


def kubernetes_backend(request: BackendRequest) -> Backend:
    options = dict(request.options)
    settings = kubernetes_settings(options)
    require_shared_artifacts(request.artifacts.url, options)
    try:
        from usina.backends.kubernetes.backend import KubernetesBackend
        from usina.backends.kubernetes.client import api_client
    except ImportError as exc:
        raise MissingExtraError("kubernetes", "k8s") from exc
    client = api_client(options.get("context"), options.get("kubeconfig"))
    backend: Backend = KubernetesBackend(settings, client, request.artifacts)
    return backend
