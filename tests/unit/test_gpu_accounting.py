"""GPU accounting counts every node of a gang: a 2-node x 2-GPU step holds 4 GPUs.

``Resources`` are per node, so an attempt of a distributed step holds ``gpus x nodes``. The
attempt record, its GPU-seconds, the wasted-GPU KPI and the ``usina_gpus_in_use`` gauge must
all agree on that (they once counted one node's GPUs only).
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from usina import FailureClass, Resources, Torchrun, pipeline, step
from usina.engine.engine import Engine, EngineSettings
from usina.engine.records import AttemptState, RunState
from usina.monitoring.kpi import compute_kpis
from usina.monitoring.pipeline_metrics import PipelineMetrics
from usina.testing import InMemoryArtifactStore, InMemoryMetadataStore
from usina.testing.backend import FakeBackend
from usina.testing.clock import FakeClock


@step(resources=Resources(cpu=4, memory="8Gi", gpus=2), distributed=Torchrun(2, 2))
def fit() -> int:
    return 1


@pipeline
def gang():
    fit()


@pytest.fixture
def world():
    clock = FakeClock()
    artifacts = InMemoryArtifactStore()
    metadata = InMemoryMetadataStore()
    backend = FakeBackend(artifacts, clock)
    engine = Engine(
        backend=backend,
        metadata=metadata,
        artifacts=artifacts,
        clock=clock,
        settings=EngineSettings(poll_interval=5.0, environment="test-env"),
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineMetrics(metadata, clock=clock.now))
    return engine, backend, metadata, clock, registry


def test_a_two_node_two_gpu_step_counts_four_gpus_everywhere(world) -> None:
    engine, backend, metadata, clock, registry = world
    backend.script("fit", FailureClass.PREEMPTED, "ok")  # one wasted attempt, then success
    backend.hold.add("fit")
    run = engine.submit(gang.compile(), labels={"team": "ml"})
    engine.reconcile(run.id)

    # While it runs: the task asks for 2 GPUs per node, on 2 nodes; the attempt holds 4.
    (launched,) = backend.launched.values()
    assert (launched.task.resources.gpus, launched.task.nodes, launched.task.total_gpus) == (
        2,
        2,
        4,
    )
    (running,) = metadata.get_attempts(run.id)
    assert running.gpus == 4
    labels = {"pipeline": "gang", "team": "ml"}
    assert registry.get_sample_value("usina_gpus_in_use", labels) == 4.0

    clock.advance(60.0)  # the gang runs a minute before it is preempted
    backend.hold.clear()
    final = engine.drive(run.id)
    assert final.state is RunState.SUCCEEDED

    attempts = metadata.get_attempts(run.id, "fit")
    assert [a.state for a in attempts] == [AttemptState.FAILED, AttemptState.SUCCEEDED]
    durations = [(a.finished_at or 0.0) - a.started_at for a in attempts]
    assert all(d > 0 for d in durations)
    assert [a.gpus for a in attempts] == [4, 4]
    assert [a.gpu_seconds for a in attempts] == [4 * d for d in durations]

    kpis = compute_kpis(metadata, since=0.0, until=clock.now() + 1)
    assert kpis["gpu"]["used_hours"] == pytest.approx(4 * sum(durations) / 3600)
    assert kpis["gpu"]["wasted_hours"] == pytest.approx(4 * durations[0] / 3600)
    assert kpis["gpu"]["wasted_hours_by_class"] == {
        "preempted": pytest.approx(4 * durations[0] / 3600)
    }

    assert registry.get_sample_value("usina_gpu_seconds_total", labels) == pytest.approx(
        4 * sum(durations)
    )
    wasted = {**labels, "failure_class": "preempted"}
    assert registry.get_sample_value("usina_gpu_seconds_wasted_total", wasted) == pytest.approx(
        4 * durations[0]
    )
    assert not registry.get_sample_value("usina_gpus_in_use", labels)  # finished: none held
