"""Build the engine's components: stores, tracker, backend (by name) and engine.

The CLI (``usina run``, ``runs resume``, ``runs cancel``, ``k8s render``) and the server
(``ServerContext.open``) build through these functions, so they pick implementations the same
way; ``plan_tasks`` builds each Task with the engine's own builder (``build_task``), so what
it prints is what a run submits.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.compose.backends import BackendRequest, make_backend
from usina.engine.engine import Engine, EngineSettings
from usina.engine.ports import log_key
from usina.engine.tasks import build_task, new_run_id, task_env
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.sql import SqlMetadataStore

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from usina.compose.settings import Settings
    from usina.engine.ports import ArtifactStore, Backend, MetadataStore, Task, Tracker
    from usina.sdk.pipeline import Plan


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """Which backend runs the steps, by its name in the ``usina.backends`` group, and its own
    options (``kubernetes``: namespace, queue, image, context, kubeconfig)."""

    name: str = "local"
    options: Mapping[str, Any] = field(default_factory=dict)


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


def make_tracker(tracking_uri: str, experiment: str) -> Tracker:
    from usina.tracking.mlflow import MlflowTracker

    return MlflowTracker(tracking_uri=tracking_uri, experiment=experiment)


def tracked_env(tracking_uri: str | None) -> dict[str, str]:
    """What every attempt's environment gets from the engine's settings."""
    return {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}


def build_engine(
    *,
    backend: Backend,
    metadata: MetadataStore,
    artifacts: ArtifactStore,
    settings: EngineSettings,
    tracker: Tracker | None = None,
    owner: str | None = None,
) -> Engine:
    kwargs: dict[str, Any] = {} if owner is None else {"owner": owner}
    return Engine(
        backend=backend,
        metadata=metadata,
        artifacts=artifacts,
        tracker=tracker,
        settings=settings,
        **kwargs,
    )


def make_engine(
    comps: Components,
    *,
    preload: Sequence[str] = (),
    tracker: Tracker | None = None,
    max_parallel: int | None = None,
    use_cache: bool = True,
    backend: BackendChoice | None = None,
) -> Engine:
    """The CLI's engine over ``comps``' stores, on ``backend`` (default: local)."""
    settings = comps.settings
    choice = backend or BackendChoice()
    request = BackendRequest(
        artifacts=comps.artifacts,
        attempts_dir=settings.attempts_dir,
        preload=tuple(preload),
        options=choice.options,
    )
    return build_engine(
        backend=make_backend(choice.name, request),
        metadata=comps.metadata,
        artifacts=comps.artifacts,
        tracker=tracker,
        settings=EngineSettings(
            max_parallel=max_parallel or settings.max_parallel,
            poll_interval=1.0,
            use_cache=use_cache,
            env=tracked_env(settings.tracking_uri if tracker is not None else None),
            environment=image_environment(choice.options.get("image")),
        ),
    )


def image_environment(image: str | None) -> str | None:
    """The cache keys' environment when steps run in ``image`` (a backend's ``image``
    option): the image's digest when the reference pins one, else the reference
    (``usina.engine.cache.image_identity`` says why) enters the fingerprint, so another image
    re-runs the steps. None: this process's environment (``engine.cache``)."""
    if not image:
        return None
    from usina.engine.cache import environment_fingerprint, image_identity

    return environment_fingerprint(extra=f"image:{image_identity(image)}")


def plan_tasks(
    plan: Plan,
    *,
    artifacts_url: str,
    run_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Task]:
    """The Task of every step's first attempt, as the engine would launch it for a run of
    ``plan`` with ``labels`` (inputs are only known at run time and travel in the task record).

    ``env`` is the engine's own attempt environment (``EngineSettings.env``); each step's
    declared ``env`` names are read from ``environ`` (default: this process's), as the engine
    does when it launches the attempt.
    """
    rid = run_id or new_run_id(plan.pipeline, time.time())
    return [
        build_task(
            plan,
            node,
            run_id=rid,
            artifacts_url=artifacts_url,
            run_labels=dict(labels or {}),
            env=task_env(node, base=env, environ=environ),
        )
        for node in plan.nodes
    ]


def read_attempt_log(artifacts: ArtifactStore, backend: Backend, attempt_id: str) -> str:
    """An attempt's output: the copy kept in the artifact store once it ended, else what its
    backend has now (through the ``Backend`` port, whatever the backend keeps it in)."""
    raw = artifacts.read_record(log_key(attempt_id))
    if raw is not None:
        return raw.decode(errors="replace")
    return backend.logs(attempt_id)


def attempt_logs(comps: Components, attempt_id: str, backend: str | None = None) -> str:
    """``read_attempt_log`` for the CLI, which holds no backend: the one that ran the attempt
    (by its recorded name, default options) is built only when the log was not copied yet."""
    raw = comps.artifacts.read_record(log_key(attempt_id))
    if raw is not None:
        return raw.decode(errors="replace")
    request = BackendRequest(artifacts=comps.artifacts, attempts_dir=comps.settings.attempts_dir)
    opened = make_backend(backend or "local", request)
    try:
        return opened.logs(attempt_id)
    finally:
        opened.close()
