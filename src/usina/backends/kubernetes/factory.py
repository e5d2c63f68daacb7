"""The ``kubernetes`` entry of the ``usina.backends`` group: the backend from its options.

Options (all optional): ``namespace``, ``queue``, ``image`` (see ``KubernetesSettings``), and
``context``/``kubeconfig`` (which cluster: default the in-cluster service account, else the
kubeconfig's current context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from usina.backends.kubernetes.settings import KubernetesSettings
from usina.errors import MissingExtraError

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
SETTINGS_OPTIONS = ("namespace", "queue", "image")


def kubernetes_settings(options: Mapping[str, Any]) -> KubernetesSettings:
    values = {k: options[k] for k in SETTINGS_OPTIONS if options.get(k) is not None}
    return KubernetesSettings(**values)


def kubernetes_backend(request: BackendRequest) -> Backend:
    try:
        from usina.backends.kubernetes.backend import KubernetesBackend
        from usina.backends.kubernetes.client import api_client
    except ImportError as exc:
        raise MissingExtraError("kubernetes", "k8s") from exc
    options = dict(request.options)
    client = api_client(options.get("context"), options.get("kubeconfig"))
    backend: Backend = KubernetesBackend(kubernetes_settings(options), client, request.artifacts)
    return backend
