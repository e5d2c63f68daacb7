"""Right-sizing advice per step, from the profiles of its recent attempts (``usina advise``).

How a recommendation is made (the way Kubernetes' VPA recommender does it: a high percentile
of observed usage plus a safety margin, never below a floor):

- memory: the ``percentile`` (default 95th) of the per-attempt memory peaks of the step's last
  ``history`` (default 10) successful attempts, times ``1 + margin`` (default 15 %), rounded up
  to a whole Mi, at least ``min_memory`` (128Mi). A peak is the largest sample of the memory
  the limit is measured against (``usina.engine.profiles``); for a distributed step, the
  largest rank's peak times the ranks on its node.
- CPU: the same percentile of every CPU sample of those attempts (cores busy per interval),
  times ``1 + margin``, rounded up to 100m, at least ``min_cpu`` (100m).
- out of memory: for an attempt that failed with ``oom``, the memory that would have sufficed
  is the peak of the step's next successful attempt (the retry with more memory) times
  ``1 + margin``; with no successful attempt after it, only a floor is known: its limit.

Warnings, per successful attempt: memory peak below ``low_memory_use`` (50 %) of its request,
and GPUs held with a mean utilisation below ``low_gpu_util`` (10 %).

The advice is data (``StepAdvice``); the CLI and the server print it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.engine.profiles import AttemptProfile, load_profile, percentile
from usina.engine.records import AttemptState
from usina.sdk.resources import cpu_millicores, format_memory, memory_bytes
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.engine.ports import ArtifactStore, MetadataStore
    from usina.engine.records import AttemptRecord

MI = 2**20

__all__ = [
    "AdviceSettings",
    "Finding",
    "OomSizing",
    "StepAdvice",
    "advise_pipeline",
    "advise_step",
    "format_cpu",
    "gpu_time",
]


@dataclass(frozen=True, slots=True)
class AdviceSettings:
    """How recommendations are made (see the module docstring).

    percentile: of the observed peaks (memory) and samples (CPU); VPA uses the 90th for its
        target, we default to the 95th because a step is a batch job (an OOM costs a retry).
    margin: safety margin on top, a fraction (VPA's default is 15 %).
    history: recent successful attempts per step to learn from.
    runs: recent runs of the pipeline to read (each may hold several attempts per step).
    min_memory / min_cpu: floors, bytes and cores.
    low_memory_use: warn when an attempt's memory peak is below this fraction of its request.
    low_gpu_util: warn when the GPUs an attempt held were busy less than this (percent, mean).
    """

    percentile: float = 95.0
    margin: float = 0.15
    history: int = 10
    runs: int = 20
    min_memory: int = 128 * MI
    min_cpu: float = 0.1
    low_memory_use: float = 0.5
    low_gpu_util: float = 10.0


@dataclass(frozen=True, slots=True)
class Finding:
    """A warning about one attempt: ``kind`` is ``memory_underused`` or ``gpu_idle``."""

    kind: str
    attempt: str
    run_id: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "attempt": self.attempt,
            "run": self.run_id,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class OomSizing:
    """An ``oom`` attempt and the memory that would have sufficed (None: unknown yet)."""

    attempt: str
    run_id: str
    limit: int | None
    peak_before_kill: int | None
    would_suffice: int | None
    explanation: str

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "run": self.run_id,
            "limit": self.limit,
            "peak_before_kill": self.peak_before_kill,
            "would_suffice": self.would_suffice,
            "would_suffice_quantity": (
                format_memory(self.would_suffice) if self.would_suffice else None
            ),
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class StepAdvice:
    """What one step should request, why, and what looked wasteful."""

    pipeline: str
    step: str
    attempts: int  # successful attempts with a profile that the advice is based on
    requested_memory: int | None
    requested_cpu: float | None
    requested_gpus: int
    memory: int | None  # recommended request, bytes
    cpu: float | None  # recommended request, cores
    memory_peaks: tuple[float, ...] = ()
    explanation: str = ""
    findings: tuple[Finding, ...] = ()
    ooms: tuple[OomSizing, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "step": self.step,
            "attempts": self.attempts,
            "requested": {
                "memory": self.requested_memory,
                "cpu": self.requested_cpu,
                "gpus": self.requested_gpus,
            },
            "recommended": {
                "memory": self.memory,
                "memory_quantity": format_memory(self.memory) if self.memory else None,
                "cpu": self.cpu,
                "cpu_quantity": format_cpu(self.cpu) if self.cpu else None,
            },
            "memory_peaks": list(self.memory_peaks),
            "explanation": self.explanation,
            "warnings": [f.to_json() for f in self.findings],
            "oom": [o.to_json() for o in self.ooms],
        }


def format_cpu(cores: float) -> str:
    """Cores as a Kubernetes quantity: whole cores as a number, else millicores."""
    milli = round(cores * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _mib(n: float | None) -> str:
    return "-" if n is None else format_memory(math.ceil(n / MI) * MI)


def gpu_time(seconds: float) -> str:
    """GPU-seconds for people: GPU-minutes under an hour, else GPU-hours."""
    if seconds < 3600:
        return f"{seconds / 60:.1f} GPU-minutes"
    return f"{seconds / 3600:.2f} GPU-hours"


def _request(a: AttemptRecord) -> tuple[int | None, float | None, int]:
    res = a.resources or {}
    mem = cpu = None
    try:
        mem = memory_bytes(str(res["memory"])) if res.get("memory") else None
    except ValueError:
        mem = None
    try:
        cpu = cpu_millicores(res["cpu"]) / 1000.0 if res.get("cpu") else None
    except ValueError:
        cpu = None
    return mem, cpu, int(res.get("gpus") or 0)


def _cpu_samples(found: AttemptProfile) -> list[float]:
    samples: list[float] = []
    for p in found.profiles:
        scale = float(p.requests.get("share_of") or 1.0) if p.rank is not None else 1.0
        samples.extend(c * scale for c in p.series.get("cpu", ()))
    return samples


def advise_step(
    pipeline: str,
    step: str,
    history: Sequence[tuple[AttemptRecord, AttemptProfile]],
    settings: AdviceSettings | None = None,
) -> StepAdvice:
    """The advice for ``step`` from its attempts, oldest first, with their profiles."""
    s = settings or AdviceSettings()
    ok = [(a, p) for a, p in history if a.state is AttemptState.SUCCEEDED and p.found]
    ok = ok[-s.history :]
    latest = history[-1][0] if history else None
    req_mem, req_cpu, req_gpus = _request(latest) if latest else (None, None, 0)

    peaks = [peak for _, p in ok if (peak := p.memory_peak()) is not None]
    memory: int | None = None
    cpu: float | None = None
    parts: list[str] = []
    q = f"p{s.percentile:g}"
    if peaks:
        base = percentile(peaks, s.percentile) or 0.0
        memory = max(s.min_memory, math.ceil(base * (1 + s.margin) / MI) * MI)
        parts.append(
            f"memory {_mib(memory)}: {q} of the peaks of the last {len(peaks)} successful "
            f"attempt(s) ({_mib(base)}, largest {_mib(max(peaks))}) + {s.margin:.0%} margin"
            + (f", floor {_mib(s.min_memory)}" if memory == s.min_memory else "")
            + (f"; requested {_mib(req_mem)}" if req_mem else "")
        )
    samples = [c for _, p in ok for c in _cpu_samples(p)]
    if samples:
        base_cpu = percentile(samples, s.percentile) or 0.0
        cpu = max(s.min_cpu, math.ceil(base_cpu * (1 + s.margin) * 10) / 10)
        parts.append(
            f"cpu {format_cpu(cpu)}: {q} of {len(samples)} CPU samples ({base_cpu:.2f} cores) "
            f"+ {s.margin:.0%} margin" + (f"; requested {format_cpu(req_cpu)}" if req_cpu else "")
        )
    if not ok:
        parts.append(
            "no successful attempt with a profile yet: run the step once with profiling on "
            "(USINA_PROFILE_INTERVAL > 0, the default)"
        )

    findings: list[Finding] = []
    for a, p in ok:
        mem_req, _, gpus = _request(a)
        peak = p.memory_peak()
        if mem_req and peak is not None and peak < s.low_memory_use * mem_req:
            findings.append(
                Finding(
                    "memory_underused",
                    a.id,
                    a.run_id,
                    f"attempt {a.number} of run {a.run_id} used at most {_mib(peak)} of its "
                    f"{_mib(mem_req)} memory request ({peak / mem_req:.0%})",
                )
            )
        utils = [pr.summary.gpu_util.mean for pr in p.profiles if pr.summary.gpu_util is not None]
        if gpus and utils and (mean := sum(utils) / len(utils)) < s.low_gpu_util:
            idle = gpu_time(sum(pr.summary.gpu_idle_seconds for pr in p.profiles))
            findings.append(
                Finding(
                    "gpu_idle",
                    a.id,
                    a.run_id,
                    f"attempt {a.number} of run {a.run_id} held {gpus} GPU(s) at a mean "
                    f"utilisation of {mean:.1f}% ({idle} idle); "
                    "check that the step moves its work to the GPU, or ask for gpus=0",
                )
            )

    ooms = _oom_sizings(history, s)
    return StepAdvice(
        pipeline=pipeline,
        step=step,
        attempts=len(ok),
        requested_memory=req_mem,
        requested_cpu=req_cpu,
        requested_gpus=req_gpus,
        memory=memory,
        cpu=cpu,
        memory_peaks=tuple(peaks),
        explanation="; ".join(parts),
        findings=tuple(findings),
        ooms=ooms,
    )


def _oom_sizings(
    history: Sequence[tuple[AttemptRecord, AttemptProfile]], s: AdviceSettings
) -> tuple[OomSizing, ...]:
    out: list[OomSizing] = []
    for i, (a, p) in enumerate(history):
        if a.state is not AttemptState.FAILED or a.failure_class is not FailureClass.OOM:
            continue
        limit, _, _ = _request(a)
        before = p.memory_peak()
        later = next(
            (
                (b, q)
                for b, q in history[i + 1 :]
                if b.run_id == a.run_id and b.state is AttemptState.SUCCEEDED and q.found
            ),
            None,
        )
        if later is not None and (peak := later[1].memory_peak()) is not None:
            enough = max(s.min_memory, math.ceil(peak * (1 + s.margin) / MI) * MI)
            why = (
                f"attempt {a.number} was killed at its {_mib(limit)} limit; attempt "
                f"{later[0].number} succeeded with a peak of {_mib(peak)}, so {_mib(enough)} "
                f"(+{s.margin:.0%}) would have sufficed"
            )
        else:
            enough = None
            why = (
                f"attempt {a.number} was killed at its {_mib(limit)} limit"
                + (f" after reaching {_mib(before)}" if before else "")
                + "; no later attempt succeeded, so it needs more than that: "
                "raise memory or let Retry(oom=...) grow it"
            )
        out.append(
            OomSizing(
                a.id,
                a.run_id,
                limit,
                int(before) if before is not None else None,
                enough,
                why,
            )
        )
    return tuple(out)


def advise_pipeline(
    metadata: MetadataStore,
    artifacts: ArtifactStore,
    pipeline: str,
    settings: AdviceSettings | None = None,
) -> list[StepAdvice]:
    """Advice for every step of ``pipeline`` that ran in its last ``settings.runs`` runs."""
    s = settings or AdviceSettings()
    runs = metadata.list_runs(limit=s.runs, pipeline=pipeline)
    by_step: dict[str, list[tuple[AttemptRecord, AttemptProfile]]] = {}
    for run in sorted(runs, key=lambda r: (r.created_at, r.id)):
        for a in sorted(metadata.get_attempts(run.id), key=lambda a: (a.node, a.number)):
            if a.state is AttemptState.RUNNING:
                continue
            by_step.setdefault(a.node, []).append((a, load_profile(artifacts, a.id)))
    return [advise_step(pipeline, step, items, s) for step, items in sorted(by_step.items())]
