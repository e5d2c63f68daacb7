"""What every part of the engine shares: its components, settings, and the writes they all make
(mirrored step and attempt saves, events, tracker calls that never take a run down).

``Engine`` (``usina.engine.engine``) is assembled from this base and the parts of a pass:
``usina.engine.attempts`` (launch and conclude attempts) and ``usina.engine.steps`` (settle
steps, apply the retry policy, use the cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.engine.cache import environment_fingerprint
from usina.engine.clock import SystemClock
from usina.engine.leases import Leases, default_owner
from usina.engine.mirror import Mirrors
from usina.engine.records import Event, RunId
from usina.sdk.pipeline import Plan

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from usina.engine.ports import ArtifactStore, Backend, Clock, MetadataStore, Tracker
    from usina.engine.records import AttemptRecord, AttemptState, RunRecord, StepRecord

log = logging.getLogger("usina.engine.engine")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine drives runs.

    max_parallel: attempts running at once per run (default 4).
    lease_ttl: seconds a driver's claim on a run lasts without renewal (default 30).
    poll_interval: longest wait between passes while attempts run, in seconds (default 1.0);
        backends wake the engine earlier when something changes.
    environment: fingerprint of the runtime environment for cache keys; None computes one from
        the installed distributions (an image digest is the right value on Kubernetes).
    env: environment variables given to every attempt.
    use_cache: reuse the outputs of a step run before with the same cache key (default True).
    refresh_interval: seconds before the in-memory mirror of a run is reread from the store
        even while this engine holds its lease (default 10).
    """

    max_parallel: int = 4
    lease_ttl: float = 30.0
    poll_interval: float = 1.0
    environment: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    use_cache: bool = True
    refresh_interval: float = 10.0


class StaleView(Exception):
    """A pass found that another engine changed an attempt it was about to change: what the
    pass read is out of date. ``Engine.reconcile`` stops the pass (on SQL that can batch, its
    writes roll back) and the next pass rereads the run. Never leaves the engine."""


class EngineBase:
    """The engine's components and the shared writes of its parts."""

    def __init__(
        self,
        *,
        backend: Backend,
        metadata: MetadataStore,
        artifacts: ArtifactStore,
        tracker: Tracker | None = None,
        clock: Clock | None = None,
        settings: EngineSettings | None = None,
        owner: str | None = None,
    ) -> None:
        self.backend = backend
        self.metadata = metadata
        self.artifacts = artifacts
        self.tracker = tracker
        self.clock = clock or SystemClock()
        self.settings = settings or EngineSettings()
        self.owner = owner or default_owner()
        self._environment = self.settings.environment
        self._lists: dict[str, list[Any]] = {}  # digest -> the list a map runs over
        self._plans: dict[str, tuple[int, Plan]] = {}
        self._mirrors = Mirrors(metadata, self.settings.refresh_interval)
        self._leases = Leases(metadata, self.clock, self.owner, self.settings.lease_ttl)

    def plan_of(self, run: RunRecord) -> Plan:
        """The run's plan, parsed once per change (plans are large and read every pass)."""
        nodes = run.plan.get("nodes", [])
        signature = hash((len(nodes), tuple(n["code_hash"] for n in nodes), run.plan.get("source")))
        cached = self._plans.get(run.id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        plan = Plan.from_json(run.plan)
        self._plans[run.id] = (signature, plan)
        return plan

    @property
    def environment(self) -> str:
        if self._environment is None:
            self._environment = environment_fingerprint()
        return self._environment

    def _save_step(self, step: StepRecord, *events: Event) -> None:
        """Save ``step`` with the events that report its change, in one transaction."""
        self._mirrors.save_step(step, events)

    def _save_run(self, run: RunRecord, *events: Event) -> None:
        """Save ``run`` with the events that report its change, in one transaction."""
        self.metadata.save_run(run, events)

    def _record_attempt(
        self,
        attempt: AttemptRecord,
        *,
        expected: AttemptState | None,
        events: Sequence[Event],
        step: StepRecord | None = None,
    ) -> None:
        """Change an attempt's state together with its events (and its step), atomically and
        only from ``expected``; see ``MetadataStore.record_attempt``. Raises ``StaleView`` when
        another engine changed the attempt first: nothing else of this pass may act on what it
        read (a step settled twice would report its success twice)."""
        if not self._mirrors.record_attempt(attempt, expected=expected, events=events, step=step):
            raise StaleView(
                f"attempt {attempt.id} was changed by another engine; rereading run "
                f"{attempt.run_id}"
            )

    def _event(
        self,
        run_id: str,
        kind: str,
        *,
        node: str | None = None,
        attempt: str | None = None,
        message: str = "",
    ) -> None:
        """Write an event that reports no change of a record (a change's events are written
        with it: ``_new_event`` and ``_save_step``/``_save_run``/``_record_attempt``)."""
        self.metadata.add_event(
            self._new_event(run_id, kind, node=node, attempt=attempt, message=message)
        )

    def _new_event(
        self,
        run_id: str,
        kind: str,
        *,
        node: str | None = None,
        attempt: str | None = None,
        message: str = "",
    ) -> Event:
        return Event(
            RunId(run_id), self.clock.now(), kind, node=node, attempt=attempt, message=message
        )

    def _track(self, what: str, *args: Any) -> None:
        if self.tracker is None:
            return
        try:
            getattr(self.tracker, what)(*args)
        except Exception as exc:  # tracking must never take a run down
            log.warning("tracker %s failed: %s", what, exc, exc_info=True)
            run = args[0]
            self._event(run.id, "tracker_error", message=f"{what}: {exc}")

    def _track_env(self, run: RunRecord, node: str) -> dict[str, str]:
        if self.tracker is None:
            return {}
        try:
            return dict(self.tracker.step_started(run, node))
        except Exception as exc:
            log.warning("tracker step_started failed: %s", exc, exc_info=True)
            self._event(run.id, "tracker_error", node=node, message=f"step_started: {exc}")
            return {}


__all__ = ["EngineBase", "EngineSettings", "StaleView"]
