"""The server's trigger watcher: turns causes into runs, once per cause, on every replica alike.

Every pass (``run_once``), for each trigger that is not paused, the watcher observes what its
kind watches — the alias's version in the MLflow registry, the upstream pipeline's succeeded
runs, the objects under the prefix — and ``usina.scheduling.triggers`` says which causes are new.
For each one the watcher

1. creates the run with the id derived from the cause (``triggered_run_id``), its labels
   ``trigger`` and ``trigger-cause``, the cause's parameters that the pipeline declares, and a
   ``run_triggered`` event that says why; a replica that loses the race, or one that restarted
   after creating it, finds "exists already" and counts it as done;
2. records the cause as handled (``trigger_firings``).

An alias's move is first claimed (a compare-and-set of the trigger's state that numbers the
move and marks it pending), then run, then marked handled; a pass that finds a pending move runs
it (its id is fixed by the claim), so a replica killed after claiming loses nothing.

Because (1) happens before (2), a replica SIGKILLed between them leaves the cause unrecorded:
the next pass (on any replica) sees it again, finds its run, and records it. No cause is lost and
none runs twice. Creating a trigger records its baseline (``baseline``): the alias's version and
the objects under the prefix at that moment never fire.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from usina.engine.records import Event, RunId, RunState
from usina.errors import NotFoundError, StateError, StoreError, UsinaError
from usina.i18n import N_, error
from usina.scheduling.triggers import (
    EXISTS,
    STARTED,
    Cause,
    Trigger,
    TriggerKind,
    UpstreamRun,
    alias_cause,
    alias_state,
    handled,
    object_causes,
    pending_cause,
    run_params,
    succeeded_causes,
    triggered_run_id,
    validate,
)
from usina.server.periodic import Periodic
from usina.server.scheduler import _crash_point
from usina.stores.objects import list_objects
from usina.stores.triggers import Firing

if TYPE_CHECKING:
    from collections.abc import Callable

    from usina.engine.engine import Engine
    from usina.scheduling.triggers import ObjectVersion
    from usina.server.models import ModelRegistry
    from usina.server.registry import PipelineRegistry
    from usina.stores.triggers import TriggerStore

log = logging.getLogger(__name__)

LABEL_TRIGGER = "trigger"
LABEL_CAUSE = "trigger-cause"
EVENT_KIND = "run_triggered"
_LABEL_MAX = 256  # GuardSettings.max_label_value's default


class Aliases(Protocol):
    """Which version a model's alias points at (None: the model or the alias does not exist)."""

    def __call__(self, model: str, alias: str) -> str | None: ...


def registry_aliases(models: ModelRegistry) -> Aliases:
    """The aliases of the server's model registry (``usina.server.models.ModelRegistry``)."""

    def version(model: str, alias: str) -> str | None:
        try:
            return models.get_model(model).aliases.get(alias)
        except NotFoundError:
            return None

    return version


@dataclass(frozen=True, slots=True)
class WatcherSettings:
    """interval: seconds between passes (default 10; each pass lists every ``objects`` prefix).
    upstream_window: the newest succeeded runs of an upstream pipeline looked at per pass
    (default 200)."""

    interval: float = 10.0
    upstream_window: int = 200
    enabled: bool = True


class TriggerWatcher:
    def __init__(
        self,
        store: TriggerStore,
        pipelines: PipelineRegistry,
        engine: Engine,
        aliases: Aliases | None = None,
        settings: WatcherSettings | None = None,
        *,
        objects: Callable[[str], list[ObjectVersion]] = list_objects,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.engine = engine
        self.aliases = aliases
        self.objects = objects
        self.clock = clock
        self.settings = settings or WatcherSettings()
        self._loop = Periodic("usina-triggers", self.run_once, self.settings.interval)
        self.passes = 0

    # -- creating a trigger ---------------------------------------------------------------

    def create(self, trigger: Trigger) -> Trigger:
        """Store ``trigger`` with its baseline: the alias's version and the objects under the
        prefix now are handled already; runs that finished before now never count."""
        validate(trigger.kind, trigger.spec, trigger.pipeline)
        baseline: list[str] = []
        state: dict[str, Any] = {}
        if trigger.kind is TriggerKind.ALIAS:
            version = self._alias(trigger)
            state = alias_state(version)
        elif trigger.kind is TriggerKind.OBJECTS:
            baseline = [o.key for o in self.objects(trigger.spec["prefix"])]
        made = Trigger(
            name=trigger.name, project=trigger.project, pipeline=trigger.pipeline,
            kind=trigger.kind, spec=trigger.spec, params=trigger.params, paused=trigger.paused,
            state=state,
        )  # fmt: skip
        return self.store.create(made, baseline=baseline, now=self.clock())

    def _alias(self, trigger: Trigger) -> str | None:
        if self.aliases is None:
            raise error(
                UsinaError,
                N_(
                    "alias triggers need the server's model registry: start `usina server` "
                    "with --registry-uri (or MLFLOW_TRACKING_URI)"
                ),
            )
        return self.aliases(trigger.spec["model"], trigger.spec["alias"])

    # -- one pass --------------------------------------------------------------------------

    def run_once(self) -> list[str]:
        """One pass over every trigger; the ids of the runs this pass created."""
        created: list[str] = []
        for trigger in self.store.list_triggers():
            if trigger.paused:
                continue
            try:
                created += self.check(trigger)
            except UsinaError as exc:
                log.warning("trigger %s/%s: %s", trigger.project, trigger.name, exc)
        self.passes += 1
        return created

    def check(self, trigger: Trigger) -> list[str]:
        """Observe one trigger and fire its new causes."""
        if trigger.kind is TriggerKind.ALIAS:
            return self._check_alias(trigger)
        seen = self.store.seen(trigger.project, trigger.name)
        if trigger.kind is TriggerKind.RUN_SUCCEEDED:
            runs = self.engine.metadata.list_runs(
                limit=self.settings.upstream_window, state=RunState.SUCCEEDED,
                pipeline=trigger.spec["pipeline"], project=trigger.project,
            )  # fmt: skip
            upstream = [UpstreamRun(r.id, r.finished_at or r.created_at) for r in runs]
            causes = succeeded_causes(trigger, upstream, seen)
        else:
            causes = object_causes(self.objects(trigger.spec["prefix"]), seen)
        created: list[str] = []
        for cause in causes:
            created += self._fire(trigger, cause)
        return created

    def _check_alias(self, trigger: Trigger) -> list[str]:
        pending = pending_cause(trigger)
        if pending is None:
            cause, claim = alias_cause(trigger, self._alias(trigger))
            if cause is None:
                return []
            if not self.store.advance(trigger, claim):
                return []  # another replica claimed a move first; the next pass sees it
            _crash_point("trigger-after-claim")
            trigger = self.store.get(trigger.project, trigger.name)
            pending = cause
        made = self._fire(trigger, pending)
        self.store.advance(trigger, handled(trigger))
        return made

    def _fire(self, trigger: Trigger, cause: Cause) -> list[str]:
        """Create the cause's run unless it exists, then record the cause; [run id] when this
        call made the run."""
        run_id = triggered_run_id(trigger, cause.key)
        made = self._create(trigger, cause, run_id)
        _crash_point("trigger-after-run")
        outcome = STARTED if made else EXISTS
        self.store.record(
            Firing(trigger.project, trigger.name, cause.key, cause.shown, outcome, run_id,
                   self.clock())
        )  # fmt: skip
        return [run_id] if made else []

    def _create(self, trigger: Trigger, cause: Cause, run_id: str) -> bool:
        metadata = self.engine.metadata
        try:
            metadata.get_run(run_id)
        except NotFoundError:
            pass
        else:
            self._event(trigger, cause, run_id, only_if_missing=True)
            return False
        registered = self.pipelines.get(trigger.pipeline)
        params = run_params(trigger, cause, accepted=list(registered.pipeline.params))
        labels = {LABEL_TRIGGER: trigger.name, LABEL_CAUSE: cause.shown[:_LABEL_MAX]}
        try:
            self.engine.submit(
                registered.compile(params), run_id=run_id, labels=labels, project=trigger.project
            )
        except (StateError, StoreError):
            try:  # lost a race with another replica: the run exists now
                metadata.get_run(run_id)
            except NotFoundError:
                raise
            return False
        self._event(trigger, cause, run_id)
        log.info("trigger %s/%s: run %s for %s", trigger.project, trigger.name, run_id,
                 cause.shown)  # fmt: skip
        return True

    def _event(
        self, trigger: Trigger, cause: Cause, run_id: str, *, only_if_missing: bool = False
    ) -> None:
        """The run's ``run_triggered`` event; a replica that died between creating the run and
        adding it leaves it to the next one."""
        metadata = self.engine.metadata
        if only_if_missing and any(e.kind == EVENT_KIND for e in metadata.list_events(run_id)):
            return
        message = f"trigger {trigger.name} ({trigger.kind.value}): {cause.shown}"
        metadata.add_event(Event(RunId(run_id), self.clock(), EVENT_KIND, message=message))

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.enabled:
            self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
