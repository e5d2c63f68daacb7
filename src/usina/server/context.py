"""Everything one server process works with, built once from its settings: the stores, the
pipelines it accepts, an engine for the API's writes, and the reconciler. The backend is chosen
by name (``ServerSettings.backend``) and built, like the engines, by the composition root
(``usina.compose``)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from usina.compose.backends import BackendRequest, make_backend
from usina.compose.components import build_engine, image_environment, tracked_env
from usina.compose.projects import ProjectBackend, ProjectBackends
from usina.engine.engine import Engine, EngineSettings
from usina.server.auth import TokenCache
from usina.server.models import MlflowModels, ModelRegistry
from usina.server.notify import Notifier
from usina.server.reconciler import Reconciler
from usina.server.registry import PipelineRegistry
from usina.server.scheduler import Scheduler, SchedulerSettings
from usina.server.tracking import PipelineTrackers
from usina.server.triggers import TriggerWatcher, WatcherSettings, registry_aliases
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.platform import PlatformStore
from usina.stores.schedules import ScheduleStore
from usina.stores.sql import SqlMetadataStore
from usina.stores.triggers import TriggerStore

if TYPE_CHECKING:
    from usina.engine.ports import Backend
    from usina.server.settings import ServerSettings

log = logging.getLogger(__name__)


def open_backends(
    settings: ServerSettings,
    artifacts: FsspecArtifactStore,
    metadata: SqlMetadataStore,
    preload: tuple[str, ...],
) -> Backend:
    """The server's backend: the default one, or, with per-project settings, one backend per
    distinct (name, options) that sends each run's attempts to its project's
    (``ProjectBackends``)."""

    def build(choice: ProjectBackend) -> Backend:
        return make_backend(
            choice.backend,
            BackendRequest(
                artifacts=artifacts,
                attempts_dir=settings.attempts_dir,
                preload=preload,
                options=choice.options,
            ),
        )

    default_choice = ProjectBackend(settings.backend, dict(settings.backend_options))
    default = build(default_choice)
    if not settings.projects:
        return default
    built: dict[str, Backend] = {_key(default_choice): default}
    per_project: dict[str, Backend] = {}
    for project, choice in settings.projects.items():
        key = _key(choice)
        if key not in built:
            built[key] = build(choice)
        per_project[project] = built[key]
    projects: dict[str, str] = {}

    def project_of(run_id: str) -> str:
        if run_id not in projects:
            projects[run_id] = metadata.get_run(run_id).project
        return projects[run_id]

    return ProjectBackends(default, per_project, project_of)


def _key(choice: ProjectBackend) -> str:
    return json.dumps([choice.backend, dict(choice.options)], sort_keys=True, default=str)


@dataclass
class ServerContext:
    settings: ServerSettings
    metadata: SqlMetadataStore
    artifacts: FsspecArtifactStore
    platform: PlatformStore
    pipelines: PipelineRegistry
    engine: Engine  # for the API's submit, cancel and resume
    reconciler: Reconciler | None
    models: ModelRegistry | None
    tokens: TokenCache = field(default_factory=TokenCache)
    schedules: ScheduleStore = field(init=False)  # set by __post_init__ from the settings
    scheduler: Scheduler = field(init=False)
    notifier: Notifier = field(init=False)
    triggers: TriggerStore = field(init=False)
    watcher: TriggerWatcher = field(init=False)

    def changed(self, run_id: str) -> None:
        """A write here changed ``run_id`` (a cancel, a resume): have this replica's reconciler
        look at it on its next pass, not at its next resync. A run another replica holds is
        seen there at its resync (``ReconcilerSettings.resync_interval``)."""
        if self.reconciler is not None:
            self.reconciler.wake(run_id)

    def __post_init__(self) -> None:
        # Schedules live in the platform database; every replica runs the scheduler, and the
        # run id of a tick (derived from the tick alone) makes each tick one run (see
        # usina.server.scheduler).
        self.schedules = ScheduleStore(self.settings.database_url)
        enabled = self.reconciler is not None
        self.scheduler = Scheduler(
            self.schedules, self.pipelines, self.engine, SchedulerSettings(enabled=enabled)
        )
        # Triggers likewise: every replica watches; a run's id derives from its cause.
        self.triggers = TriggerStore(self.settings.database_url)
        self.watcher = TriggerWatcher(
            self.triggers, self.pipelines, self.engine,
            registry_aliases(self.models) if self.models is not None else None,
            WatcherSettings(enabled=enabled),
        )  # fmt: skip
        hooks = self.settings.webhooks if enabled else ()
        self.notifier = Notifier(self.metadata, hooks, base_url=self.settings.external_url)

    @classmethod
    def open(cls, settings: ServerSettings) -> ServerContext:
        pipelines = PipelineRegistry(settings.pipelines)
        metadata = SqlMetadataStore(settings.database_url)
        artifacts = FsspecArtifactStore(settings.artifacts_url)
        platform = PlatformStore(settings.database_url)
        os.makedirs(settings.attempts_dir, exist_ok=True)
        backend = open_backends(settings, artifacts, metadata, tuple(pipelines.files))
        rs = settings.reconciler
        engine_settings = EngineSettings(
            max_parallel=rs.max_parallel,
            lease_ttl=rs.lease_ttl,
            poll_interval=rs.poll_interval,
            # Steps in the default backend's image key on it (its digest when pinned). One
            # engine serves every project: a project's own image does not enter its keys.
            environment=image_environment(settings.backend_options.get("image")),
        )
        trackers = PipelineTrackers(pipelines, settings.mlflow_tracking_uri())
        tracker = trackers if trackers.tracking() else None
        if tracker is not None:
            engine_settings = replace(
                engine_settings, env=tracked_env(settings.mlflow_tracking_uri())
            )
        driver = build_engine(
            backend=backend,
            metadata=metadata,
            artifacts=artifacts,
            settings=engine_settings,
            tracker=tracker,
        )
        api_engine = build_engine(
            backend=backend,
            metadata=metadata,
            artifacts=artifacts,
            settings=engine_settings,
            owner=driver.owner,
        )
        reconciler = Reconciler(driver, platform, rs) if rs.enabled else None
        models: ModelRegistry | None = None
        if settings.registry_uri:
            models = MlflowModels(settings.registry_uri)
        return cls(
            settings=settings,
            metadata=metadata,
            artifacts=artifacts,
            platform=platform,
            pipelines=pipelines,
            engine=api_engine,
            reconciler=reconciler,
            models=models,
        )

    def start(self) -> None:
        if self.reconciler is not None:
            self.reconciler.start()
        self.scheduler.start()
        self.watcher.start()
        self.notifier.start()

    def close(self) -> None:
        self.scheduler.stop()
        self.notifier.stop()
        self.schedules.close()
        self.watcher.stop()
        self.triggers.close()
        if self.reconciler is not None:
            self.reconciler.stop()
        self.engine.backend.close()
        self.platform.close()
        self.metadata.close()
