"""Pipeline and compute metrics for Prometheus, computed from the metadata store on each scrape.

``PipelineMetrics(store)`` is a prometheus_client collector. Nothing in the engine counts
anything: the store already holds every run, step, attempt and event, so a scrape reads what
changed since the last one and folds it into running totals. Finished runs and attempts never
change again, so each is folded exactly once and the totals are true counters; open runs are
re-read each scrape for the gauges (runs active, steps running, steps waiting, GPUs in use).

Exported (labels in braces; ``team`` is the run's ``team`` label, else its project, limited to
``PipelineMetricsSettings.teams`` or its first ``max_teams`` values, the rest as ``other``):

- ``usina_pipeline_runs_total{pipeline,team,outcome}``: runs that finished (succeeded, failed,
  cancelled); a resumed run that finishes again counts again.
- ``usina_pipeline_runs_active{pipeline,team,state}``: runs pending or running now.
- ``usina_step_duration_seconds{pipeline,step,outcome}``: histogram of steps that ran (cached
  steps did not), first attempt start to last attempt end.
- ``usina_attempts_total{pipeline,team,outcome,failure_class}``: finished attempts;
  ``failure_class`` is ``none`` for successes.
- ``usina_queue_wait_seconds{pipeline,team}``: histogram of attempts' launch -> running time
  (the engine's ``attempt_running`` event: a pod waiting for a GPU node, a local process start).
- ``usina_steps_running{pipeline,team}``, ``usina_gpus_in_use{pipeline,team}``: now.
- ``usina_steps_waiting{pipeline,team}``: steps ready to run (upstream done, or backoff over)
  that are not running; ``usina_steps_waiting_oldest_seconds{pipeline,team}``: how long the
  oldest of them has waited (the "stuck pending" signal).
- ``usina_gpu_seconds_total{pipeline,team}``: GPU-seconds of finished attempts (GPUs x wall time).
- ``usina_gpu_seconds_wasted_total{pipeline,team,failure_class}``: the part spent by attempts that
  did not produce the step's final result (every failed attempt: a success is never redone).
- ``usina_pipeline_metrics_up``: 1 when the last scrape read the store, 0 when it failed.

Several replicas of ``usina server`` over one store export the same numbers: scrape one, or
aggregate with ``max without (instance, pod)``.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.engine.records import AttemptState, RunState, StepState
from usina.errors import MissingExtraError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from usina.engine.ports import ArtifactStore, MetadataStore
    from usina.engine.records import AttemptRecord, RunRecord, StepRecord

log = logging.getLogger(__name__)

# Steps run from seconds (features) to a day (a large training run).
STEP_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
                43200.0, 86400.0)  # fmt: skip
# Queue waits from a process start (sub-second) to hours for a large GPU gang.
QUEUE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                 7200.0, 21600.0)  # fmt: skip

RUNNING_EVENT = "attempt_running"
RESUMED_EVENT = "run_resumed"


def prometheus_client() -> Any:
    """The prometheus_client module, or an error naming the extra that installs it."""
    try:
        import prometheus_client as module
        import prometheus_client.core  # the metric families, as module.core
    except ImportError as exc:
        raise MissingExtraError("prometheus_client", "monitoring") from exc
    return module


OTHER_TEAM = "other"


def team_of(run: RunRecord) -> str:
    """The team a run's cost is charged to: its ``team`` label, else its project."""
    return run.labels.get("team") or run.project


@dataclass(frozen=True, slots=True)
class PipelineMetricsSettings:
    """How ``PipelineMetrics`` reads the store.

    backfill: seconds of history folded in on the first scrape (default 7 days): counters start
        from the runs created in that window, so a first scrape of a large store stays short.
    page_size: runs read per query while looking for new ones (default 500).
    teams: the team names (``team_of``) that get series of their own; every other team is
        counted as ``"other"``. Empty (default): the first ``max_teams`` names seen get theirs.
    max_teams: most distinct team series when ``teams`` is empty (default 20), so a label
        anyone can set cannot grow the scrape without bound.
    """

    backfill: float = 7 * 86400.0
    page_size: int = 500
    teams: tuple[str, ...] = ()
    max_teams: int = 20


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        counts = self.counts or [0] * len(self.buckets)
        for bound, c in zip(self.buckets, counts, strict=True):
            acc += c
            out.append((_bound(bound), float(acc)))
        out.append(("+Inf", float(self.n)))
        return out


def _bound(value: float) -> str:
    return repr(float(value))


@dataclass
class _Totals:
    """What finished runs and attempts add up to: only ever grows."""

    runs: dict[tuple[str, str, str], float] = field(default_factory=dict)
    attempts: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    gpu: dict[tuple[str, str], float] = field(default_factory=dict)
    wasted: dict[tuple[str, str, str], float] = field(default_factory=dict)
    steps: dict[tuple[str, str, str], _Histogram] = field(default_factory=dict)
    queue: dict[tuple[str, str], _Histogram] = field(default_factory=dict)


@dataclass
class _Now:
    """What open runs look like at this scrape: rebuilt every time."""

    active: dict[tuple[str, str, str], float] = field(default_factory=dict)
    running: dict[tuple[str, str], float] = field(default_factory=dict)
    gpus: dict[tuple[str, str], float] = field(default_factory=dict)
    waiting: dict[tuple[str, str], float] = field(default_factory=dict)
    oldest: dict[tuple[str, str], float] = field(default_factory=dict)


def _add(table: dict[Any, float], key: Any, value: float) -> None:
    table[key] = table.get(key, 0.0) + value


@dataclass
class _Open:
    """An unfinished run being followed, and which of its parts are already counted."""

    run: RunRecord
    attempts: set[str] = field(default_factory=set)
    steps: set[str] = field(default_factory=set)


class PipelineMetrics:
    """A Prometheus collector over a metadata store.

    ``registry.register(PipelineMetrics(store))`` and every scrape of that registry reads the
    store. ``clock`` gives the current time (seconds since the epoch) for the backfill window and
    the waiting ages.
    """

    def __init__(
        self,
        store: MetadataStore,
        *,
        settings: PipelineMetricsSettings | None = None,
        clock: Callable[[], float] = time.time,
        on_attempt: Callable[[str, str, AttemptRecord], None] | None = None,
    ) -> None:
        self.store = store
        self.on_attempt = on_attempt  # sees each finished attempt once (usina.monitoring.gpu_idle)
        self.settings = settings or PipelineMetricsSettings()
        self.clock = clock
        self._lock = threading.Lock()
        self._totals = _Totals()
        self._now = _Now()
        self._open: dict[str, _Open] = {}
        self._watermark: float | None = None
        self._seen: dict[str, float] = {}  # runs created at or after the watermark, seen already
        self._up = 0.0
        self._teams: set[str] = set(self.settings.teams)

    def team(self, run: RunRecord) -> str:
        """The ``team`` label value of ``run``'s series: ``team_of(run)`` when it is one of
        the configured (or first ``max_teams`` seen) teams, else ``"other"``."""
        name = team_of(run)
        if name in self._teams:
            return name
        if not self.settings.teams and len(self._teams) < self.settings.max_teams:
            self._teams.add(name)
            return name
        return OTHER_TEAM

    # -- reading the store ------------------------------------------------------------------

    def refresh(self) -> None:
        """Fold in what changed in the store since the last call (each scrape calls it)."""
        with self._lock:
            try:
                self._refresh()
            except Exception as exc:  # a scrape must answer even when the store does not
                self._up = 0.0
                log.warning("pipeline metrics: reading the metadata store failed: %s", exc)
            else:
                self._up = 1.0

    def _refresh(self) -> None:
        now = self.clock()
        floor = self._watermark if self._watermark is not None else now - self.settings.backfill
        listed: dict[str, RunRecord] = {}
        for run in self._new_runs(floor):
            listed[run.id] = run
            if run.id in self._seen or run.id in self._open:
                continue
            self._seen[run.id] = run.created_at
            self._open[run.id] = _Open(run)
        # Runs that are running again (resumed) or that predate the backfill window: follow them
        # from now on, counting only what they do from here.
        for state in (RunState.PENDING, RunState.RUNNING):
            for run in self.store.list_runs(limit=self.settings.page_size, state=state):
                listed[run.id] = run
                if run.id not in self._open:
                    self._open[run.id] = self._adopt(run)
        if self._seen:
            self._watermark = max(self._seen.values())
            self._seen = {k: v for k, v in self._seen.items() if v >= self._watermark}
        elif self._watermark is None:
            self._watermark = floor
        self._now = _Now()
        for rid in list(self._open):
            followed = self._open[rid]
            run = listed.get(rid) or self.store.get_run(rid)
            followed.run = run
            self._visit(followed, now)
            if run.state.finished:
                del self._open[rid]

    def _new_runs(self, floor: float) -> list[RunRecord]:
        found: list[RunRecord] = []
        before: float | None = None
        while True:
            page = self.store.list_runs(limit=self.settings.page_size, before=before)
            for run in page:
                if run.created_at < floor:
                    return found
                found.append(run)
            if len(page) < self.settings.page_size:
                return found
            before = page[-1].created_at

    def _adopt(self, run: RunRecord) -> _Open:
        resumed = [e.at for e in self.store.list_events(run.id) if e.kind == RESUMED_EVENT]
        since = max(resumed) if resumed else math.inf
        counted = {
            str(a.id)
            for a in self.store.get_attempts(run.id)
            if a.finished_at is not None and a.finished_at <= since
        }
        done = {s.node for s in self.store.get_steps(run.id) if s.state.finished}
        return _Open(run, counted, done)

    def _visit(self, followed: _Open, now: float) -> None:
        run = followed.run
        pipeline, team = run.pipeline, self.team(run)
        steps = self.store.get_steps(run.id)
        attempts = self.store.get_attempts(run.id)
        fresh = [
            a
            for a in attempts
            if a.state is not AttemptState.RUNNING and a.id not in followed.attempts
        ]
        if fresh:
            running_at: dict[str, float] = {}
            for event in self.store.list_events(run.id):
                if event.kind == RUNNING_EVENT and event.attempt:
                    running_at[event.attempt] = event.at
            for attempt in fresh:
                self._fold_attempt(pipeline, team, attempt, running_at.get(attempt.id))
                followed.attempts.add(attempt.id)
        for step in steps:
            if step.state.finished and step.node not in followed.steps:
                followed.steps.add(step.node)
                self._fold_step(pipeline, step)
        if run.state.finished:
            _add(self._totals.runs, (pipeline, team, run.state.value), 1.0)
            return
        self._gauges(run, steps, attempts, now)

    def _fold_attempt(
        self, pipeline: str, team: str, attempt: AttemptRecord, running_at: float | None
    ) -> None:
        t = self._totals
        failed = attempt.state is AttemptState.FAILED
        klass = (
            (attempt.failure_class.value if attempt.failure_class else "user_error")
            if failed
            else "none"
        )
        _add(t.attempts, (pipeline, team, attempt.state.value, klass), 1.0)
        if self.on_attempt is not None:
            self.on_attempt(pipeline, team, attempt)
        gpu_seconds = attempt.gpu_seconds
        _add(t.gpu, (pipeline, team), gpu_seconds)
        if failed:
            _add(t.wasted, (pipeline, team, klass), gpu_seconds)
        if running_at is not None:
            hist = t.queue.setdefault((pipeline, team), _Histogram(QUEUE_BUCKETS))
            hist.observe(max(0.0, running_at - attempt.started_at))

    def _fold_step(self, pipeline: str, step: StepRecord) -> None:
        if step.cached or step.started_at is None or step.finished_at is None:
            return
        if step.state not in (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELLED):
            return
        key = (pipeline, step.node, step.state.value)
        hist = self._totals.steps.setdefault(key, _Histogram(STEP_BUCKETS))
        hist.observe(max(0.0, step.finished_at - step.started_at))

    def _gauges(
        self,
        run: RunRecord,
        steps: Sequence[StepRecord],
        attempts: Sequence[AttemptRecord],
        now: float,
    ) -> None:
        n = self._now
        key = (run.pipeline, self.team(run))
        _add(n.active, (*key, run.state.value), 1.0)
        for attempt in attempts:
            if attempt.state is AttemptState.RUNNING:
                _add(n.running, key, 1.0)
                _add(n.gpus, key, float(attempt.gpus))
        upstream = _upstream(run)
        by_node = {s.node: s for s in steps}
        for step in steps:
            since = _waiting_since(run, step, upstream.get(step.node, ()), by_node)
            if since is None:
                continue
            _add(n.waiting, key, 1.0)
            n.oldest[key] = max(n.oldest.get(key, 0.0), max(0.0, now - since))
        n.running.setdefault(key, 0.0)
        n.gpus.setdefault(key, 0.0)
        n.waiting.setdefault(key, 0.0)
        n.oldest.setdefault(key, 0.0)

    # -- the collector interface ------------------------------------------------------------

    def describe(self) -> list[Any]:
        # No store read at registration time: prometheus_client would otherwise call collect().
        return []

    def collect(self) -> Iterator[Any]:
        self.refresh()
        core = prometheus_client().core
        with self._lock:
            t, n = self._totals, self._now
            yield _counter(
                core,
                "usina_pipeline_runs",
                "Pipeline runs that finished, by outcome.",
                ["pipeline", "team", "outcome"],
                t.runs,
            )
            yield _gauge(
                core,
                "usina_pipeline_runs_active",
                "Pipeline runs pending or running now.",
                ["pipeline", "team", "state"],
                n.active,
            )
            yield _histogram(
                core,
                "usina_step_duration_seconds",
                "Duration of steps that ran (not cached), first attempt start to last attempt end.",
                ["pipeline", "step", "outcome"],
                t.steps,
            )
            yield _counter(
                core,
                "usina_attempts",
                "Finished attempts of steps, by outcome and failure class (none for successes).",
                ["pipeline", "team", "outcome", "failure_class"],
                t.attempts,
            )
            yield _histogram(
                core,
                "usina_queue_wait_seconds",
                "Time from an attempt's launch to its start on the backend (waiting for a node).",
                ["pipeline", "team"],
                t.queue,
            )
            yield _gauge(
                core,
                "usina_steps_running",
                "Steps with an attempt running now.",
                ["pipeline", "team"],
                n.running,
            )
            yield _gauge(
                core,
                "usina_gpus_in_use",
                "GPUs held by running attempts now.",
                ["pipeline", "team"],
                n.gpus,
            )
            yield _gauge(
                core,
                "usina_steps_waiting",
                "Steps ready to run (upstream done, backoff over) that are not running.",
                ["pipeline", "team"],
                n.waiting,
            )
            yield _gauge(
                core,
                "usina_steps_waiting_oldest_seconds",
                "How long the longest-waiting ready step has waited to start.",
                ["pipeline", "team"],
                n.oldest,
            )
            yield _counter(
                core,
                "usina_gpu_seconds",
                "GPU-seconds of finished attempts (GPUs times wall time).",
                ["pipeline", "team"],
                t.gpu,
            )
            yield _counter(
                core,
                "usina_gpu_seconds_wasted",
                "GPU-seconds of attempts that did not produce the step's result, by failure class.",
                ["pipeline", "team", "failure_class"],
                t.wasted,
            )
            up = core.GaugeMetricFamily(
                "usina_pipeline_metrics_up",
                "1 when the last scrape read the metadata store, 0 when it failed.",
            )
            up.add_metric([], self._up)
            yield up


def _upstream(run: RunRecord) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for node in run.plan.get("nodes", []):
        out[str(node["id"])] = tuple(str(u) for u in node.get("upstream", ()))
    return out


def _waiting_since(
    run: RunRecord,
    step: StepRecord,
    upstream: Sequence[str],
    steps: dict[str, StepRecord],
) -> float | None:
    """When ``step`` became ready to run, if it is ready and not running; else None."""
    if step.state is StepState.BACKOFF:
        return step.next_attempt_at
    if step.state is not StepState.PENDING or run.cancel_requested:
        return None
    ups = [steps[u] for u in upstream if u in steps]
    if any(u.state is not StepState.SUCCEEDED for u in ups):
        return None
    ends = [u.finished_at for u in ups if u.finished_at is not None]
    return max(ends) if ends else run.created_at


def _labelled(table: dict[Any, Any]) -> list[tuple[list[str], Any]]:
    return [(list(key), value) for key, value in sorted(table.items())]


def _counter(core: Any, name: str, doc: str, labels: list[str], table: dict[Any, float]) -> Any:
    family = core.CounterMetricFamily(name, doc, labels=labels)
    for values, value in _labelled(table):
        family.add_metric(values, value)
    return family


def _gauge(core: Any, name: str, doc: str, labels: list[str], table: dict[Any, float]) -> Any:
    family = core.GaugeMetricFamily(name, doc, labels=labels)
    for values, value in _labelled(table):
        family.add_metric(values, value)
    return family


def _histogram(
    core: Any, name: str, doc: str, labels: list[str], table: dict[Any, _Histogram]
) -> Any:
    family = core.HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in _labelled(table):
        family.add_metric(values, hist.cumulative(), sum_value=hist.total)
    return family


# -- exposing the metrics ------------------------------------------------------------------


def pipeline_registry(
    store: MetadataStore, artifacts: ArtifactStore | None = None, **kwargs: Any
) -> Any:
    """A fresh ``CollectorRegistry`` holding ``PipelineMetrics(store, **kwargs)``; with the
    ``artifacts`` store, also the idle-GPU counters read from the attempts' profiles."""
    prom = prometheus_client()
    registry = prom.CollectorRegistry(auto_describe=False)
    if artifacts is not None:
        from usina.monitoring.gpu_idle import IdleGpuMetrics

        idle = IdleGpuMetrics(artifacts)
        kwargs["on_attempt"] = idle.observe
    registry.register(PipelineMetrics(store, **kwargs))
    if artifacts is not None:
        registry.register(idle)
    return registry


def metrics_app(registry: Any) -> Any:
    """An ASGI app answering Prometheus scrapes of ``registry`` (mount it at ``/metrics``)."""
    return prometheus_client().make_asgi_app(registry=registry)


@dataclass
class MetricsServer:
    """A running ``start_metrics_server``: where it listens, and how to stop it."""

    port: int
    _server: Any
    _thread: Any

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(registry: Any, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread (``usina run
    --metrics-port``). Port 0 picks a free port; the result's ``port`` says which."""
    server, thread = prometheus_client().start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(int(server.server_port), server, thread)


__all__ = [
    "MetricsServer",
    "PipelineMetrics",
    "PipelineMetricsSettings",
    "metrics_app",
    "pipeline_registry",
    "start_metrics_server",
    "team_of",
]
