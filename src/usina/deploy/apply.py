"""Server-side apply of rendered objects with the official ``kubernetes`` client.

Each object is sent as ``PATCH`` with ``Content-Type: application/apply-patch+yaml`` to its own
URL, with a field manager (``usina``) and ``force=true`` (usina owns the fields it renders, as
``kubectl apply --server-side --force-conflicts`` would). Creating and updating are the same call.
"""

from __future__ import annotations

import json
from typing import Any

from usina.errors import DeployError, MissingExtraError

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
    objects: list[Obj], api_client: Any, *, field_manager: str = FIELD_MANAGER
) -> list[str]:
    """Server-side apply ``objects`` in order; returns ``kind/name`` of each one applied."""
    try:
        from kubernetes.client.exceptions import ApiException
    except ImportError as exc:  # pragma: no cover - kubernetes comes with the deploy extra
        raise MissingExtraError("kubernetes", "deploy") from exc
    done: list[str] = []
    for obj in objects:
        path = object_path(obj)
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            resp = api_client.call_api(
                path,
                "PATCH",
                query_params=[("fieldManager", field_manager), ("force", "true")],
                header_params={
                    "Content-Type": "application/apply-patch+yaml",
                    "Accept": "application/json",
                },
                # JSON is YAML; a string body is sent as it is by every client version.
                body=json.dumps(obj),
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
            resp.release_conn()
        except ApiException as exc:
            raise DeployError(
                f"could not apply {what} in namespace {obj['metadata']['namespace']}: "
                f"{exc.status} {exc.reason}: {_message(exc)}"
                + (f" (applied before it: {', '.join(done)})" if done else "")
            ) from exc
        except OSError as exc:
            raise DeployError(f"the Kubernetes API is unreachable: {exc}") from exc
        done.append(what)
    return done


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "")
