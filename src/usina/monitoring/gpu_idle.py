"""GPU time allocated but idle, per team, pipeline and step, from the attempts' profiles.

An attempt that held GPUs and ran with NVML visible has, in its profile, each GPU's utilisation
over time (``usina.engine.profiles``). A GPU is idle during a sample when its utilisation was
below ``IDLE_GPU_UTIL`` (10 %); the attempt's idle GPU-seconds are the sum over its GPUs (and
ranks) of the time they were idle. Attempts without a GPU profile (no NVML where they ran, or
profiling off) are counted as allocated but not profiled: nothing is claimed about them.

- allocated: the attempt's GPUs x its wall time (``AttemptRecord.gpu_seconds``).
- profiled: the GPU-seconds the profiles cover (GPUs seen x sampled duration).
- idle: the part of ``profiled`` below the threshold.

``IdleGpuMetrics`` exports them to Prometheus as counters fed by ``PipelineMetrics``, which
hands it every finished attempt exactly once (``on_attempt``):
``usina_gpu_seconds_allocated_total{pipeline,team,step}``,
``usina_gpu_seconds_profiled_total{pipeline,team,step}`` and
``usina_gpu_seconds_idle_total{pipeline,team,step}``.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usina.engine.profiles import IDLE_GPU_UTIL, load_profile

if TYPE_CHECKING:
    from collections.abc import Iterator

    from usina.engine.ports import ArtifactStore
    from usina.engine.records import AttemptRecord

log = logging.getLogger(__name__)

__all__ = ["IDLE_GPU_UTIL", "GpuTime", "IdleGpuMetrics", "gpu_time_of"]


@dataclass(frozen=True, slots=True)
class GpuTime:
    """GPU-seconds of one attempt (or a sum of them): allocated, profiled, idle."""

    allocated: float = 0.0
    profiled: float = 0.0
    idle: float = 0.0

    def __add__(self, other: GpuTime) -> GpuTime:
        return GpuTime(
            self.allocated + other.allocated,
            self.profiled + other.profiled,
            self.idle + other.idle,
        )

    def to_json(self) -> dict[str, float | None]:
        return {
            "allocated_hours": self.allocated / 3600.0,
            "profiled_hours": self.profiled / 3600.0,
            "idle_hours": self.idle / 3600.0,
            "idle_share": self.idle / self.profiled if self.profiled > 0 else None,
        }


def gpu_time_of(attempt: AttemptRecord, artifacts: ArtifactStore) -> GpuTime:
    """The GPU time of a finished attempt; zeros for one that held no GPU."""
    allocated = attempt.gpu_seconds
    if allocated <= 0:
        return GpuTime()
    try:
        found = load_profile(artifacts, attempt.id)
    except Exception as exc:  # a broken record costs the idle figure, never the scrape
        log.warning("cannot read the profile of attempt %s: %s", attempt.id, exc)
        return GpuTime(allocated)
    profiled = sum(p.summary.gpu_seconds for p in found.profiles)
    idle = sum(p.summary.gpu_idle_seconds for p in found.profiles)
    return GpuTime(allocated, profiled, idle)


class IdleGpuMetrics:
    """A Prometheus collector of allocated, profiled and idle GPU-seconds per step.

    Register it next to ``PipelineMetrics(store, on_attempt=idle.observe)``: that collector
    reads the metadata store on each scrape and passes every finished attempt once.
    """

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str], GpuTime] = defaultdict(GpuTime)

    def observe(self, pipeline: str, team: str, attempt: AttemptRecord) -> None:
        if attempt.gpus <= 0:
            return
        spent = gpu_time_of(attempt, self.artifacts)
        with self._lock:
            key = (pipeline, team, attempt.node)
            self._totals[key] = self._totals[key] + spent

    def totals(self) -> dict[tuple[str, str, str], GpuTime]:
        with self._lock:
            return dict(self._totals)

    def collect(self) -> Iterator[Any]:
        from usina.monitoring.pipeline_metrics import prometheus_client

        core = prometheus_client().core
        totals = self.totals()
        labels = ["pipeline", "team", "step"]
        for field, doc in (
            ("allocated", "GPU-seconds held by finished attempts (GPUs x wall time)"),
            ("profiled", "GPU-seconds of finished attempts covered by an NVML profile"),
            (
                "idle",
                f"GPU-seconds of finished attempts with utilisation below {IDLE_GPU_UTIL:g}%",
            ),
        ):
            family = core.CounterMetricFamily(f"usina_gpu_seconds_{field}", doc, labels=labels)
            for key, value in sorted(totals.items()):
                family.add_metric(list(key), getattr(value, field))
            yield family

    def describe(self) -> list[Any]:
        return []  # the families are only known at scrape time
