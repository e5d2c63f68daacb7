"""A 1,000-node x 8-GPU cluster, simulated, driven by the real usina engine and Kubernetes backend.

The cluster (``benchmarks/gpu_cluster/cluster.py``) runs in its own process behind the API
emulator of the backend's tests, with a Kueue-like admission controller (team quotas, cohort
borrowing, preemption), a ProvisioningRequest autoscaler and failures, on a compressed clock.
This process submits the workload (jobs shaped after the Alibaba PAI 2020 trace; see
benchmarks/README.md) as pipeline runs into a shared metadata store and drives them with
``--replicas`` engine replicas, each a real ``Engine`` + ``KubernetesBackend`` (the real
``kubernetes`` client over HTTP) + the server's ``Reconciler`` sharing the runs through leases.

Prints: reconcile pass time p50/p99 and engine memory against runs in flight (a curve), API
requests per Job, event -> recorded latency, GPU utilisation, queueing delay per team, GPU-hours
lost to failures by class with checkpoint-resume vs restart from scratch (same failure events),
and how the runs split between replicas.

Run: ``.venv/bin/python benchmarks/cluster_sim.py [--jobs 20000] [--wall 240]``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from benchmarks.gpu_cluster.cluster import add_arguments  # noqa: E402
from benchmarks.gpu_cluster.steps import sim_job  # noqa: E402
from benchmarks.gpu_cluster.workload import (  # noqa: E402
    GPUS_PER_NODE,
    PRODUCTS,
    SimJob,
    generate,
    mean_runtime,
)
from kubernetes import client  # noqa: E402

from tests.k8s.support import MemoryArtifacts  # noqa: E402
from usina.backends.kubernetes import KubernetesSettings, job_name  # noqa: E402
from usina.backends.kubernetes.backend import KubernetesBackend  # noqa: E402
from usina.engine.engine import Engine, EngineSettings  # noqa: E402
from usina.engine.ports import Observation, Task, TaskState, result_key  # noqa: E402
from usina.engine.records import AttemptRecord, AttemptState  # noqa: E402
from usina.sdk.pipeline import Plan  # noqa: E402
from usina.server.reconciler import Reconciler  # noqa: E402
from usina.server.settings import ReconcilerSettings  # noqa: E402
from usina.testing import InMemoryMetadataStore  # noqa: E402

RESULT = b'{"outputs": [], "metrics": {}}'


class CountingStore(InMemoryMetadataStore):
    """The in-memory metadata store, counting writes per thread (the changes a pass made) and
    when each attempt was recorded as finished.

    ``get_run`` returns the stored (frozen) record without the fake's deep copy: the engine
    reads every run it holds on every pass, and the fake's copy of the plan (~0.1-1 ms) would
    otherwise dominate the figures; an SQL store pays a query instead. ``get_attempts`` reads
    a run's attempts through an index by run (the fake scans every attempt of every run, which
    made each read grow with the runs in flight; SQL has the index)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter[int] = Counter()
        self.recorded: dict[str, float] = {}
        self.outcome: dict[str, str] = {}  # attempt id -> "succeeded" / "failed"
        self.attempts_of: dict[str, dict[str, None]] = defaultdict(dict)
        self.claims: Any = None  # the ``Claims`` index, told of every lease taken or given back

    def get_attempts(self, run_id: str, node: str | None = None) -> list[AttemptRecord]:
        with self._lock:
            found = [
                a
                for a in (self._attempts[i] for i in self.attempts_of.get(run_id, ()))
                if node is None or a.node == node
            ]
        found.sort(key=lambda a: (a.started_at, a.number, a.id))
        return copy.deepcopy(found)  # as the fake does: callers may not share its records

    def get_run(self, run_id: str) -> Any:
        with self._lock:
            run = self._runs.get(run_id)
        return run if run is not None else super().get_run(run_id)

    def acquire_lease(self, run_id: str, owner: str, ttl: float, now: float) -> bool:
        taken = super().acquire_lease(run_id, owner, ttl, now)
        if taken and self.claims is not None:
            self.claims.taken(run_id)
        return taken

    def release_lease(self, run_id: str, owner: str) -> None:
        super().release_lease(run_id, owner)
        if self.claims is not None:
            self.claims.released(run_id)

    def save_attempt(self, attempt: AttemptRecord) -> None:
        super().save_attempt(attempt)
        self.attempts_of[attempt.run_id][attempt.id] = None
        self.writes[threading.get_ident()] += 1
        if attempt.state in (AttemptState.SUCCEEDED, AttemptState.FAILED):
            self.recorded.setdefault(attempt.id, time.time())
            self.outcome.setdefault(attempt.id, attempt.state.value)

    def save_step(self, step: Any, events: Any = ()) -> None:
        super().save_step(step, events)
        self.writes[threading.get_ident()] += 1

    def save_run(self, run: Any, events: Any = ()) -> None:
        super().save_run(run, events)
        self.writes[threading.get_ident()] += 1


class SimArtifacts(MemoryArtifacts):
    """Records in memory; an attempt the backend reported succeeded has its result record
    (the simulated pod's runtime would have written it)."""

    def __init__(self) -> None:
        super().__init__()
        self.succeeded: set[str] = set()

    def read_record(self, key: str) -> bytes | None:
        if key.startswith("attempts/") and key.endswith("/result.json"):
            attempt = key[len("attempts/") : -len("/result.json")]
            if result_key(attempt) == key and attempt in self.succeeded:
                return RESULT
        return super().read_record(key)


class ResultBackend:
    """The real Kubernetes backend; marks attempts it reports succeeded for ``SimArtifacts``."""

    def __init__(self, inner: KubernetesBackend, artifacts: SimArtifacts) -> None:
        self.inner = inner
        self.name = inner.name
        self.artifacts = artifacts

    def launch(self, task: Task) -> None:
        self.inner.launch(task)

    def observe(self, attempt_ids: Any) -> dict[str, Observation]:
        seen = self.inner.observe(attempt_ids)
        for attempt, obs in seen.items():
            if obs.state is TaskState.SUCCEEDED:
                self.artifacts.succeeded.add(attempt)
        return seen

    def cancel(self, attempt_id: str) -> None:
        self.inner.cancel(attempt_id)

    def logs(self, attempt_id: str) -> str:
        return self.inner.logs(attempt_id)

    def wait(self, timeout: float) -> None:
        self.inner.wait(timeout)

    def changed_runs(self) -> set[str]:
        return self.inner.changed_runs()

    def next_recheck(self) -> float | None:
        return self.inner.next_recheck()

    def close(self) -> None:
        self.inner.close()


class Claims:
    """``PlatformStore.claimable_runs`` over the in-memory store: unfinished runs, oldest first,
    that nobody holds or whose lease expired. SQL answers from an index without reading the
    held runs; here the runs not leased are kept apart (the store's lease calls move them), and
    the held ones are looked over for an expired lease every few seconds."""

    EXPIRY_SCAN_SECONDS = 5.0

    def __init__(self, store: CountingStore) -> None:
        self.store = store
        self.unfinished: dict[str, None] = {}
        self.free: dict[str, None] = {}  # not leased, in the order they were submitted
        self.lock = threading.Lock()
        self._scanned = 0.0
        store.claims = self

    def add(self, run_id: str) -> None:
        with self.lock:
            self.unfinished[run_id] = None
            self.free[run_id] = None

    def taken(self, run_id: str) -> None:
        with self.lock:
            self.free.pop(run_id, None)

    def released(self, run_id: str) -> None:
        with self.lock:
            if run_id in self.unfinished:
                self.free[run_id] = None

    def claimable_runs(self, owner: str, now: float, limit: int) -> list[str]:
        runs = self.store._runs  # read without copying: the check is advisory, acquire decides
        if now - self._scanned >= self.EXPIRY_SCAN_SECONDS:
            self._scanned = now
            with self.lock:
                held = [r for r in self.unfinished if r not in self.free]
            for run_id in held:
                run = runs.get(run_id)
                if run is not None and (run.lease_expires or 0) <= now:
                    self.released(run_id)
        out = []
        with self.lock:
            ids = list(itertools.islice(self.free, 2 * limit + 16))
        for run_id in ids:
            run = runs.get(run_id)
            if run is None or run.state.finished:
                with self.lock:
                    self.unfinished.pop(run_id, None)
                    self.free.pop(run_id, None)
                continue
            if run.lease_owner is None or (run.lease_expires or 0) <= now:
                out.append(run_id)
                if len(out) >= limit:
                    break
        return out

    def in_flight(self) -> int:
        with self.lock:
            return len(self.unfinished)


@dataclass
class PassSample:
    at: float
    seconds: float
    held: int
    runs: int  # runs reconciled in the pass
    changes: int
    in_flight: int
    rss: int


class LeaseLosses(logging.Handler):
    """Counts the reconciler's "lost the lease" warnings (a replica stalled past its lease)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "lost the lease" in record.getMessage():
            self.count += 1


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def plan_for(job: SimJob, base: dict[str, Any], cache: dict[tuple[Any, ...], Plan]) -> Plan:
    shared = job.quarters < 4
    gpus = job.quarters if shared else job.quarters // 4
    key = (gpus, shared, job.gpu_type)
    if key not in cache:
        data = json.loads(json.dumps(base))
        node = data["nodes"][0]
        node["resources"].update(
            {"gpus": gpus, "shared_gpu": shared, "gpu_type": PRODUCTS[job.gpu_type]}
        )
        cache[key] = Plan.from_json(data)
    return cache[key]


def fetch_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_emulator/stats", timeout=120) as resp:
        data: dict[str, Any] = json.load(resp)
        return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--replicas", type=int, default=2, help="engine replicas (threads)")
    parser.add_argument("--wall", type=float, default=240.0, help="wall seconds to run")
    parser.add_argument(
        "--load", type=float, default=0.9, help="offered GPU load vs the full cluster"
    )
    parser.add_argument(
        "--resync", type=float, default=300.0, help="reconciler resync interval, wall s"
    )
    args = parser.parse_args()
    losses = LeaseLosses()
    logging.getLogger("usina").addHandler(losses)
    logging.getLogger("usina").setLevel(logging.WARNING)
    logging.getLogger("usina").propagate = False
    if args.arrival_rate == 1.0:  # derive the rate from the load unless it was given
        jobs = generate(2000, seed=args.seed, arrival_rate=1.0, oom_share=0.0)
        mean_gpus = statistics.fmean(j.gpus for j in jobs)
        total_gpus = args.nodes * GPUS_PER_NODE
        args.arrival_rate = args.load * total_gpus / (mean_gpus * mean_runtime())
    sim_args = []
    for action in parser._actions:
        if action.dest in ("help", "replicas", "wall", "load", "resync"):
            continue
        sim_args += [action.option_strings[0], str(getattr(args, action.dest))]
    workload = generate(
        args.jobs, seed=args.seed, arrival_rate=args.arrival_rate, oom_share=args.oom_share
    )
    cluster = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.gpu_cluster.cluster", *sim_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert cluster.stdout is not None
    url = cluster.stdout.readline().split()[1]

    store = CountingStore()
    artifacts = SimArtifacts()
    claims = Claims(store)
    settings = KubernetesSettings(
        namespace="ml",
        image="registry.example.com/usina:1.0",
        queue="usina",
        disruption_action="FailJob",  # every failure is an engine-visible attempt
        log_sync_seconds=None,
        ttl_seconds=30,
        queue_timeout=10**6,
        backoff_base=0.05,
    )
    engine_settings = EngineSettings(
        poll_interval=0.5, environment="cluster-sim", use_cache=False, lease_ttl=60
    )
    rec_settings = ReconcilerSettings(
        lease_ttl=60.0,
        poll_interval=0.5,
        max_runs=args.jobs // args.replicas + 1,
        resync_interval=args.resync,
        max_claims_per_pass=50,
    )
    replicas: list[Any] = []
    apis = []
    for i in range(args.replicas):
        config = client.Configuration()
        config.host = url
        api = client.ApiClient(config)
        apis.append(api)
        inner = KubernetesBackend(settings, api, artifacts)
        backend = ResultBackend(inner, artifacts)
        backend.inner.wait_synced()
        engine = Engine(
            backend=backend,  # type: ignore[arg-type]
            metadata=store,
            artifacts=artifacts,  # type: ignore[arg-type]
            settings=engine_settings,
            owner=f"replica-{i}",
        )
        replicas.append(Reconciler(engine, claims, rec_settings))  # type: ignore[arg-type]

    stop = threading.Event()
    samples: list[list[PassSample]] = [[] for _ in replicas]
    t0 = float(fetch_stats(url)["t0"])  # the cluster's clock: arrivals are on it

    def drive(i: int) -> None:
        rec = replicas[i]
        me = threading.get_ident()
        while not stop.is_set():
            before = store.writes[me]
            runs_before = rec.reconciled
            start = time.perf_counter()
            try:
                rec.pass_once()
            except Exception as exc:  # report, keep going (as the server does)
                print(f"replica {i}: pass failed: {exc!r}", file=sys.stderr)
            seconds = time.perf_counter() - start
            samples[i].append(
                PassSample(
                    time.time() - t0,
                    seconds,
                    len(rec.held),
                    rec.reconciled - runs_before,
                    store.writes[me] - before,
                    claims.in_flight(),
                    rss_bytes() if i == 0 else 0,
                )
            )
            rec.engine.backend.wait(rec.wait_time())

    submitted = 0
    base = sim_job.compile().to_json()
    plans: dict[tuple[Any, ...], Plan] = {}

    def submit() -> None:
        nonlocal submitted
        submitter = replicas[0].engine
        for job in workload:
            due = t0 + job.arrival / args.compression
            while not stop.is_set() and time.time() < due:
                time.sleep(max(0.0, min(0.2, due - time.time())))
            if stop.is_set():
                return
            submitter.submit(
                plan_for(job, base, plans),
                run_id=job.run_id,
                labels={"team": job.team, "priority": job.priority},
                project=job.team,
            )
            claims.add(job.run_id)
            submitted += 1

    threads = [threading.Thread(target=submit, daemon=True)]
    threads += [
        threading.Thread(target=drive, args=(i,), daemon=True) for i in range(len(replicas))
    ]
    for thread in threads:
        thread.start()
    peak = 0
    rss_at_peak = 0
    while time.time() - t0 < args.wall:
        time.sleep(2.0)
        flying = claims.in_flight()
        if flying > peak:
            peak, rss_at_peak = flying, rss_bytes()
        print(
            f"  t={time.time() - t0:5.0f}s submitted={submitted} in flight={flying} "
            f"rss={rss_bytes() / 2**20:.0f} MiB held="
            + "/".join(str(len(r.held)) for r in replicas),
            file=sys.stderr,
        )
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    wall = time.time() - t0
    stats = fetch_stats(url)
    final_rss = rss_bytes()
    for rec in replicas:
        rec.engine.backend.close()
    for api in apis:
        api.close()
    assert cluster.stdin is not None
    cluster.stdin.close()
    cluster.wait(timeout=60)
    report(args, stats, store, samples, replicas, submitted, wall, (peak, rss_at_peak, final_rss))
    print(f"leases lost by a stalled replica and taken over by another: {losses.count}")


def report(
    args: argparse.Namespace,
    stats: dict[str, Any],
    store: CountingStore,
    samples: list[list[PassSample]],
    replicas: list[Any],
    submitted: int,
    wall: float,
    memory: tuple[int, int, int],
) -> None:
    peak, rss_at_peak, final_rss = memory
    requests = stats["requests"]
    total_requests = sum(requests.values())
    jobs_created = requests.get("create jobs", 0)
    finished = stats["finished"]
    delays = [
        store.recorded[a] - finished[job_name(a)]
        for a in store.recorded
        if job_name(a) in finished and store.recorded[a] >= finished[job_name(a)] - 1
    ]
    by_outcome: dict[str, list[float]] = defaultdict(list)
    for a in store.recorded:
        if job_name(a) in finished and store.recorded[a] >= finished[job_name(a)] - 1:
            by_outcome[store.outcome.get(a, "?")].append(store.recorded[a] - finished[job_name(a)])
    sim_hours = stats["sim_seconds"] / 3600
    most = stats["max_nodes"]
    pools_text = ", ".join(f"{f} {n}/{most[f]}" for f, n in stats["nodes"].items())
    print(
        f"\ncluster: {args.nodes} nodes x {GPUS_PER_NODE} GPUs at most "
        f"({pools_text} "
        f"at the end); clock x{args.compression:g}: {wall:.0f} s wall = {sim_hours:.1f} h simulated"
    )
    print(
        f"workload: {submitted} of {args.jobs} jobs submitted (arrivals "
        f"{args.arrival_rate:.3f}/sim s, offered load {args.load:g}); "
        f"{stats['completed_runs']} completed; peak in flight {peak}"
    )
    print(
        f"API requests per Job: {total_requests / max(1, jobs_created):.2f} "
        f"({total_requests} requests, {jobs_created} Jobs; "
        + ", ".join(f"{k}={v}" for k, v in sorted(requests.items()))
        + ")"
    )
    print(
        f"event -> recorded (Job finished in the cluster -> attempt recorded by the engine), "
        f"{len(delays)} attempts: p50 {percentile(delays, 0.5):.2f} s, p99 "
        f"{percentile(delays, 0.99):.2f} s wall = {percentile(delays, 0.99) * args.compression:.0f}"
        " s on the simulated clock"
    )
    print(
        "  by outcome (a failure's report waits for its log copy, its evidence; a success's "
        "does not): "
        + "; ".join(
            f"{k} {len(v)}: p50 {percentile(v, 0.5):.2f} s, p99 {percentile(v, 0.99):.2f} s"
            for k, v in sorted(by_outcome.items())
        )
    )
    flat = [s for lst in samples for s in lst if s.held]
    print(
        f"reconcile pass (all replicas, {len(flat)} passes): p50 "
        f"{percentile([s.seconds for s in flat], 0.5) * 1000:.0f} ms, p99 "
        f"{percentile([s.seconds for s in flat], 0.99) * 1000:.0f} ms"
    )
    print(
        "  runs held by the replica | passes | pass p50 | pass p99 | runs reconciled/pass | "
        "store writes/pass | ms/run held"
    )
    buckets: dict[int, list[PassSample]] = defaultdict(list)
    width = max(1, max((s.held for s in flat), default=1) // 8)
    for s in flat:
        buckets[(s.held // width) * width].append(s)
    for low in sorted(buckets):
        group = buckets[low]
        p50 = percentile([s.seconds for s in group], 0.5)
        print(
            f"  {low:>6}-{low + width - 1:<6}            | {len(group):>6} | "
            f"{p50 * 1000:6.0f} ms | {percentile([s.seconds for s in group], 0.99) * 1000:6.0f} ms"
            f" | {statistics.fmean(s.runs for s in group):20.1f}"
            f" | {statistics.fmean(s.changes for s in group):17.1f} | "
            f"{p50 * 1000 / max(1, statistics.fmean(s.held for s in group)):.2f}"
        )
    if len(flat) >= 3:
        import numpy as np

        x = np.array([[s.held, s.runs, s.changes, 1.0] for s in flat])
        y = np.array([s.seconds for s in flat])
        (per_held, per_run, per_change, fixed), *_ = np.linalg.lstsq(x, y, rcond=None)
        print(
            f"  least squares over the passes: pass time = {per_held * 1000:.3f} ms x runs held "
            f"+ {per_run * 1000:.2f} ms x runs reconciled + {per_change * 1000:.2f} ms x store "
            f"writes + {fixed * 1000:.0f} ms"
        )
    mem = [s for s in samples[0] if s.rss]
    print("engine process memory (RSS: engine, backends, in-memory store) vs runs in flight:")
    step = max(1, len(mem) // 8)
    for s in mem[::step]:
        print(f"  t={s.at:5.0f}s in flight {s.in_flight:>6}  RSS {s.rss / 2**20:6.0f} MiB")
    print(
        f"  peak in flight {peak}: RSS {rss_at_peak / 2**20:.0f} MiB; end ({submitted} runs "
        f"submitted): {final_rss / 2**20:.0f} MiB"
    )
    split: Counter[str] = Counter()
    for run in store._runs.values():
        split[run.lease_owner or "(released)"] += 1
    passes = [len(lst) for lst in samples]
    print(
        "replicas: passes "
        + ", ".join(f"{r.owner}={n}" for r, n in zip(replicas, passes, strict=True))
        + "; runs held at the end: "
        + ", ".join(f"{k}={v}" for k, v in sorted(split.items()))
    )
    print(
        f"GPU utilisation (allocated / existing nodes): {stats['utilisation_existing'] * 100:.1f} %"
        f"; of the full {args.nodes}-node cluster: {stats['utilisation_max'] * 100:.1f} %; "
        f"{stats['provisioned_nodes']} nodes provisioned on demand (p50 wait "
        f"{(stats['provision_wait_p50'] or 0) / 60:.1f} min)"
    )
    print(f"admission phases at the end (usina's admission_of): {stats['phases']}")
    print(f"  provisioning reported as unschedulable: {stats['wrongly_unschedulable']}")
    print(
        "queueing delay per team, simulated minutes: in Kueue (Job created -> admitted) | "
        "from submission (run submitted -> admitted, the engine's lag included) | engine lag "
        "(run submitted -> Job created)"
    )
    lag = stats["submit_to_created"]
    total = stats["submit_to_admitted"]
    for team, q in stats["queue_delay"].items():
        t, e = total.get(team, {}), lag.get(team, {})
        print(
            f"  {team:<9} n={q['n']:>6}  queue p50 {(q['p50'] or 0) / 60:6.1f} p90 "
            f"{(q['p90'] or 0) / 60:6.1f} | submitted p50 {(t.get('p50') or 0) / 60:6.1f} p90 "
            f"{(t.get('p90') or 0) / 60:6.1f} | lag p50 {(e.get('p50') or 0) / 60:6.1f}"
        )
    print(
        f"evictions by the admission controller: {stats['evictions']} (of them other tenants' "
        f"work present at the start: {stats['background_evicted']}; "
        f"{stats['background_left']} of it still running)"
    )
    print(
        "GPU-hours lost to failures (same failure events; checkpoint every "
        f"{args.checkpoint / 60:g} simulated min):"
    )
    print("  class                events  checkpoint-resume  restart-from-scratch")
    total_c = total_s = 0.0
    for cls, (n, ckpt, scratch) in sorted(stats["losses"].items()):
        total_c += ckpt
        total_s += scratch
        print(f"  {cls:<20} {n:>6}  {ckpt / 3600:12.1f} GPU-h  {scratch / 3600:12.1f} GPU-h")
    print(
        f"  total                        {total_c / 3600:12.1f} GPU-h  {total_s / 3600:12.1f} GPU-h"
        f"  (useful work of completed jobs: {stats['useful_gpu_seconds'] / 3600:.0f} GPU-h)"
    )
    targets = {
        "API requests per Job <= 3": total_requests / max(1, jobs_created) <= 3,
        "p99 event->recorded < 1 s": percentile(delays, 0.99) < 1.0,
        f"RSS <= 1 GiB (with {submitted} runs submitted)": final_rss <= 2**30,
    }
    print("targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items()))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # The backends' watch threads are daemons blocked in sockets; skip the interpreter's
    # teardown, which can abort while they hold the standard streams.
    os._exit(0)
