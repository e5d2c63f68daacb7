"""The simulated workload: jobs of several teams whose GPU requests, GPU types and durations
follow the published figures of the Alibaba PAI GPU trace v2020 (benchmarks/README.md says
which figures and where they come from), and the cluster they run on.

Everything is drawn from a seeded ``random.Random``, so the driver (which submits the runs) and
the simulated cluster (which runs them) regenerate the same table from the same arguments.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

#: Share of tasks by GPU request (``plan_gpu``), read off the trace's own analysis notebook
#: (alibaba/clusterdata, cluster-trace-gpu-v2020/analysis, Figure 5 "Proportion of Tasks"):
#: < 25 % of a GPU 15 %, [25, 50) % 26 %, [50, 100) % 13 %, exactly 1 GPU 43 %, > 1 GPU 3 %.
#: Fractions become time-sliced shares of a quarter GPU (1, 2 or 3 quarters).
GPU_REQUEST_SHARES = ((1, 0.15), (2, 0.26), (3, 0.13), (4, 0.43), (-1, 0.03))  # quarters
#: How the > 1 GPU tasks split (not in the figure: our assumption, stated in the README).
MULTI_GPU_SHARES = ((8, 0.35), (16, 0.30), (32, 0.35))  # quarters: 2, 4, 8 GPUs
#: Task runtime CDF of the trace (same notebook, Figure 4 "Task runtime", PAI curve), read at
#: the decades: (seconds, cumulative share). Interpolated linearly in log10(seconds).
RUNTIME_CDF = ((5.0, 0.0), (10.0, 0.03), (100.0, 0.27), (1e3, 0.60), (1e4, 0.88), (1e5, 0.99),
               (1e6, 1.0))  # fmt: skip
#: Share of tasks by GPU type in the trace (Figure 5, lower panel): MISC 67 %, T4 22 %,
#: P100 7 %, V100 3 %, V100M32 2 %. Mapped onto this cluster's three types: the small
#: inference/misc cards -> l4, P100 -> a100, V100/V100M32 -> h100.
GPU_TYPE_SHARES = (("l4", 0.89), ("a100", 0.07), ("h100", 0.05))
PRODUCTS = {
    "l4": "NVIDIA-L4",
    "a100": "NVIDIA-A100-SXM4-80GB",
    "h100": "NVIDIA-H100-80GB-HBM3",
}
#: Teams and their share of submissions (our assumption).
TEAMS = (("fraud", 0.35), ("risk", 0.30), ("credit", 0.20), ("research", 0.15))
#: Priorities (WorkloadPriorityClass values) and their share (our assumption); research
#: submits mostly batch work.
PRIORITIES = {"batch": 100, "normal": 1000, "urgent": 10000}
PRIORITY_SHARES = (("batch", 0.30), ("normal", 0.60), ("urgent", 0.10))
RESEARCH_PRIORITY_SHARES = (("batch", 0.80), ("normal", 0.20))
QUARTERS_PER_GPU = 4
GPUS_PER_NODE = 8


@dataclass(frozen=True, slots=True)
class SimJob:
    """One job of the workload (one pipeline run with one GPU step).

    quarters: GPU demand in quarter GPUs (4 = one whole GPU; < 4: a time-sliced share).
    duration: seconds of work on the simulated clock, without failures.
    arrival: seconds after the start, on the simulated clock.
    oom_at: if the first attempt runs out of memory: seconds into it (else None).
    """

    index: int
    team: str
    priority: str
    gpu_type: str
    quarters: int
    duration: float
    arrival: float
    oom_at: float | None

    @property
    def run_id(self) -> str:
        return f"sim-{self.index:06d}"

    @property
    def gpus(self) -> float:
        return self.quarters / QUARTERS_PER_GPU


def _pick(rng: random.Random, shares: tuple[tuple[object, float], ...]) -> object:
    x = rng.random() * sum(s for _, s in shares)
    for value, share in shares:
        x -= share
        if x <= 0:
            return value
    return shares[-1][0]


def runtime(u: float) -> float:
    """The runtime at cumulative share ``u`` of the trace's runtime CDF."""
    shares = [s for _, s in RUNTIME_CDF]
    i = max(1, min(len(RUNTIME_CDF) - 1, bisect.bisect_left(shares, u)))
    (x0, s0), (x1, s1) = RUNTIME_CDF[i - 1], RUNTIME_CDF[i]
    f = 0.0 if s1 == s0 else (u - s0) / (s1 - s0)
    return float(10 ** (math.log10(x0) + f * (math.log10(x1) - math.log10(x0))))


def mean_runtime() -> float:
    """The mean of the runtime distribution (numerically), in seconds."""
    n = 20000
    return sum(runtime((i + 0.5) / n) for i in range(n)) / n


def generate(n: int, *, seed: int, arrival_rate: float, oom_share: float) -> list[SimJob]:
    """``n`` jobs arriving as a Poisson process of ``arrival_rate`` jobs per simulated second."""
    rng = random.Random(seed)
    jobs = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(arrival_rate)
        team = str(_pick(rng, TEAMS))
        shares = RESEARCH_PRIORITY_SHARES if team == "research" else PRIORITY_SHARES
        priority = str(_pick(rng, shares))  # type: ignore[arg-type]
        quarters = int(_pick(rng, GPU_REQUEST_SHARES))  # type: ignore[call-overload]
        if quarters < 0:
            quarters = int(_pick(rng, MULTI_GPU_SHARES))  # type: ignore[call-overload]
        gpu_type = str(_pick(rng, GPU_TYPE_SHARES))
        if quarters > QUARTERS_PER_GPU and gpu_type == "l4":
            gpu_type = "a100"  # multi-GPU training goes to the training cards
        duration = runtime(rng.random())
        oom_at = duration * rng.uniform(0.0, 0.3) if rng.random() < oom_share else None
        jobs.append(SimJob(i, team, priority, gpu_type, quarters, duration, t, oom_at))
    return jobs


@dataclass(frozen=True, slots=True)
class Pool:
    """A node pool: one GPU type x capacity type; ``nodes`` at the start, up to ``max_nodes``
    with the autoscaler."""

    gpu_type: str
    capacity: str  # on-demand | spot
    nodes: int
    max_nodes: int

    @property
    def flavor(self) -> str:
        return f"{self.gpu_type}-{self.capacity}"


def pools(total_nodes: int, initial_share: float) -> list[Pool]:
    """``total_nodes`` 8-GPU nodes split over three GPU types (l4 50 %, a100 30 %, h100 20 %)
    and on-demand (80 %) / spot (20 %); ``initial_share`` of them exist at the start, the
    autoscaler adds the rest on demand (on-demand pools only; spot pools are fixed)."""
    out = []
    for gpu_type, share in (("l4", 0.5), ("a100", 0.3), ("h100", 0.2)):
        typed = round(total_nodes * share)
        spot = round(typed * 0.2)
        demand = typed - spot
        out.append(Pool(gpu_type, "on-demand", max(1, round(demand * initial_share)), demand))
        out.append(Pool(gpu_type, "spot", spot, spot))
    return out


def team_quotas(all_pools: list[Pool]) -> dict[str, dict[str, int]]:
    """Nominal quota in quarter GPUs per team per flavor: on-demand split by submission share
    (research: half its share), spot: research 60 %, the others share the rest."""
    out: dict[str, dict[str, int]] = {t: {} for t, _ in TEAMS}
    weights = {t: (s / 2 if t == "research" else s) for t, s in TEAMS}
    total = sum(weights.values())
    for pool in all_pools:
        capacity = pool.max_nodes * GPUS_PER_NODE * QUARTERS_PER_GPU
        if pool.capacity == "spot":
            split = {t: (0.6 if t == "research" else 0.4 / (len(TEAMS) - 1)) for t, _ in TEAMS}
        else:
            split = {t: w / total for t, w in weights.items()}
        given = 0
        for i, (team, _) in enumerate(TEAMS):
            part = capacity - given if i == len(TEAMS) - 1 else int(capacity * split[team])
            out[team][pool.flavor] = part
            given += part
    return out
