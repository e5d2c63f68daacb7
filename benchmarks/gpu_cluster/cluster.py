"""A simulated 1,000-node GPU cluster behind the Kubernetes API emulator.

``SimCluster`` extends ``tests/k8s/emulator.Emulator`` (the same HTTP API, store, watches, job
controller and kubelet the backend's tests use) with what a big cluster adds:

- a Kueue-like admission controller: every Job is created suspended, its workload waits in its
  team's ClusterQueue (FIFO within priority, best effort), is admitted within the team's nominal
  quota or by borrowing unused quota of the cohort, onto a node of a flavor (GPU type x
  on-demand/spot) that has room; a higher-priority workload preempts lower-priority ones of its
  team, a team under its nominal quota reclaims it from borrowers, and a borrower may displace
  batch-priority work of other teams (the policies ``usina k8s queues render`` writes);
- a ProvisioningRequest autoscaler: when quota allows but no node has room, the workload keeps
  its quota and waits while a node is added some minutes later (some requests fail and are
  retried); idle on-demand nodes are removed again;
- failures at configurable rates: node loss (all pods on the node), spot preemption, OOM in a
  job's first attempt; evictions by the admission controller;
- a compressed clock: ``compression`` simulated seconds pass per wall second.

A pod resumes from its run's last checkpoint (every ``checkpoint`` simulated seconds of run
time). Every failure is recorded with the work it lost under that policy and under a restart
from scratch, from the same event. ``GET /_emulator/stats`` returns the figures.

Run: ``python -m benchmarks.gpu_cluster.cluster ARGS`` prints ``READY <url>`` and serves until
its stdin closes (``benchmarks/cluster_sim.py`` starts it).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_cluster.workload import (  # noqa: E402
    GPUS_PER_NODE,
    PRIORITIES,
    QUARTERS_PER_GPU,
    Pool,
    SimJob,
    generate,
    pools,
    team_quotas,
)

from tests.k8s.emulator import Emulator, PodScript, rfc3339  # noqa: E402
from usina.backends.kubernetes.admission import (  # noqa: E402
    AdmissionPhase,
    admission_of,
    pending_observation,
)

Obj = dict[str, Any]
NODE_QUARTERS = GPUS_PER_NODE * QUARTERS_PER_GPU
RUN_ANNOTATION = "usina.dev/run-id"


@dataclass
class Node:
    name: str
    flavor: str
    free: int = NODE_QUARTERS
    jobs: set[str] = field(default_factory=set)
    idle_since: float = 0.0


@dataclass
class RunState:
    """What the cluster knows of one run across its attempts (Jobs)."""

    job: SimJob
    checkpointed: float = 0.0  # simulated seconds of work saved
    first_created: float | None = None
    first_admitted: float | None = None
    oom_done: bool = False
    done: bool = False


@dataclass
class Workload:
    job_name: str
    namespace: str
    run: RunState
    queued_at: float  # simulated time; reset on eviction (requeue at the back)
    created_wall: float
    state: str = "pending"  # pending | provisioning | admitted
    flavor: str | None = None
    node: str | None = None
    borrowing: bool = False
    started_wall: float | None = None
    provision_ready: float | None = None
    provision_started_wall: float | None = None
    provision_started: float | None = None
    provision_failures: int = 0
    failure: str | None = None  # the class of a failure this cluster caused
    quota_message: str = ""
    background_until: float | None = None  # other tenants' work, not driven by usina

    @property
    def quarters(self) -> int:
        return self.run.job.quarters

    @property
    def team(self) -> str:
        return self.run.job.team

    @property
    def priority(self) -> int:
        return PRIORITIES[self.run.job.priority]

    def flavors(self) -> list[str]:
        gpu = self.run.job.gpu_type
        return [f"{gpu}-on-demand"] + ([f"{gpu}-spot"] if self.run.job.priority == "batch" else [])


@dataclass
class Loss:
    cls: str
    gpus: float
    ran: float  # simulated seconds the attempt ran
    lost_checkpoint: float  # GPU-seconds lost resuming from the last checkpoint
    lost_scratch: float  # GPU-seconds lost restarting from scratch


class SimCluster(Emulator):
    """See the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(tick=0.01, bookmark_every=5.0, seed=args.seed)
        self.linger = 0.2
        self.compression = float(args.compression)
        self.checkpoint = float(args.checkpoint)
        self.node_loss_rate = float(args.node_loss_per_1000_node_hours) / 1000.0 / 3600.0
        self.spot_rate = float(args.spot_preemptions_per_job_hour) / 3600.0
        self.provision_delay = (float(args.provision_min), float(args.provision_max))
        self.provision_fail = float(args.provision_failure_share)
        self.max_scan = int(args.max_scan)
        self.jobs = {
            j.run_id: RunState(j)
            for j in generate(
                args.jobs,
                seed=args.seed,
                arrival_rate=args.arrival_rate,
                oom_share=args.oom_share,
            )
        }
        self.pools = {p.flavor: p for p in pools(args.nodes, args.initial_share)}
        self.quota = team_quotas(list(self.pools.values()))
        self.nodes: dict[str, Node] = {}
        # best fit in O(33): per flavor, per free quarters, the nodes with that much free
        self.buckets: dict[str, list[set[str]]] = {
            f: [set() for _ in range(NODE_QUARTERS + 1)] for f in self.pools
        }
        self.pool_size = {f: 0 for f in self.pools}
        self.pending_nodes = {f: 0 for f in self.pools}
        self.usage: dict[str, dict[str, int]] = {
            t: dict.fromkeys(self.pools, 0) for t in self.quota
        }
        self.workloads: dict[str, Workload] = {}
        self.pod_of: dict[str, str] = {}
        self.losses: list[Loss] = []
        self.evictions: dict[str, int] = {}
        self.provisioned = 0
        self.provision_waits: list[float] = []
        self.queue_delays: dict[str, list[float]] = {}
        self.phase_samples: dict[str, int] = {}
        self.wrongly_unschedulable = 0
        self.admitted_total = 0
        self.util_used = 0.0
        self.util_cap = 0.0
        self.util_max = 0.0
        self._rng_sim = random.Random(args.seed + 1)
        self._last_tick = 0.0
        self._node_seq = 0
        self._t0 = time.time()
        for pool in self.pools.values():
            for _ in range(pool.nodes):
                self._add_node(pool, 0.0)
        self.background_evicted = 0
        self._fill_background(float(args.background))

    # ---- clock ------------------------------------------------------------------------------
    def now(self) -> float:
        """Simulated seconds since the start."""
        return (time.time() - self._t0) * self.compression

    def wall(self, sim_seconds: float) -> float:
        return sim_seconds / self.compression

    def start(self) -> SimCluster:
        super().start()
        self._after(0.2, self._tick)
        return self

    def _fill_background(self, share: float) -> None:
        """Work already running when the simulation starts (other pipelines, notebooks): it holds
        ``share`` of every pool's GPUs within the teams' quotas, ends after a runtime drawn from
        the trace's distribution, and can be preempted (half of it is batch priority)."""
        rng = random.Random(7919)
        from benchmarks.gpu_cluster.workload import TEAMS, runtime

        n = 0
        for flavor, pool in self.pools.items():
            target = int(pool.nodes * NODE_QUARTERS * share)
            used = 0
            while used < target:
                team = str(rng.choices([t for t, _ in TEAMS], [w for _, w in TEAMS])[0])
                q = rng.choice((1, 2, 4, 4, 4, 8))
                node = self._best_fit(flavor, q)
                if node is None:
                    break
                n += 1
                job = SimJob(
                    -n, team, rng.choice(("batch", "normal")), pool.gpu_type, q,
                    runtime(rng.uniform(0.6, 1.0)), 0.0, None,
                )  # fmt: skip
                wl = Workload(f"background-{n}", "", RunState(job), 0.0, time.time())
                wl.background_until = job.duration * rng.random()
                wl.borrowing = self.usage[team][flavor] + q > self.quota[team][flavor]
                self.usage[team][flavor] += q
                wl.state, wl.node, wl.flavor = "admitted", node.name, flavor
                self._set_free(node, node.free - q)
                node.jobs.add(wl.job_name)
                self.workloads[wl.job_name] = wl
                used += q

    def _drop_background(self, wl: Workload) -> None:
        self._release(wl)
        self.workloads.pop(wl.job_name, None)

    # ---- nodes ------------------------------------------------------------------------------
    def _add_node(self, pool: Pool, now: float) -> Node:
        self._node_seq += 1
        node = Node(f"{pool.flavor}-{self._node_seq:05d}", pool.flavor, idle_since=now)
        self.nodes[node.name] = node
        self.buckets[node.flavor][node.free].add(node.name)
        self.pool_size[pool.flavor] += 1
        return node

    def _remove_node(self, node: Node) -> None:
        self.nodes.pop(node.name, None)
        self.buckets[node.flavor][node.free].discard(node.name)
        self.pool_size[node.flavor] -= 1

    def _set_free(self, node: Node, free: int) -> None:
        if node.name in self.nodes:
            self.buckets[node.flavor][node.free].discard(node.name)
            self.buckets[node.flavor][free].add(node.name)
        node.free = free

    def _best_fit(self, flavor: str, quarters: int) -> Node | None:
        buckets = self.buckets[flavor]
        for free in range(quarters, NODE_QUARTERS + 1):
            if buckets[free]:
                return self.nodes[next(iter(buckets[free]))]
        return None

    # ---- the Kueue webhook and job controller -----------------------------------------------
    def _create(self, kind: str, namespace: str, obj: Obj) -> Obj:
        created = super()._create(kind, namespace, obj)
        if kind == "pods":
            job = created["metadata"]["labels"].get("batch.kubernetes.io/job-name")
            if job:
                self.pod_of[job] = created["metadata"]["name"]
        return created

    def _start_job(self, namespace: str, name: str) -> None:
        job = self._job(namespace, name)
        if job is None or job.get("status", {}).get("startTime"):
            return
        run_id = job["metadata"].get("annotations", {}).get(RUN_ANNOTATION, "")
        run = self.jobs.get(run_id)
        if run is None:  # not part of the workload: run it as the plain emulator does
            super()._start_job(namespace, name)
            return
        now = self.now()
        if run.first_created is None:
            run.first_created = now
        job["spec"]["suspend"] = True  # Kueue's webhook: queued until admitted
        job["status"] = {
            "active": 0,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": [_condition("Suspended", "True", "JobSuspended", "Job suspended")],
        }
        self._update("jobs", job)
        self.workloads[name] = Workload(name, namespace, run, now, time.time())

    def _admit(self, wl: Workload, node: Node, now: float) -> None:
        job = self._job(wl.namespace, wl.job_name)
        if job is None:
            self._release(wl)
            return
        wl.state, wl.node, wl.flavor = "admitted", node.name, node.flavor
        self._set_free(node, node.free - wl.quarters)
        node.jobs.add(wl.job_name)
        wl.started_wall = time.time()
        self.admitted_total += 1
        if wl.run.first_admitted is None:
            wl.run.first_admitted = now
            delay = now - (wl.run.first_created or now)
            self.queue_delays.setdefault(wl.team, []).append(delay)
        job["spec"]["suspend"] = False
        job["status"]["startTime"] = rfc3339(time.time())
        job["status"]["conditions"] = [
            _condition("Suspended", "False", "JobResumed", "Job resumed")
        ]
        self._update("jobs", job)
        self._new_pod(job)

    def _script_for(self, job: Obj, index: int | None) -> PodScript:
        wl = self.workloads.get(job["metadata"]["name"])
        if wl is None:
            return super()._script_for(job, index)
        run = wl.run
        logs = ("usina runtime: starting step", "usina runtime: step finished")
        if run.job.oom_at is not None and not run.oom_done and run.checkpointed < run.job.oom_at:
            wl.failure = "oom"
            ran = run.job.oom_at - run.checkpointed
            return PodScript("oom", run=max(0.01, self.wall(ran)), logs=logs)
        remaining = max(0.0, run.job.duration - run.checkpointed)
        return PodScript("succeed", run=max(0.01, self.wall(remaining)), logs=logs)

    def _pod_failed(self, namespace: str, pod: Obj) -> None:
        job = pod["metadata"]["labels"].get("batch.kubernetes.io/job-name", "")
        wl = self.workloads.get(job)
        if wl is not None and wl.state == "admitted" and wl.started_wall is not None:
            if wl.failure == "oom":
                wl.run.oom_done = True
            self._account(wl, wl.failure or "user_error")
            wl.started_wall = None
        super()._pod_failed(namespace, pod)

    def _finish(self, job: Obj, kind: str, reason: str, message: str) -> None:
        super()._finish(job, kind, reason, message)
        wl = self.workloads.pop(job["metadata"]["name"], None)
        if wl is None:
            return
        if kind == "Complete":
            wl.run.done = True
        self._release(wl)

    def _release(self, wl: Workload) -> None:
        if wl.state in ("admitted", "provisioning") and wl.flavor:
            self.usage[wl.team][wl.flavor] -= wl.quarters
        if wl.node is not None and wl.node in self.nodes:
            node = self.nodes[wl.node]
            self._set_free(node, node.free + wl.quarters)
            node.jobs.discard(wl.job_name)
            if not node.jobs:
                node.idle_since = self.now()
        wl.state, wl.node, wl.flavor = "pending", None, None

    def _account(self, wl: Workload, cls: str) -> None:
        """Record the work a failure of ``wl``'s running pod lost, both ways."""
        ran = (time.time() - (wl.started_wall or time.time())) * self.compression
        saved = math.floor(ran / self.checkpoint) * self.checkpoint
        wl.run.checkpointed = min(wl.run.job.duration, wl.run.checkpointed + saved)
        gpus = wl.run.job.gpus
        self.losses.append(Loss(cls, gpus, ran, (ran - saved) * gpus, ran * gpus))

    def _evict(self, wl: Workload, reason: str) -> None:
        """Kueue preemption: suspend the Job (its pods get SIGTERM), requeue the workload."""
        self.evictions[reason] = self.evictions.get(reason, 0) + 1
        if wl.background_until is not None:
            self.background_evicted += 1
            self._drop_background(wl)
            return
        job = self._job(wl.namespace, wl.job_name)
        if wl.started_wall is not None:
            self._account(wl, "preempted_by_quota")
            wl.started_wall = None
        self._release(wl)
        wl.queued_at = self.now()
        wl.quota_message = f"evicted: {reason}"
        if job is not None:
            self._stop_pods(job)
            job["spec"]["suspend"] = True
            job["status"]["conditions"] = [
                _condition("Suspended", "True", "JobSuspended", f"Kueue: {reason}")
            ]
            self._update("jobs", job)

    def _kill(self, wl: Workload, outcome: str, cls: str) -> None:
        if wl.background_until is not None:
            self._drop_background(wl)
            return
        pod = self.pod_of.get(wl.job_name)
        sim = self._sims.get(pod) if pod else None
        if pod is None or sim is None or wl.started_wall is None:
            return
        wl.failure = cls
        sim.script = PodScript(outcome, run=0.0)
        self._outcome(wl.namespace, pod)

    # ---- the periodic controllers -------------------------------------------------------------
    def _tick(self) -> None:
        if self._stop.is_set():
            return
        now = self.now()
        dt = now - self._last_tick
        self._last_tick = now
        used = sum(self.usage[t][f] for t in self.usage for f in self.pools)
        cap = sum(self.pool_size.values()) * NODE_QUARTERS
        self.util_used += used * dt
        self.util_cap += cap * dt
        self.util_max += sum(p.max_nodes for p in self.pools.values()) * NODE_QUARTERS * dt
        self._chaos(dt, now)
        self._provisioning(now)
        self._admission(now)
        self._after(0.2, self._tick)

    def _chaos(self, dt: float, now: float) -> None:
        rng = self._rng_sim
        p_node = self.node_loss_rate * dt
        for node in list(self.nodes.values()):
            if rng.random() < p_node:
                for job in list(node.jobs):
                    wl = self.workloads.get(job)
                    if wl is not None:
                        self._kill(wl, "node_lost", "node_lost")
                self._remove_node(node)  # gone; its workloads fail and release nothing here
            elif (
                not node.jobs
                and node.flavor.endswith("on-demand")
                and now - node.idle_since > 600
                and self.pool_size[node.flavor] > self.pools[node.flavor].nodes
            ):
                self._remove_node(node)  # the autoscaler scales an idle node down
        p_spot = self.spot_rate * dt
        for wl in list(self.workloads.values()):
            if wl.background_until is not None:
                if now >= wl.background_until:
                    self._drop_background(wl)
                continue
            if (
                wl.state == "admitted"
                and wl.flavor
                and wl.flavor.endswith("spot")
                and rng.random() < p_spot
            ):
                self._kill(wl, "preempt", "preempted_spot")
        # a spot pool refills (the provider hands the capacity back)
        for flavor, pool in self.pools.items():
            if pool.capacity == "spot" and self.pool_size[flavor] < pool.nodes:
                self._add_node(pool, now)

    def _provisioning(self, now: float) -> None:
        for wl in list(self.workloads.values()):
            if wl.state != "provisioning" or wl.provision_ready is None:
                continue
            if now < wl.provision_ready:
                continue
            flavor = wl.flavor or ""
            if self._rng_sim.random() < self.provision_fail and wl.provision_failures < 3:
                wl.provision_failures += 1  # Failed: Kueue retries after its backoff
                wl.provision_ready = now + 60 * 2**wl.provision_failures + self._delay()
                continue
            self.pending_nodes[flavor] -= 1
            node = self._add_node(self.pools[flavor], now)
            self.provisioned += 1
            self.provision_waits.append(now - (wl.provision_started or now))
            wl.provision_ready = None
            self._admit_reserved(wl, node, now)

    def _admit_reserved(self, wl: Workload, node: Node, now: float) -> None:
        flavor = node.flavor
        wl.state = "pending"
        self.usage[wl.team][flavor] -= wl.quarters
        self._book(wl, flavor, node, now)

    def _book(self, wl: Workload, flavor: str, node: Node, now: float) -> None:
        self.usage[wl.team][flavor] += wl.quarters
        wl.flavor = flavor
        self._admit(wl, node, now)

    def _delay(self) -> float:
        return self._rng_sim.uniform(*self.provision_delay)

    def _admission(self, now: float) -> None:
        pending = [w for w in self.workloads.values() if w.state == "pending"]
        pending.sort(key=lambda w: (-w.priority, w.queued_at))
        cohort_nominal = {f: sum(self.quota[t][f] for t in self.quota) for f in self.pools}
        cohort_usage = {f: sum(self.usage[t][f] for t in self.usage) for f in self.pools}
        preempted = tries = 0
        for wl in pending[: self.max_scan]:
            for flavor in wl.flavors():
                q = wl.quarters
                team_usage = self.usage[wl.team][flavor]
                nominal = self.quota[wl.team][flavor]
                fits_nominal = team_usage + q <= nominal
                fits_cohort = cohort_usage[flavor] + q <= cohort_nominal[flavor]
                if fits_nominal or fits_cohort:
                    node = self._best_fit(flavor, q)
                    if node is not None:
                        wl.borrowing = not fits_nominal
                        self._book(wl, flavor, node, now)
                        cohort_usage[flavor] += q
                        break
                    pool = self.pools[flavor]
                    if (
                        pool.capacity == "on-demand"
                        and self.pool_size[flavor] + self.pending_nodes[flavor] < pool.max_nodes
                    ):
                        # quota reserved, a ProvisioningRequest asks for a node
                        self.usage[wl.team][flavor] += q
                        cohort_usage[flavor] += q
                        self.pending_nodes[flavor] += 1
                        wl.state, wl.flavor = "provisioning", flavor
                        wl.provision_ready = now + self._delay()
                        wl.provision_started_wall = time.time()
                        wl.provision_started = now
                        break
                    wl.quota_message = f"no node of {flavor} has {q / 4:g} GPUs free"
                    continue
                wl.quota_message = (
                    f"insufficient unused quota for nvidia.com/gpu in flavor {flavor}, "
                    f"{(team_usage + q - nominal) / 4:g} more needed"
                )
                tries += 1
                if tries < 50 and preempted < 20 and self._preempt(wl, flavor, fits_nominal, q):
                    preempted += 1
                    # admitted on a later tick, once the victims are gone
                    break

    def _preempt(self, wl: Workload, flavor: str, fits_nominal: bool, q: int) -> bool:
        """Kueue's classic preemption on one node: reclaim from borrowers when ``wl`` fits its
        nominal quota, else lower priority within its team, or (borrowing) batch work of other
        teams. Victims: borrowers first, then lowest priority, then most recently admitted."""
        for node in self.nodes.values():
            if node.flavor != flavor:
                continue
            victims: list[Workload] = []
            for name in node.jobs:
                other = self.workloads.get(name)
                if other is None or other.state != "admitted":
                    continue
                if fits_nominal and other.team != wl.team and other.borrowing:
                    victims.append(other)  # reclaimWithinCohort: Any
                elif other.team == wl.team and other.priority < wl.priority:
                    victims.append(other)  # withinClusterQueue: LowerPriority
                elif (
                    not fits_nominal
                    and other.team != wl.team
                    and other.priority <= 100
                    and other.priority < wl.priority
                ):
                    victims.append(other)  # borrowWithinCohort, maxPriorityThreshold 100
            victims.sort(key=lambda v: (not v.borrowing, v.priority, -(v.started_wall or 0)))
            free = node.free
            chosen = []
            for victim in victims:
                if free >= q:
                    break
                chosen.append(victim)
                free += victim.quarters
            if free >= q and chosen:
                for victim in chosen:
                    reason = (
                        "InCohortReclamation"
                        if victim.team != wl.team and fits_nominal
                        else "InClusterQueue"
                        if victim.team == wl.team
                        else "InCohortReclaimWhileBorrowing"
                    )
                    self._evict(victim, reason)
                return True
        return False

    # ---- figures ----------------------------------------------------------------------------
    def _workload_json(self, wl: Workload) -> Obj:
        created = rfc3339(wl.created_wall)
        if wl.state == "provisioning":
            since = rfc3339(wl.provision_started_wall or wl.created_wall)
            return {
                "metadata": {"creationTimestamp": created},
                "spec": {"active": True},
                "status": {
                    "conditions": [_condition("QuotaReserved", "True", "QuotaReserved", "", since)],
                    "admissionChecks": [
                        {
                            "name": "gpu-provisioning",
                            "state": "Retry" if wl.provision_failures else "Pending",
                            "lastTransitionTime": since,
                            "message": "waiting for ProvisioningRequest",
                        }
                    ],
                },
            }
        return {
            "metadata": {"creationTimestamp": created},
            "spec": {"active": True},
            "status": {
                "conditions": [
                    _condition("QuotaReserved", "False", "Pending", wl.quota_message, created)
                ]
            },
        }

    def stats(self) -> Obj:
        with self.lock:
            base = super().stats()
            now_wall = time.time()
            phases: dict[str, int] = {}
            for wl in self.workloads.values():
                if wl.state == "admitted":
                    phases["admitted"] = phases.get("admitted", 0) + 1
                    continue
                adm = admission_of(self._workload_json(wl))
                obs = pending_observation(adm, now=now_wall)
                phase = adm.phase.value
                phases[phase] = phases.get(phase, 0) + 1
                if (
                    adm.phase is AdmissionPhase.PROVISIONING
                    and obs is not None
                    and obs.reason != "Provisioning"
                ):
                    self.wrongly_unschedulable += 1
            losses: dict[str, list[float]] = {}
            for loss in self.losses:
                entry = losses.setdefault(loss.cls, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += loss.lost_checkpoint
                entry[2] += loss.lost_scratch
            done = [r for r in self.jobs.values() if r.done]
            base.update(
                {
                    "sim_seconds": self.now(),
                    "workloads": len(self.workloads),
                    "phases": phases,
                    "wrongly_unschedulable": self.wrongly_unschedulable,
                    "admitted_total": self.admitted_total,
                    "completed_runs": len(done),
                    "nodes": dict(self.pool_size),
                    "max_nodes": {f: p.max_nodes for f, p in self.pools.items()},
                    "provisioned_nodes": self.provisioned,
                    "provision_wait_p50": _median(self.provision_waits),
                    "utilisation_existing": self.util_used / self.util_cap if self.util_cap else 0,
                    "utilisation_max": self.util_used / self.util_max if self.util_max else 0,
                    "queue_delay": {
                        t: {
                            "n": len(v),
                            "p50": _median(v),
                            "p90": _quantile(v, 0.9),
                        }
                        for t, v in sorted(self.queue_delays.items())
                    },
                    "evictions": dict(self.evictions),
                    "background_left": sum(
                        1 for w in self.workloads.values() if w.background_until is not None
                    ),
                    "background_evicted": self.background_evicted,
                    "t0": self._t0,
                    "submit_to_admitted": _delays(self.jobs, "admitted"),
                    "submit_to_created": _delays(self.jobs, "created"),
                    "losses": losses,
                    "useful_gpu_seconds": sum(r.job.duration * r.job.gpus for r in done),
                }
            )
            return base


def _condition(ctype: str, status: str, reason: str, message: str, at: str | None = None) -> Obj:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": at or rfc3339(time.time()),
        "lastTransitionTime": at or rfc3339(time.time()),
    }


def _delays(jobs: dict[str, RunState], what: str) -> dict[str, dict[str, float | None]]:
    """Per team: simulated seconds from a run's submission to its first Job (the engine's lag)
    or to its first admission (the engine's lag plus the queue)."""
    by_team: dict[str, list[float]] = {}
    for run in jobs.values():
        at = run.first_admitted if what == "admitted" else run.first_created
        if at is not None:
            by_team.setdefault(run.job.team, []).append(at - run.job.arrival)
    return {
        t: {"n": len(v), "p50": _median(v), "p90": _quantile(v, 0.9)}
        for t, v in sorted(by_team.items())
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster's and the workload's knobs (shared with the driver)."""
    parser.add_argument("--jobs", type=int, default=20000, help="jobs (runs) in the workload")
    parser.add_argument("--nodes", type=int, default=1000, help="8-GPU nodes at most")
    parser.add_argument("--initial-share", type=float, default=0.8, help="nodes at the start")
    parser.add_argument("--compression", type=float, default=60.0, help="sim s per wall s")
    parser.add_argument("--arrival-rate", type=float, default=1.0, help="jobs per sim second")
    parser.add_argument("--checkpoint", type=float, default=1800.0, help="sim s between saves")
    parser.add_argument("--node-loss-per-1000-node-hours", type=float, default=1.0)
    parser.add_argument("--spot-preemptions-per-job-hour", type=float, default=0.1)
    parser.add_argument("--oom-share", type=float, default=0.03, help="first attempts that OOM")
    parser.add_argument("--provision-min", type=float, default=180.0, help="sim s")
    parser.add_argument("--provision-max", type=float, default=360.0, help="sim s")
    parser.add_argument("--provision-failure-share", type=float, default=0.05)
    parser.add_argument("--max-scan", type=int, default=2000, help="pending scanned per tick")
    parser.add_argument(
        "--background", type=float, default=0.7, help="share of GPUs busy with other work at start"
    )
    parser.add_argument("--seed", type=int, default=7)


def main() -> None:  # pragma: no cover - started by benchmarks/cluster_sim.py
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    cluster = SimCluster(args)
    cluster.start()
    print(f"READY {cluster.url}", flush=True)
    try:
        sys.stdin.read()
    finally:
        cluster.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
