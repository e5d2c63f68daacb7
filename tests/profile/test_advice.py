"""Right-sizing advice from profiles: a percentile of the peaks plus a margin, and warnings."""

from __future__ import annotations

import pytest

from tests.profile.factory import GI, MI, World
from usina.monitoring.advice import AdviceSettings, advise_pipeline, format_cpu


def test_a_step_that_asked_4gi_and_peaked_at_1gi_is_advised_below_2gi_and_told_why():
    world = World()
    for _ in range(3):
        world.run("train", [{"step": "fit", "memory": "4Gi", "peak": 1 * GI}])
    [advice] = advise_pipeline(world.metadata, world.artifacts, "train")
    assert advice.step == "fit"
    assert advice.attempts == 3
    assert advice.requested_memory == 4 * GI
    assert advice.memory is not None
    assert GI <= advice.memory < 2 * GI
    assert advice.memory == pytest.approx(1.15 * GI, abs=MI)  # p95 of the peaks + 15 %
    assert "p95 of the peaks of the last 3 successful attempt(s)" in advice.explanation
    assert "+ 15% margin" in advice.explanation
    assert "requested 4Gi" in advice.explanation
    kinds = [f.kind for f in advice.findings]
    assert kinds == ["memory_underused"] * 3
    assert "used at most 1Gi of its 4Gi memory request (25%)" in advice.findings[0].message
    as_json = advice.to_json()
    assert as_json["recommended"]["memory_quantity"] == "1178Mi"
    assert as_json["requested"]["memory"] == 4 * GI


def test_the_percentile_ignores_one_outlier_but_a_busy_step_gets_no_warning():
    world = World()
    peaks = [3.0 * GI] * 19 + [3.8 * GI]
    for peak in peaks:
        world.run("train", [{"step": "fit", "memory": "4Gi", "peak": peak}])
    [advice] = advise_pipeline(
        world.metadata, world.artifacts, "train", AdviceSettings(history=20, runs=20)
    )
    assert advice.attempts == 20
    assert advice.memory is not None
    assert advice.memory < 3.8 * 1.15 * GI  # p95 between 3Gi and the outlier
    assert advice.memory > 3.0 * 1.15 * GI
    assert advice.findings == ()


def test_an_oom_tells_the_memory_that_would_have_sufficed():
    world = World()
    world.run(
        "train",
        [
            {
                "step": "fit",
                "memory": "1Gi",
                "series": [0.1 * GI, 0.6 * GI, 0.99 * GI],
                "failure": "oom",
            },
            {"step": "fit", "memory": "4Gi", "peak": 1.5 * GI},
        ],
    )
    [advice] = advise_pipeline(world.metadata, world.artifacts, "train")
    [oom] = advice.ooms
    assert oom.limit == GI
    assert oom.peak_before_kill == int(0.99 * GI)
    assert oom.would_suffice == pytest.approx(1.5 * 1.15 * GI, abs=MI)
    assert "attempt 2 succeeded with a peak of 1536Mi" in oom.explanation
    assert advice.attempts == 1  # advice learns from successes only


def test_an_oom_with_no_success_after_it_only_gives_a_floor():
    world = World()
    world.run(
        "train",
        [{"step": "fit", "memory": "1Gi", "series": [0.5 * GI, 0.99 * GI], "failure": "oom"}],
        state=world_failed(),
    )
    [advice] = advise_pipeline(world.metadata, world.artifacts, "train")
    [oom] = advice.ooms
    assert oom.would_suffice is None
    assert "needs more than that" in oom.explanation
    assert advice.memory is None
    assert "no successful attempt with a profile yet" in advice.explanation


def world_failed():
    from usina.engine.records import RunState

    return RunState.FAILED


def test_a_held_gpu_at_low_utilisation_is_flagged():
    world = World()
    world.run(
        "train",
        [
            {
                "step": "idle",
                "memory": "2Gi",
                "peak": 1.5 * GI,
                "gpus": 1,
                "series": [GI] * 11,
                "gpu_util": [[3.0] * 11],
            },
            {
                "step": "busy",
                "memory": "2Gi",
                "gpus": 1,
                "series": [1.5 * GI] * 11,
                "gpu_util": [[92.0] * 11],
            },
        ],
    )
    advice = {a.step: a for a in advise_pipeline(world.metadata, world.artifacts, "train")}
    [finding] = [f for f in advice["idle"].findings if f.kind == "gpu_idle"]
    assert "mean utilisation of 3.0%" in finding.message
    assert "(0.2 GPU-minutes idle)" in finding.message  # 10 s
    assert [f.kind for f in advice["busy"].findings] == []


def test_cpu_recommendation_and_quantities():
    world = World()
    world.run("etl", [{"step": "load", "memory": "2Gi", "peak": 1.2 * GI}])
    [advice] = advise_pipeline(world.metadata, world.artifacts, "etl")
    assert advice.cpu == pytest.approx(1.2)  # 1 core busy + 15 %, rounded up to 100m
    assert format_cpu(1.2) == "1200m"
    assert format_cpu(2.0) == "2"
