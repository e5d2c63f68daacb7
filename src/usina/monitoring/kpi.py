"""The platform's KPIs over a period, from the metadata store (``usina kpi``).

The period's runs are those submitted in it (``since <= created_at < until``); every number below
is about them:

- runs: how many finished and how; ``success_rate = succeeded / (succeeded + failed)``
  (cancelled runs are a person's decision, not the platform's success or failure).
- recovery: per pipeline, in order of finishing, a failed run opens an incident and the next
  succeeded run of the same pipeline closes it; consecutive failures are one incident. MTTR is
  the mean of (recovering run's end - first failed run's end) over closed incidents; ``open``
  counts incidents not recovered yet.
- gpu: GPU-hours of finished attempts, and the part wasted by attempts that did not produce the
  step's result (failed ones), in total and by failure class.
- queue_wait: p50/p99 of attempts' launch -> running time (the engine's ``attempt_running``
  events), numpy's linear percentile.
- gpu_idle (with the artifact store): GPU-hours allocated, covered by a profile, and idle
  (utilisation below 10 %), in total and per team, pipeline and step
  (``usina.monitoring.gpu_idle``).

``KPI_DEFINITIONS`` says the same per KPI, for ``usina kpi --explain`` and the README.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from usina.engine.records import AttemptState, RunState
from usina.i18n import N_
from usina.monitoring.gpu_idle import GpuTime, gpu_time_of
from usina.monitoring.pipeline_metrics import team_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from usina.engine.ports import ArtifactStore, MetadataStore
    from usina.engine.records import RunRecord

RUNNING_EVENT = "attempt_running"
_PAGE = 500
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_period(text: str) -> float:
    """Seconds in a period written ``30m``, ``12h``, ``7d`` or ``2w`` (a bare number: seconds)."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"period {text!r}: write it as 30m, 12h, 7d or 2w") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"period {text!r} must be positive")
    return seconds


def runs_between(store: MetadataStore, since: float, until: float) -> list[RunRecord]:
    """Runs submitted in ``[since, until)``, oldest first."""
    found: list[RunRecord] = []
    before: float | None = until
    while True:
        page = store.list_runs(limit=_PAGE, before=before)
        found.extend(r for r in page if r.created_at >= since)
        if len(page) < _PAGE or page[-1].created_at < since:
            break
        before = page[-1].created_at
    found.sort(key=lambda r: (r.created_at, r.id))
    return found


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


KPI_DEFINITIONS: dict[str, str] = {
    N_("runs finished"): N_(
        "runs submitted in the period that ended: succeeded, failed or cancelled."
    ),
    N_("success rate"): N_(
        "succeeded / (succeeded + failed); cancelled runs are a person's decision and count "
        "as neither."
    ),
    N_("mean time to recovery"): N_(
        "per pipeline, in order of finishing: a failed run opens an incident (consecutive "
        "failures are one incident) and the next succeeded run of the same pipeline closes "
        "it; MTTR is the mean of (recovering run's end - first failed run's end) over closed "
        "incidents; 'open' counts incidents not recovered yet."
    ),
    N_("GPU-hours used"): N_("GPUs x wall time of every finished attempt (successful or not)."),
    N_("GPU-hours wasted"): N_(
        "the part of 'used' spent by failed attempts (a success is never redone), in total "
        "and by failure class."
    ),
    N_("GPU-hours idle"): N_(
        "GPU-hours of finished attempts whose GPUs were below 10 % utilisation (NVML samples "
        "in the attempts' profiles), of the GPU-hours a profile covers; attempts run without "
        "NVML are 'allocated' but not 'profiled', and never called idle. Per team (the run's "
        "'team' label, else its project), pipeline and step."
    ),
    N_("queue wait p50 / p99"): N_(
        "attempts' time from launch to running (a pod waiting for a node, a local process "
        "starting), numpy's linear percentile."
    ),
    N_("model versions (new)"): N_("versions of each registered model created in the period."),
    N_("promoted"): N_(
        "versions created in the period that became the champion: those the gate promoted "
        "(tag gate.decision=promoted) plus the current champion when it was created in the "
        "period and the alias was moved by a person or by plain MLflow calls. MLflow keeps no"
        " history of aliases, so a version promoted by hand and replaced again within the "
        "period is not counted."
    ),
}


def explain_kpis(translate: Callable[[str], str] = str) -> str:
    """Every KPI's definition, one paragraph each (``usina kpi --explain``), through
    ``translate`` (the CLI's ``_``: the definitions are in the message catalogue)."""
    return "\n".join(
        f"{translate(name)}: {translate(text)}" for name, text in KPI_DEFINITIONS.items()
    )


def compute_kpis(
    store: MetadataStore,
    *,
    since: float,
    until: float,
    artifacts: ArtifactStore | None = None,
) -> dict[str, Any]:
    """The KPIs of the runs submitted in ``[since, until)`` (see the module docstring); with
    the ``artifacts`` store, the idle GPU-hours from the attempts' profiles too."""
    runs = runs_between(store, since, until)
    outcomes: dict[str, int] = defaultdict(int)
    for run in runs:
        if run.state.finished:
            outcomes[run.state.value] += 1
    succeeded = outcomes[RunState.SUCCEEDED.value]
    failed = outcomes[RunState.FAILED.value]

    used = wasted = 0.0
    by_class: dict[str, float] = defaultdict(float)
    waits: list[float] = []
    idle: dict[tuple[str, str, str], GpuTime] = defaultdict(GpuTime)
    for run in runs:
        attempts = store.get_attempts(run.id)
        for a in attempts:
            if a.state is AttemptState.RUNNING:
                continue
            if artifacts is not None and a.gpus > 0:
                key = (team_of(run), run.pipeline, a.node)
                idle[key] = idle[key] + gpu_time_of(a, artifacts)
            used += a.gpu_seconds
            if a.state is AttemptState.FAILED:
                klass = a.failure_class.value if a.failure_class else "user_error"
                wasted += a.gpu_seconds
                by_class[klass] += a.gpu_seconds
        started: dict[str, float] = {str(a.id): a.started_at for a in attempts}
        for event in store.list_events(run.id):
            if event.kind == RUNNING_EVENT and event.attempt in started:
                waits.append(max(0.0, event.at - started[event.attempt]))

    recoveries, open_incidents = _recoveries(runs)
    report: dict[str, Any] = {
        "period": {"since": since, "until": until, "runs": len(runs)},
        "runs": {
            "finished": sum(outcomes.values()),
            "succeeded": succeeded,
            "failed": failed,
            "cancelled": outcomes[RunState.CANCELLED.value],
            "success_rate": _ratio(succeeded, succeeded + failed),
        },
        "recovery": {
            "incidents": len(recoveries) + open_incidents,
            "recovered": len(recoveries),
            "open": open_incidents,
            "mttr_seconds": sum(recoveries) / len(recoveries) if recoveries else None,
        },
        "gpu": {
            "used_hours": used / 3600.0,
            "wasted_hours": wasted / 3600.0,
            "wasted_share": _ratio(wasted, used),
            "wasted_hours_by_class": {k: v / 3600.0 for k, v in sorted(by_class.items())},
        },
        "queue_wait": {
            "samples": len(waits),
            "p50_seconds": _percentile(waits, 50),
            "p99_seconds": _percentile(waits, 99),
        },
    }
    if artifacts is not None:
        total = sum(idle.values(), GpuTime())
        report["gpu_idle"] = {
            **total.to_json(),
            "by_step": [
                {"team": team, "pipeline": pipeline, "step": step, **spent.to_json()}
                for (team, pipeline, step), spent in sorted(idle.items())
            ],
        }
    return report


def _recoveries(runs: list[RunRecord]) -> tuple[list[float], int]:
    """Recovery times of closed incidents, and the number still open (see the docstring)."""
    by_pipeline: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.state in (RunState.SUCCEEDED, RunState.FAILED) and run.finished_at is not None:
            by_pipeline[run.pipeline].append(run)
    closed: list[float] = []
    still_open = 0
    for pipeline_runs in by_pipeline.values():
        pipeline_runs.sort(key=lambda r: (r.finished_at or 0.0, r.id))
        began: float | None = None
        for run in pipeline_runs:
            end = run.finished_at or 0.0
            if run.state is RunState.FAILED:
                began = end if began is None else began
            elif began is not None:
                closed.append(end - began)
                began = None
        still_open += began is not None
    return closed, still_open


__all__ = ["KPI_DEFINITIONS", "compute_kpis", "explain_kpis", "parse_period", "runs_between"]
