"""Server-side apply of rendered objects with the official ``kubernetes`` client.

Each object is sent as ``PATCH`` with ``Content-Type: application/apply-patch+yaml`` to its own
URL, with a field manager (``usina``) and ``force=true`` (usina owns the fields it renders, as
``kubectl apply --server-side --force-conflicts`` would). Creating and updating are the same call.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from usina.errors import DeployError, MissingExtraError, UsinaError

Obj = dict[str, Any]
FIELD_MANAGER = "usina"

#: The REST resource (plural) of each kind the serving template renders.
PLURALS: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
}


def object_path(obj: Obj) -> str:
    """The URL path of a namespaced object: ``/apis/apps/v1/namespaces/NS/deployments/NAME``."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    plural = PLURALS.get((api_version, kind))
    if plural is None:
        raise DeployError(f"usina deploy does not apply {kind} ({api_version}) objects")
    meta = obj["metadata"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def apply_objects(
    objects: list[Obj],
    api_client: Any,
    *,
    field_manager: str = FIELD_MANAGER,
    timeout: float = 30.0,
) -> list[str]:
    """Server-side apply ``objects`` in order; returns ``kind/name`` of each one applied.

    ``api_client`` is a configured ``kubernetes.client.ApiClient`` (kubeconfig or in-cluster);
    its host, TLS settings and credentials are used. Requests go through usina's one retrying
    Kubernetes client (``backends.kubernetes.client.KubeApi``: 429 and 5xx are retried) as raw
    PATCHes rather than generated API methods, whose signatures differ between client versions
    and which know no custom kinds.
    """
    try:
        from usina.backends.kubernetes.client import KubeApi
    except ImportError as exc:  # pragma: no cover - the deploy extra brings kubernetes
        raise MissingExtraError("kubernetes", "deploy") from exc
    api = KubeApi(api_client, request_timeout=timeout)
    headers = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}
    query = urlencode({"fieldManager": field_manager, "force": "true"})
    done: list[str] = []
    for obj in objects:
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        path = f"{object_path(obj)}?{query}"
        body = json.dumps(obj).encode()  # JSON is YAML
        try:
            resp = api.request("PATCH", path, body, headers)
        except UsinaError as exc:
            raise DeployError(f"the Kubernetes API at {api.host} is unreachable: {exc}") from exc
        if resp.status >= 400:
            raise DeployError(
                f"could not apply {what} in namespace {obj['metadata']['namespace']}: "
                f"{resp.status} {resp.reason}: {_message(resp.data)}"
                + (f" (applied before it: {', '.join(done)})" if done else "")
            )
        done.append(what)
    return done


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500]
