"""Build the engine's components from settings: the one place that picks implementations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from usina.backends.local import LocalBackend
from usina.cli.settings import Settings
from usina.engine.engine import Engine, EngineSettings
from usina.engine.ports import ArtifactStore, MetadataStore, Tracker
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.sql import SqlMetadataStore


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
) -> Engine:
    settings = comps.settings
    artifacts: ArtifactStore = comps.artifacts
    metadata: MetadataStore = comps.metadata
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
