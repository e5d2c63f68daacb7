"""Build the engine's components from settings: the one place that picks implementations."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from usina.backends.local import LocalBackend
from usina.cli.settings import Settings
from usina.engine.engine import Engine, EngineSettings, attempt_id, new_run_id
from usina.engine.ports import ArtifactStore, Backend, MetadataStore, Task, Tracker
from usina.errors import MissingExtraError
from usina.sdk.pipeline import Plan
from usina.sdk.resources import Resources
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.sql import SqlMetadataStore


@dataclass(frozen=True)
class KubernetesOptions:
    """Where and how steps run on Kubernetes (see ``KubernetesSettings`` for the rest)."""

    namespace: str | None = None
    queue: str | None = None
    image: str | None = None

    def settings(self) -> Any:
        from usina.backends.kubernetes import KubernetesSettings

        values: dict[str, Any] = {k: v for k, v in vars(self).items() if v is not None}
        return KubernetesSettings(**values)


def kubernetes_backend(options: KubernetesOptions, artifacts: ArtifactStore) -> Backend:
    """The Kubernetes backend with kubeconfig, or the in-cluster service account."""
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise MissingExtraError("kubernetes", "k8s") from exc
    from usina.backends.kubernetes import KubernetesBackend

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    backend: Backend = KubernetesBackend(options.settings(), client.ApiClient(), artifacts)
    return backend


def render_plan(plan: Plan, options: KubernetesOptions, settings: Settings) -> list[dict[str, Any]]:
    """The manifests of every step's first attempt, as ``usina run --backend kubernetes``
    would create them (inputs are only known at run time and travel in the task record)."""
    from usina.backends.kubernetes import render_task_manifests

    k8s = options.settings()
    run_id = new_run_id(plan.pipeline, time.time())
    objects: list[dict[str, Any]] = []
    for node in plan.nodes:
        task = Task(
            attempt_id=attempt_id(run_id, node.id, 1),
            run_id=run_id,
            pipeline=plan.pipeline,
            node=node.to_json(),
            number=1,
            resources=Resources.from_json(dict(node.resources)),
            inputs={},
            artifacts_url=settings.artifacts_url,
            params=dict(plan.params),
            timeout=node.timeout,
            labels={
                "usina.dev/run": run_id,
                "usina.dev/step": node.id,
                "usina.dev/pipeline": plan.pipeline,
                "usina.dev/attempt": "1",
            },
        )
        objects += render_task_manifests(task, k8s)
    return objects


@dataclass
class Components:
    settings: Settings
    metadata: SqlMetadataStore
    artifacts: FsspecArtifactStore

    def close(self) -> None:
        self.metadata.close()


def open_stores(settings: Settings) -> Components:
    os.makedirs(settings.home, exist_ok=True)
    return Components(
        settings=settings,
        metadata=SqlMetadataStore(settings.database_url),
        artifacts=FsspecArtifactStore(settings.artifacts_url),
    )


def make_tracker(settings: Settings, experiment: str) -> Tracker:
    from usina.tracking.mlflow import MlflowTracker

    return MlflowTracker(tracking_uri=settings.tracking_uri, experiment=experiment)


def make_engine(
    comps: Components,
    *,
    preload: Sequence[str] = (),
    tracker: Tracker | None = None,
    max_parallel: int | None = None,
    use_cache: bool = True,
    kubernetes: KubernetesOptions | None = None,
) -> Engine:
    settings = comps.settings
    artifacts: ArtifactStore = comps.artifacts
    metadata: MetadataStore = comps.metadata
    backend: Backend
    if kubernetes is not None:
        backend = kubernetes_backend(kubernetes, artifacts)
    else:
        backend = LocalBackend(settings.attempts_dir, artifacts, preload=preload)
    env = {}
    if tracker is not None:
        env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    return Engine(
        backend=backend,
        metadata=metadata,
        artifacts=artifacts,
        tracker=tracker,
        settings=EngineSettings(
            max_parallel=max_parallel or settings.max_parallel,
            poll_interval=1.0,
            use_cache=use_cache,
            env=env,
        ),
    )
