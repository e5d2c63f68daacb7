"""The simulated cluster behind ``benchmarks/cluster_sim.py`` behaves as the policies it models:
FIFO within priority, preemption of lower priority within a team with the lost work accounted
both ways, a ProvisioningRequest when quota allows but no node has room (reported by usina's
admission functions as provisioning, not unschedulable), and a workload whose shares follow the
trace figures it cites."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator

import pytest
from benchmarks.gpu_cluster.cluster import RUN_ANNOTATION, RunState, SimCluster, add_arguments
from benchmarks.gpu_cluster.workload import SimJob, generate

from usina.backends.kubernetes.admission import AdmissionPhase, admission_of, pending_observation


@pytest.fixture
def cluster() -> Iterator[SimCluster]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--jobs", "0", "--nodes", "10", "--initial-share", "0.5", "--background", "0"]
    )
    sim = SimCluster(args)  # never started: the test calls the controllers itself
    for team in sim.quota:
        for flavor in sim.quota[team]:
            sim.quota[team][flavor] = 0
    sim.quota["fraud"]["l4-on-demand"] = 32  # one node's worth of quarter GPUs
    sim.node_loss_rate = sim.spot_rate = 0.0
    yield sim
    sim.server.server_close()


def submit(sim: SimCluster, index: int, priority: str, quarters: int = 32) -> str:
    job = SimJob(index, "fraud", priority, "l4", quarters, 3600.0, 0.0, None)
    sim.jobs[job.run_id] = RunState(job)
    name = f"{job.run_id}-train-1"
    manifest = {
        "metadata": {"name": name, "annotations": {RUN_ANNOTATION: job.run_id}, "labels": {}},
        "spec": {
            "template": {"metadata": {}, "spec": {"containers": [{"name": "main", "image": "x"}]}}
        },
    }
    with sim.lock:
        sim._create("jobs", "ml", manifest)
        sim._start_job("ml", name)
    return name


def test_fifo_within_priority_and_jobs_start_suspended(cluster: SimCluster) -> None:
    first = submit(cluster, 1, "normal")
    second = submit(cluster, 2, "urgent")
    job = cluster.get("jobs", first)
    assert job is not None
    assert job["spec"]["suspend"] is True
    with cluster.lock:
        cluster._admission(cluster.now())
    assert cluster.workloads[second].state == "admitted"  # higher priority first
    assert cluster.workloads[first].state == "pending"
    assert "insufficient unused quota" in cluster.workloads[first].quota_message
    admitted = cluster.get("jobs", second)
    assert admitted is not None
    assert admitted["spec"]["suspend"] is False
    assert cluster.count("create pods") == 0  # pods are made by the emulator, not requests
    assert len([p for p in cluster.list("pods") if second in p["metadata"]["name"]]) == 1


def test_higher_priority_preempts_lower_in_the_team(cluster: SimCluster) -> None:
    batch = submit(cluster, 1, "batch")
    with cluster.lock:
        cluster._admission(cluster.now())
    assert cluster.workloads[batch].state == "admitted"
    started = cluster.workloads[batch].started_wall
    assert started is not None
    cluster.workloads[batch].started_wall = started - 3000 / cluster.compression  # ran 3000 s
    urgent = submit(cluster, 2, "urgent")
    with cluster.lock:
        cluster._admission(cluster.now())
    assert cluster.evictions == {"InClusterQueue": 1}
    assert cluster.workloads[batch].state == "pending"
    suspended = cluster.get("jobs", batch)
    assert suspended is not None
    assert suspended["spec"]["suspend"] is True
    [loss] = cluster.losses
    assert loss.cls == "preempted_by_quota"
    # 3000 s at 8 GPUs: resuming loses the 1200 s since the 1800 s checkpoint, scratch all of it
    assert loss.lost_checkpoint == pytest.approx(1200 * 8, rel=0.01)
    assert loss.lost_scratch == pytest.approx(3000 * 8, rel=0.01)
    assert cluster.jobs["sim-000001"].checkpointed == 1800
    with cluster.lock:
        cluster._admission(cluster.now())
    assert cluster.workloads[urgent].state == "admitted"


def test_no_room_on_any_node_asks_the_autoscaler(cluster: SimCluster) -> None:
    cluster.quota["fraud"]["l4-on-demand"] = 32 * 4  # quota for 4 nodes, 2 exist
    names = [submit(cluster, i, "normal") for i in range(3)]
    with cluster.lock:
        cluster._admission(cluster.now())
    states = Counter(cluster.workloads[n].state for n in names)
    assert states == {"admitted": 2, "provisioning": 1}
    waiting = next(cluster.workloads[n] for n in names if cluster.workloads[n].state != "admitted")
    adm = admission_of(cluster._workload_json(waiting))
    assert adm.phase is AdmissionPhase.PROVISIONING
    obs = pending_observation(adm, now=waiting.created_wall + 1200)
    assert obs is not None
    assert obs.reason == "Provisioning"
    cluster.provision_fail = 0.0
    with cluster.lock:
        cluster._provisioning(cluster.now() + 400)
    assert waiting.state == "admitted"
    assert cluster.provisioned == 1
    assert cluster.pool_size["l4-on-demand"] == 3


def test_the_workload_follows_the_trace_figures() -> None:
    jobs = generate(20000, seed=1, arrival_rate=1.0, oom_share=0.03)
    n = len(jobs)
    quarters = Counter(j.quarters for j in jobs)
    assert quarters[1] / n == pytest.approx(0.15, abs=0.01)
    assert quarters[2] / n == pytest.approx(0.26, abs=0.01)
    assert quarters[4] / n == pytest.approx(0.43, abs=0.01)
    assert sum(v for q, v in quarters.items() if q > 4) / n == pytest.approx(0.03, abs=0.005)
    durations = sorted(j.duration for j in jobs)
    assert durations[n // 2] == pytest.approx(500, rel=0.15)  # 60 % <= 1000 s, 27 % <= 100 s
    assert sum(d <= 1e4 for d in durations) / n == pytest.approx(0.88, abs=0.01)
    assert jobs[-1].arrival == pytest.approx(n, rel=0.05)  # Poisson at 1 per second
    assert generate(50, seed=1, arrival_rate=1.0, oom_share=0.03) == jobs[:50]
