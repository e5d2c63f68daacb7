"""An attempt's resource profile: the record the runtime's sampler writes, and its summary.

The runtime (``usina.runtime.profile``) samples the attempt's process tree and writes one JSON
record per attempt into the artifact store, next to its task and result
(``attempts/<id>/profile.json``); each rank of a distributed step also writes its own
(``attempts/<id>/ranks/<rank>/profile.json``). The metadata store has no column for it: readers
(``runs show``, ``usina advise``, the UI, the idle-GPU KPIs) read the record's ``summary``.

Series (one value per sample, ``t`` in seconds since the attempt started):

- ``cpu``: cores busy over the interval before the sample (1.0 = one core fully used), from the
  CPU seconds of every process in the tree (reaped children included).
- ``memory``: the memory the backend's limit is measured against, in bytes: private memory
  (USS) of the process tree locally, the container's cgroup ``memory.current`` in a pod.
  ``rss`` and ``pss`` are kept alongside.
- ``read_bps`` / ``write_bps``: storage I/O rates of the tree, bytes per second.
- per GPU (NVML, when NVIDIA GPUs are visible): ``util`` (% of time a kernel ran), ``memory``
  (bytes used on the device), ``power`` (watts).

The series stay small: past ``max_points`` samples, neighbours are merged in pairs (the mean of
rates, the larger of amounts) and the interval doubles, so a day-long step keeps the same
number of points as a minute-long one. ``peak`` is exact (kept from every raw sample); ``p95``
and ``mean`` are computed from the (possibly merged) series.

GPU idleness: a GPU is idle during a sample when its utilisation is below
``IDLE_GPU_UTIL`` percent; ``gpu_idle_seconds`` sums that over the GPUs the attempt held.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.engine.ports import result_key, task_key

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from usina.engine.ports import ArtifactStore

PROFILE_VERSION = 1
IDLE_GPU_UTIL = 10.0  # percent: below this a held GPU counts as idle (issue: < 10 % flagged)
SERIES = ("cpu", "memory", "rss", "pss", "read_bps", "write_bps")
GPU_SERIES = ("util", "memory", "power")


def profile_key(attempt_id: str) -> str:
    """Where the attempt's profile lives in the artifact store (the whole process tree)."""
    return f"attempts/{attempt_id}/profile.json"


def rank_profile_key(attempt_id: str, rank: int) -> str:
    """Where rank ``rank`` of a distributed attempt writes its own profile."""
    return f"attempts/{attempt_id}/ranks/{rank}/profile.json"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation, as numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True, slots=True)
class Stat:
    """One resource over an attempt: its largest sample, 95th percentile and mean."""

    peak: float
    p95: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float], peak: float | None = None) -> Stat | None:
        if not values:
            return None
        top = max(values) if peak is None else max(peak, max(values))
        return cls(top, percentile(values, 95) or 0.0, sum(values) / len(values))

    def to_json(self) -> dict[str, float]:
        return {"peak": self.peak, "p95": self.p95, "mean": self.mean}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Stat | None:
        if not data:
            return None
        return cls(float(data["peak"]), float(data["p95"]), float(data["mean"]))


@dataclass(frozen=True, slots=True)
class GpuSeries:
    """One GPU's samples: ``util`` in percent, ``memory`` in bytes, ``power`` in watts."""

    index: int
    uuid: str
    name: str
    util: tuple[float, ...] = ()
    memory: tuple[float, ...] = ()
    power: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "util": list(self.util),
            "memory": list(self.memory),
            "power": list(self.power),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GpuSeries:
        return cls(
            index=int(data["index"]),
            uuid=str(data.get("uuid", "")),
            name=str(data.get("name", "")),
            util=tuple(float(v) for v in data.get("util", ())),
            memory=tuple(float(v) for v in data.get("memory", ())),
            power=tuple(float(v) for v in data.get("power", ())),
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """What readers need without the series: peak/p95/mean per resource, and GPU idleness."""

    duration: float
    samples: int
    cpu_seconds: float
    cpu: Stat | None = None
    memory: Stat | None = None
    rss: Stat | None = None
    gpu_util: Stat | None = None  # mean over the attempt's GPUs, per sample
    gpu_memory: Stat | None = None  # the largest GPU's memory, per sample
    gpu_power: Stat | None = None  # the sum over GPUs, per sample
    gpus_seen: int = 0
    gpu_seconds: float = 0.0  # GPUs seen x duration
    gpu_idle_seconds: float = 0.0  # GPU-seconds below IDLE_GPU_UTIL
    read_bytes: float = 0.0
    write_bytes: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.to_json() if isinstance(value, Stat) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        stats = ("cpu", "memory", "rss", "gpu_util", "gpu_memory", "gpu_power")
        values: dict[str, Any] = {}
        for name in cls.__slots__:
            if name not in data:
                continue
            values[name] = Stat.from_json(data[name]) if name in stats else data[name]
        values.setdefault("duration", 0.0)
        values.setdefault("samples", 0)
        values.setdefault("cpu_seconds", 0.0)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Profile:
    """One attempt's (or one rank's) profile record, as stored."""

    attempt_id: str
    started_at: float
    interval: float  # seconds between the points of ``t`` (after any merging)
    t: tuple[float, ...]
    series: dict[str, tuple[float, ...]]
    gpus: tuple[GpuSeries, ...]
    summary: Summary
    rank: int | None = None
    pid: int | None = None
    memory_source: str = "uss"
    requests: dict[str, float | None] = field(default_factory=dict)  # cpu cores, memory bytes
    limits: dict[str, float | None] = field(default_factory=dict)
    final: bool = True  # False while the attempt runs (or when it was killed before the end)
    version: int = PROFILE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "attempt": self.attempt_id,
            "rank": self.rank,
            "pid": self.pid,
            "started_at": self.started_at,
            "interval": self.interval,
            "final": self.final,
            "memory_source": self.memory_source,
            "requests": dict(self.requests),
            "limits": dict(self.limits),
            "t": list(self.t),
            "series": {k: list(v) for k, v in self.series.items()},
            "gpus": [g.to_json() for g in self.gpus],
            "summary": self.summary.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            attempt_id=str(data["attempt"]),
            started_at=float(data["started_at"]),
            interval=float(data["interval"]),
            t=tuple(float(v) for v in data.get("t", ())),
            series={k: tuple(float(x) for x in v) for k, v in data.get("series", {}).items()},
            gpus=tuple(GpuSeries.from_json(g) for g in data.get("gpus", ())),
            summary=Summary.from_json(data.get("summary", {})),
            rank=data.get("rank"),
            pid=data.get("pid"),
            memory_source=str(data.get("memory_source", "uss")),
            requests=dict(data.get("requests", {})),
            limits=dict(data.get("limits", {})),
            final=bool(data.get("final", True)),
            version=int(data.get("version", PROFILE_VERSION)),
        )

    def last(self, seconds: float) -> Profile:
        """The same profile cut to its last ``seconds`` (what ``runs why`` shows for an OOM)."""
        if not self.t:
            return self
        since = self.t[-1] - seconds
        start = next((i for i, v in enumerate(self.t) if v >= since), len(self.t))
        return Profile(
            attempt_id=self.attempt_id,
            started_at=self.started_at,
            interval=self.interval,
            t=self.t[start:],
            series={k: v[start:] for k, v in self.series.items()},
            gpus=tuple(
                GpuSeries(
                    g.index, g.uuid, g.name, g.util[start:], g.memory[start:], g.power[start:]
                )
                for g in self.gpus
            ),
            summary=self.summary,
            rank=self.rank,
            pid=self.pid,
            memory_source=self.memory_source,
            requests=self.requests,
            limits=self.limits,
            final=self.final,
            version=self.version,
        )


@dataclass(frozen=True, slots=True)
class AttemptProfile:
    """An attempt's profiles: the whole process tree's, or one per rank of a distributed step."""

    attempt_id: str
    whole: Profile | None
    ranks: tuple[Profile, ...] = ()

    @property
    def profiles(self) -> tuple[Profile, ...]:
        return ((self.whole,) if self.whole is not None else ()) + self.ranks

    @property
    def found(self) -> bool:
        return bool(self.profiles)

    def memory_peak(self) -> float | None:
        """Peak memory of the attempt, per pod/process group its request applies to: the
        tree's peak, or for ranks the largest rank's peak scaled to its node (a rank's request
        is its share of its node's)."""
        if self.whole is not None and self.whole.summary.memory is not None:
            return self.whole.summary.memory.peak
        best: float | None = None
        for p in self.ranks:
            if p.summary.memory is None:
                continue
            scale = _share_scale(p)
            value = p.summary.memory.peak * scale
            best = value if best is None else max(best, value)
        return best


def _share_scale(profile: Profile) -> float:
    """How many ranks share the request that ``profile``'s request is a slice of (1 if whole)."""
    return float(profile.requests.get("share_of") or 1.0)


def load_profile(
    store: ArtifactStore, attempt_id: str, *, ranks: int | None = None
) -> AttemptProfile:
    """The profiles of ``attempt_id`` from the artifact store (empty when none was written).

    ``ranks``: how many rank profiles to look for; by default read from the attempt's task
    record (a distributed step's ``nodes x procs_per_node``), else none.
    """
    whole = None
    result = store.read_record(result_key(attempt_id))
    if result:  # a short step's final profile is kept in its result record
        inline = json.loads(result).get("profile")
        whole = Profile.from_json(inline) if inline else None
    if whole is None:
        raw = store.read_record(profile_key(attempt_id))
        whole = Profile.from_json(json.loads(raw)) if raw else None
    if ranks is None:
        ranks = 0
        task = store.read_record(task_key(attempt_id))
        if task:
            spec = json.loads(task).get("node", {}).get("distributed")
            if spec:
                ranks = int(spec.get("nodes", 1)) * int(spec.get("procs_per_node", 1))
    found: list[Profile] = []
    for rank in range(ranks):
        data = store.read_record(rank_profile_key(attempt_id, rank))
        if data:
            found.append(Profile.from_json(json.loads(data)))
    return AttemptProfile(attempt_id, whole, tuple(found))


def summarise(
    t: Sequence[float],
    series: Mapping[str, Sequence[float]],
    gpus: Sequence[GpuSeries],
    *,
    cpu_seconds: float,
    peaks: Mapping[str, float] | None = None,
    idle_below: float = IDLE_GPU_UTIL,
) -> Summary:
    """The summary of a series (``peaks``: exact maxima kept while sampling, if any)."""
    peaks = peaks or {}
    duration = t[-1] if t else 0.0  # ``t`` counts from the attempt's start
    stats = {
        name: Stat.of(list(series.get(name, ())), peaks.get(name))
        for name in ("cpu", "memory", "rss")
    }
    n = len(t)
    util_rows = [g.util for g in gpus if len(g.util) == n]
    mem_rows = [g.memory for g in gpus if len(g.memory) == n]
    power_rows = [g.power for g in gpus if len(g.power) == n]
    mean_util = (
        [sum(r[i] for r in util_rows) / len(util_rows) for i in range(n)] if util_rows else []
    )
    top_mem = [max(r[i] for r in mem_rows) for i in range(n)] if mem_rows else []
    sum_power = [sum(r[i] for r in power_rows) for i in range(n)] if power_rows else []
    idle = 0.0
    # each sample describes the interval before it (the first: since the attempt started)
    steps = [t[0], *(t[i] - t[i - 1] for i in range(1, n))] if n else []
    for row in util_rows:
        idle += sum(dt for dt, u in zip(steps, row, strict=True) if u < idle_below)
    reads = series.get("read_bps", ())
    writes = series.get("write_bps", ())
    return Summary(
        duration=duration,
        samples=n,
        cpu_seconds=cpu_seconds,
        cpu=stats["cpu"],
        memory=stats["memory"],
        rss=stats["rss"],
        gpu_util=Stat.of(mean_util),
        gpu_memory=Stat.of(top_mem),
        gpu_power=Stat.of(sum_power),
        gpus_seen=len(gpus),
        gpu_seconds=duration * len(util_rows),
        gpu_idle_seconds=idle,
        read_bytes=sum(dt * r for dt, r in zip(steps, reads, strict=False)),
        write_bytes=sum(dt * w for dt, w in zip(steps, writes, strict=False)),
    )


__all__ = [
    "GPU_SERIES",
    "IDLE_GPU_UTIL",
    "PROFILE_VERSION",
    "SERIES",
    "AttemptProfile",
    "GpuSeries",
    "Profile",
    "Stat",
    "Summary",
    "load_profile",
    "percentile",
    "profile_key",
    "rank_profile_key",
    "summarise",
]
