"""The attempt's resource sampler: CPU, memory, I/O and GPUs of the process tree, over time.

``profiled(store, task)`` wraps the run of one attempt (``usina.runtime.execute``). A daemon
thread samples the attempt's process tree (this process and its descendants) every
``interval`` seconds and writes the profile record (``usina.engine.profiles``) into the
artifact store when the attempt ends. The same code runs in a local worker and in a pod.

- CPU: user + system seconds of every live process in the tree, plus those of their reaped
  children; utilisation is the change over wall time (1.0 = one core).
- Memory: private memory (USS, from ``/proc/<pid>/smaps_rollup``) summed over the tree, which is
  what the local backend's limit is measured against; inside a pod, the container's cgroup
  working set (``memory.current`` minus inactive file pages), which is what kubelet and the OOM
  killer see. RSS and PSS are kept too.
- GPUs (only when the step asked for some): NVML (``nvidia-ml-py``) per visible GPU
  (``CUDA_VISIBLE_DEVICES``, else every GPU the container sees): utilisation, memory used, power.
  Without NVML (no driver, the package missing) the profile simply has no GPU series.

Distributed steps: each rank samples itself and writes ``ranks/<rank>/profile.json``; the local
gang launcher samples nothing (its ranks are forked right after it starts, and a sampler thread
in the launcher would be copied half-way into each of them).

A step that is killed (the local watchdog's ``oom``, a pod's OOMKilled) cannot write at the
end, so the record is also written while the step runs: every ``flush_every`` seconds, and
whenever memory grew by ``flush_growth`` since the last write (at most once per ``interval``).
The run-up to an out-of-memory kill is therefore in the record.

Overhead (``benchmarks/profile_overhead.py``, on a 2-core machine shared by a dozen busy
processes): a sample of a one-process tree costs ~1 ms of CPU, of five processes ~2 ms: at the
default interval of 1 s, about 0.1 % of a core. Each attempt pays ~3.5 ms of CPU once, in a
worker forked from the zygote (start counters, a thread, the last sample, one record write),
against a 15 ms/step orchestration target. What made it cheap: the tree is walked through
``/proc/<pid>/task/*/children`` and each process read from ``/proc`` directly (psutil's
``children()`` reads every process on the machine: 3 ms per sample with 150 of them); no full
sample at start; the thread is a bare one (no start handshake) and is not joined at the end.

Settings (read at the edge, in ``ProfileSettings.from_env``): ``USINA_PROFILE_INTERVAL``
(seconds, default 1; ``0`` turns profiling off), ``USINA_PROFILE_MAX_POINTS`` (default 720).
"""

from __future__ import annotations

import _thread
import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from usina.backends.local_procs import descendants
from usina.engine.profiles import (
    GpuSeries,
    Profile,
    profile_key,
    rank_profile_key,
    summarise,
)
from usina.runtime.gpus import GpuReader, open_gpus
from usina.sdk.resources import QuantityError, cpu_millicores, memory_bytes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from usina.engine.ports import ArtifactStore, Task

log = logging.getLogger(__name__)

__all__ = [
    "GpuReader",
    "ProcessTree",
    "ProfileSettings",
    "Sampler",
    "cgroup_working_set",
    "open_gpus",
    "profiled",
]


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """How an attempt is sampled.

    interval: seconds between samples (default 1 s: < 0.1 % of a core); 0 turns it off.
    max_points: samples kept before neighbours are merged and the interval doubles (720 points
        = 12 minutes at 1 s, then 24 at 2 s, ...), so a record stays under ~100 KB.
    flush_every: seconds between writes of the record while the step runs, so a killed step
        leaves its curve behind.
    flush_growth: also write when memory grew by this fraction since the last write (the run-up
        to an out-of-memory kill).
    """

    interval: float = 1.0
    max_points: int = 720
    flush_every: float = 10.0
    flush_growth: float = 0.10

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProfileSettings:
        """From ``USINA_PROFILE_INTERVAL`` and ``USINA_PROFILE_MAX_POINTS``; bad values fall back
        to the defaults with a warning (a profile is never worth failing a step for)."""
        values: dict[str, Any] = {}
        for name, env, kind in (
            ("interval", "USINA_PROFILE_INTERVAL", float),
            ("max_points", "USINA_PROFILE_MAX_POINTS", int),
        ):
            raw = environ.get(env)
            if raw is None or raw == "":
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                log.warning("%s=%r is not a number; using the default", env, raw)
        if values.get("max_points", 2) < 2:
            values["max_points"] = 2
        if values.get("interval", 1.0) < 0:
            values["interval"] = 0.0
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of the process tree (cumulative counters, instantaneous amounts)."""

    at: float
    cpu_seconds: float
    memory: float
    rss: float
    pss: float
    read_bytes: float
    write_bytes: float


def cgroup_working_set(root: str = "/sys/fs/cgroup") -> float | None:
    """The container's memory working set (cgroup v2, else v1): usage less inactive file
    pages, as kubelet computes it; None outside a container's cgroup."""
    for usage_path, stat_path, inactive in (
        (f"{root}/memory.current", f"{root}/memory.stat", "inactive_file"),
        (
            f"{root}/memory/memory.usage_in_bytes",
            f"{root}/memory/memory.stat",
            "total_inactive_file",
        ),
    ):
        try:
            with open(usage_path) as fh:
                usage = float(fh.read().strip())
            with open(stat_path) as fh:
                stats = dict(line.split() for line in fh if line.strip())
        except (OSError, ValueError):
            continue
        return max(0.0, usage - float(stats.get(inactive, 0)))
    return None


_TICK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
_KB = 1024.0
# A final profile of at most this many points goes into the result record (see finish_inline).
INLINE_POINTS = 64


def _proc_reading(pid: int) -> tuple[float, float, float, float, float, float] | None:
    """(CPU seconds, RSS, PSS, USS, read bytes, write bytes) of one process from ``/proc``
    (Linux): three small reads, a third of psutil's cost for the same numbers. None when the
    process is gone (or ``/proc`` lacks a file: the caller falls back to psutil)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        # after the command: state is field 3, utime..cstime are fields 14..17 (1-based)
        cpu = sum(int(v) for v in fields[11:15]) / _TICK
        rss = pss = uss = 0.0
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                key, _, rest = line.partition(b":")
                if key == b"Rss":
                    rss = float(rest.split()[0]) * _KB
                elif key == b"Pss":
                    pss = float(rest.split()[0]) * _KB
                elif key in (b"Private_Clean", b"Private_Dirty", b"Private_Hugetlb"):
                    uss += float(rest.split()[0]) * _KB
    except (OSError, IndexError, ValueError):
        return None
    reads = writes = 0.0
    try:
        with open(f"/proc/{pid}/io", "rb") as fh:
            for line in fh:
                if line.startswith(b"read_bytes:"):
                    reads = float(line.split()[1])
                elif line.startswith(b"write_bytes:"):
                    writes = float(line.split()[1])
    except OSError:  # another user's process, or no I/O accounting
        pass
    return cpu, rss, pss, uss, reads, writes


def _psutil_reading(pid: int) -> tuple[float, float, float, float, float, float] | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            cpu = times.user + times.system + times.children_user + times.children_system
            full = proc.memory_full_info()
    except psutil.Error:
        return None
    reads = writes = 0.0
    with contextlib.suppress(psutil.Error, AttributeError):
        io = proc.io_counters()
        reads, writes = float(io.read_bytes), float(io.write_bytes)
    uss = float(full.uss)
    return cpu, float(full.rss), float(getattr(full, "pss", uss)), uss, reads, writes


class ProcessTree:
    """Reads CPU, memory and I/O of a process and its descendants (``/proc`` on Linux, psutil
    elsewhere)."""

    def __init__(self, pid: int, *, use_cgroup: bool = False) -> None:
        self.pid = pid
        self.use_cgroup = use_cgroup
        self._fast = os.path.exists(f"/proc/{pid}/smaps_rollup")

    @property
    def memory_source(self) -> str:
        return "cgroup" if self.use_cgroup else "uss"

    def start_reading(self) -> Reading:
        """CPU and I/O counters of the root alone, no memory: the baseline ``start()`` takes
        before the step runs (a fraction of a full reading's cost)."""
        cpu = reads = writes = 0.0
        try:
            if self._fast:
                with open(f"/proc/{self.pid}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                cpu = sum(int(v) for v in fields[11:15]) / _TICK
                with contextlib.suppress(OSError), open(f"/proc/{self.pid}/io", "rb") as fh:
                    for line in fh:
                        if line.startswith(b"read_bytes:"):
                            reads = float(line.split()[1])
                        elif line.startswith(b"write_bytes:"):
                            writes = float(line.split()[1])
            else:
                times = psutil.Process(self.pid).cpu_times()
                cpu = times.user + times.system + times.children_user + times.children_system
        except (OSError, IndexError, ValueError, psutil.Error):
            pass
        return Reading(time.time(), cpu, 0.0, 0.0, 0.0, reads, writes)

    def read(self) -> Reading:
        cpu = rss = pss = uss = reads = writes = 0.0
        one = _proc_reading if self._fast else _psutil_reading
        for pid in [self.pid, *descendants(self.pid)]:
            got = one(pid)
            if got is None:
                continue
            cpu += got[0]
            rss += got[1]
            pss += got[2]
            uss += got[3]
            reads += got[4]
            writes += got[5]
        memory = uss
        if self.use_cgroup:
            memory = cgroup_working_set() or uss
        return Reading(time.time(), cpu, memory, rss, pss, reads, writes)


@dataclass(slots=True)
class _Series:
    t: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    gpu: list[dict[str, list[float]]] = field(default_factory=list)

    def append(self, t: float, values: Mapping[str, float], gpus: list[tuple[float, ...]]) -> None:
        self.t.append(t)
        for name, value in values.items():
            self.values.setdefault(name, []).append(value)
        for i, (util, mem, power) in enumerate(gpus):
            while len(self.gpu) <= i:
                self.gpu.append({"util": [], "memory": [], "power": []})
            self.gpu[i]["util"].append(util)
            self.gpu[i]["memory"].append(mem)
            self.gpu[i]["power"].append(power)

    def halve(self) -> None:
        """Merge neighbours in pairs: rates by their mean, amounts by the larger."""
        rates = {"cpu", "read_bps", "write_bps", "util", "power"}

        def merge(name: str, values: list[float]) -> list[float]:
            pairs = [values[i : i + 2] for i in range(0, len(values), 2)]
            if name in rates:
                return [sum(p) / len(p) for p in pairs]
            return [max(p) for p in pairs]

        self.t = [self.t[i] for i in range(0, len(self.t), 2)]
        self.values = {k: merge(k, v) for k, v in self.values.items()}
        self.gpu = [{k: merge(k, v) for k, v in g.items()} for g in self.gpu]


class Sampler:
    """Samples one process tree on a thread and writes its profile record."""

    def __init__(
        self,
        store: ArtifactStore | None,
        attempt_id: str,
        *,
        tree: ProcessTree,
        settings: ProfileSettings,
        gpus: GpuReader | None = None,
        rank: int | None = None,
        requests: Mapping[str, float | None] | None = None,
        limits: Mapping[str, float | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.attempt_id = attempt_id
        self.tree = tree
        self.settings = settings
        self.gpus = gpus
        self.rank = rank
        self.requests = dict(requests or {})
        self.limits = dict(limits or {})
        self.clock = clock
        self.interval = settings.interval
        self.started_at = clock()
        self._series = _Series()
        self._peaks: dict[str, float] = {}
        self._last: Reading | None = None
        self._first: Reading | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._written_final = False
        self._flushed_at = self.started_at
        self._flushed_memory = 0.0
        self.sample_cost = 0.0  # CPU seconds this sampler spent sampling (its own overhead)

    # -- sampling --------------------------------------------------------------------------
    def sample(self) -> None:
        """Take one sample now (the thread calls it; tests may call it directly)."""
        cost = time.thread_time()
        reading = self.tree.read()
        gpu = self.gpus.read() if self.gpus is not None else []
        with self._lock:
            last = self._last
            dt = reading.at - last.at if last is not None else 0.0
            if self._series.t and dt < 0.5 * self.settings.interval:
                # too close to the previous point for a rate (CPU times tick every 10 ms):
                # keep its totals and peaks, add no point (the last sample at stop())
                self._last = reading
                self._peaks["memory"] = max(self._peaks.get("memory", 0.0), reading.memory)
                self._peaks["rss"] = max(self._peaks.get("rss", 0.0), reading.rss)
                self.sample_cost += time.thread_time() - cost
                return
            if last is None:
                self._first = reading
                cpu = rbps = wbps = 0.0
            else:
                # each point covers the time since the previous reading; under 50 ms (a step
                # that ended at once) CPU ticks are too coarse, so the rate is over 50 ms
                span = max(dt, 0.05)
                cpu = max(0.0, reading.cpu_seconds - last.cpu_seconds) / span
                rbps = max(0.0, reading.read_bytes - last.read_bytes) / span
                wbps = max(0.0, reading.write_bytes - last.write_bytes) / span
            self._last = reading
            values = {
                "cpu": cpu,
                "memory": reading.memory,
                "rss": reading.rss,
                "pss": reading.pss,
                "read_bps": rbps,
                "write_bps": wbps,
            }
            for name in ("cpu", "memory", "rss"):
                self._peaks[name] = max(self._peaks.get(name, 0.0), values[name])
            self._series.append(reading.at - self.started_at, values, [tuple(g) for g in gpu])
            if len(self._series.t) >= self.settings.max_points:
                self._series.halve()
                self.interval *= 2
        self.sample_cost += time.thread_time() - cost

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._safe_sample()
            self._maybe_flush()

    def _safe_sample(self) -> None:
        try:
            self.sample()
        except Exception as exc:  # the profile is a by-product: never fail the step for it
            log.debug("profile sample failed: %s", exc)

    def _maybe_flush(self) -> None:
        now = self.clock()
        memory = self._last.memory if self._last is not None else 0.0
        grew = memory > self._flushed_memory * (1 + self.settings.flush_growth)
        if now - self._flushed_at >= self.settings.flush_every or (
            grew and now - self._flushed_at >= self.interval
        ):
            self.write(final=False)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> Sampler:
        """Note the counters now (cheap: CPU and I/O of this process) and sample every
        ``interval`` on a thread; a step shorter than that gets its one point at ``stop()``."""
        with contextlib.suppress(Exception):
            self._first = self._last = self.tree.start_reading()
        # a bare thread: threading.Thread.start() waits until the new thread has run, one more
        # trip through the scheduler for every step; this one needs no handshake
        _thread.start_new_thread(self._run, ())
        return self

    @property
    def finished(self) -> bool:
        """Whether the final profile was written, or handed out by ``finish_inline``."""
        return self._written_final

    def stop(self) -> Profile:
        """Stop sampling, take a last sample, write the final record and return it.

        The thread is told to stop but not waited for: it wakes, sees the flag and ends on its
        own (a join would cost the step a round trip through the scheduler, ~10 ms on a busy
        machine); it writes nothing once the final record is being written."""
        self._last_sample()
        return self.write(final=True)

    def _last_sample(self) -> None:
        """Tell the thread to stop, take the last sample, let go of the GPUs."""
        self._stop.set()
        self._safe_sample()
        if self.gpus is not None:
            self.gpus.close()

    def finish_inline(self, max_points: int = INLINE_POINTS) -> dict[str, Any] | None:
        """Stop sampling and return the final profile as JSON for the caller to keep in the
        attempt's result record, instead of a record of its own (one file fewer for a short
        step); None, and nothing changed, when it has more than ``max_points`` points (then
        ``stop()`` writes it as before)."""
        with self._lock:
            if len(self._series.t) > max_points:
                return None
        self._last_sample()
        profile = self.profile(final=True)
        with self._write_lock:
            if self._written_final:
                return None
            self._written_final = True
        return profile.to_json()

    def profile(self, *, final: bool = False) -> Profile:
        """The profile so far."""
        with self._lock:
            t = tuple(self._series.t)
            series = {k: tuple(v) for k, v in self._series.values.items()}
            described = self.gpus.describe() if self.gpus is not None else []
            gpus = tuple(
                GpuSeries(
                    index,
                    uuid,
                    name,
                    tuple(self._series.gpu[i]["util"]) if i < len(self._series.gpu) else (),
                    tuple(self._series.gpu[i]["memory"]) if i < len(self._series.gpu) else (),
                    tuple(self._series.gpu[i]["power"]) if i < len(self._series.gpu) else (),
                )
                for i, (index, uuid, name) in enumerate(described)
            )
            first, last = self._first, self._last
            cpu_seconds = (
                last.cpu_seconds - first.cpu_seconds if first is not None and last else 0.0
            )
            peaks = dict(self._peaks)
            interval = self.interval
        summary = summarise(t, series, gpus, cpu_seconds=max(0.0, cpu_seconds), peaks=peaks)
        return Profile(
            attempt_id=self.attempt_id,
            started_at=self.started_at,
            interval=interval,
            t=t,
            series=series,
            gpus=gpus,
            summary=summary,
            rank=self.rank,
            pid=self.tree.pid,
            memory_source=self.tree.memory_source,
            requests=dict(self.requests),
            limits=dict(self.limits),
            final=final,
        )

    def write(self, *, final: bool) -> Profile:
        """Write the record (a running one unless ``final``); after the final write, none."""
        profile = self.profile(final=final)
        with self._write_lock:
            if self._written_final or (not final and self._stop.is_set()):
                return profile
            self._written_final = final
            self._flushed_at = self.clock()
            self._flushed_memory = self._last.memory if self._last is not None else 0.0
            if self.store is None:
                return profile
            key = (
                profile_key(self.attempt_id)
                if self.rank is None
                else rank_profile_key(self.attempt_id, self.rank)
            )
            try:
                self.store.write_record(key, json.dumps(profile.to_json()).encode())
            except Exception as exc:
                log.warning("could not write the profile of attempt %s: %s", self.attempt_id, exc)
        return profile


def _requests(task: Task, share: float) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """The attempt's CPU (cores) and memory (bytes) requests and limits, times ``share``."""
    res = task.resources
    cpu = mem = cpu_limit = None
    with contextlib.suppress(QuantityError):
        cpu = cpu_millicores(res.cpu) / 1000.0 * share if res.cpu else None
    with contextlib.suppress(QuantityError):
        mem = memory_bytes(res.memory) * share if res.memory else None
    with contextlib.suppress(QuantityError):
        limit = res.cpu_limit
        cpu_limit = cpu_millicores(limit) / 1000.0 * share if limit else cpu
    gpus = float(res.gpus or 0)
    # usina sets the memory limit to the request (an overrun is an ``oom``, never a slowdown);
    # share_of: how many ranks split this request (readers scale a rank back to its node)
    requests = {"cpu": cpu, "memory": mem, "gpus": gpus, "share_of": round(1.0 / share)}
    return requests, {"cpu": cpu_limit, "memory": mem}


@contextlib.contextmanager
def profiled(
    store: ArtifactStore,
    task: Task,
    *,
    settings: ProfileSettings | None = None,
    environ: Mapping[str, str] | None = None,
    nvml: Any = None,
) -> Iterator[Sampler | None]:
    """Sample this process's tree while the block runs, then write the attempt's profile."""
    env = os.environ if environ is None else environ
    settings = settings or ProfileSettings.from_env(env)
    distributed = task.node.get("distributed")
    if not settings.enabled or (distributed and "RANK" not in env):
        yield None  # off, or the local gang launcher: its ranks profile themselves
        return
    rank: int | None = None
    share = 1.0
    if distributed:
        rank = int(env["RANK"])
        per_node = int(env.get("LOCAL_WORLD_SIZE") or 1)
        share = 1.0 / max(1, per_node)
    sampler: Sampler | None = None
    try:
        requests, limits = _requests(task, share)
        gpus = None
        if requests.get("gpus"):
            gpus = open_gpus(nvml, env.get("CUDA_VISIBLE_DEVICES"))
        # in a pod the container's cgroup is what the limit applies to, unless several ranks
        # share the pod: then each rank's own memory is its series
        in_pod = "KUBERNETES_SERVICE_HOST" in env
        tree = ProcessTree(os.getpid(), use_cgroup=in_pod and share == 1.0)
        sampler = Sampler(
            store,
            task.attempt_id,
            tree=tree,
            settings=settings,
            gpus=gpus,
            rank=rank,
            requests=requests,
            limits=limits,
        ).start()
    except Exception as exc:  # never fail a step for its profile
        log.warning("profiling attempt %s is off: %s", task.attempt_id, exc)
    try:
        yield sampler
    finally:
        if sampler is not None and not sampler.finished:
            with contextlib.suppress(Exception):
                sampler.stop()
