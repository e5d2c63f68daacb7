"""PipelineMetrics folds each finished run and attempt into its counters exactly once, follows
open runs for the gauges, and counts only the new work of a resumed run."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from usina.engine.records import (
    AttemptId,
    AttemptRecord,
    AttemptState,
    Event,
    RunId,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
)
from usina.monitoring.pipeline_metrics import PipelineMetrics
from usina.sdk.retry import FailureClass
from usina.testing.fakes import InMemoryMetadataStore

T0 = 1_700_000_000.0
PLAN = {"nodes": [{"id": "prep", "upstream": []}, {"id": "train", "upstream": ["prep"]}]}


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 1000

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    store = InMemoryMetadataStore()
    clock = Clock()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineMetrics(store, clock=clock))

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    return store, clock, value


def _run(store, rid, state, created, team="fraud"):
    run = RunRecord(
        id=RunId(rid),
        pipeline="p",
        plan=PLAN,
        params={},
        state=state,
        created_at=created,
        labels={"team": team},
    )
    steps = [StepRecord(RunId(rid), n, StepState.PENDING, {}) for n in ("prep", "train")]
    store.create_run(run, steps)
    return run


def _attempt(rid, n, state, start, end, gpus=1, klass=None):
    return AttemptRecord(
        id=AttemptId(f"{rid}-train-{n}"),
        run_id=RunId(rid),
        node="train",
        number=n,
        state=state,
        resources={},
        started_at=start,
        finished_at=end,
        failure_class=klass,
        gpus=gpus,
    )


def test_counters_fold_once_and_grow_with_new_runs(world):
    store, clock, value = world
    run = _run(store, "r1", RunState.RUNNING, T0)
    store.save_attempt(
        _attempt("r1", 1, AttemptState.FAILED, T0 + 10, T0 + 110, 2, FailureClass.OOM)
    )
    store.add_event(Event(RunId("r1"), T0 + 15, "attempt_running", "train", "r1-train-1"))
    store.save_attempt(_attempt("r1", 2, AttemptState.RUNNING, T0 + 200, None, 2))
    store.save_step(
        StepRecord(RunId("r1"), "prep", StepState.SUCCEEDED, {}, started_at=T0, finished_at=T0 + 5)
    )
    store.save_step(StepRecord(RunId("r1"), "train", StepState.RUNNING, {}, attempts=2))

    labels = {"pipeline": "p", "team": "fraud"}
    for _ in range(3):  # scraping again changes nothing
        assert value("usina_attempts_total", **labels, outcome="failed", failure_class="oom") == 1
        assert value("usina_gpu_seconds_wasted_total", **labels, failure_class="oom") == 200
        assert value("usina_steps_running", **labels) == 1
        assert value("usina_gpus_in_use", **labels) == 2
        assert value("usina_pipeline_runs_active", **labels, state="running") == 1
        assert value("usina_queue_wait_seconds_count", **labels) == 1
        assert value("usina_queue_wait_seconds_sum", **labels) == 5
        assert (
            value(
                "usina_step_duration_seconds_count", pipeline="p", step="prep", outcome="succeeded"
            )
            == 1
        )
        assert value("usina_pipeline_metrics_up") == 1

    # The run finishes: its second attempt is used GPU time, not wasted.
    store.save_attempt(_attempt("r1", 2, AttemptState.SUCCEEDED, T0 + 200, T0 + 500, 2))
    store.save_step(
        StepRecord(
            RunId("r1"),
            "train",
            StepState.SUCCEEDED,
            {},
            attempts=2,
            started_at=T0 + 10,
            finished_at=T0 + 500,
        )
    )
    store.save_run(replace(run, state=RunState.SUCCEEDED, finished_at=T0 + 500))
    _run(store, "r2", RunState.FAILED, T0 + 600)
    clock.now += 100
    for _ in range(2):
        assert value("usina_pipeline_runs_total", **labels, outcome="succeeded") == 1
        assert value("usina_pipeline_runs_total", **labels, outcome="failed") == 1
        assert (
            value("usina_attempts_total", **labels, outcome="succeeded", failure_class="none") == 1
        )
        assert value("usina_gpu_seconds_total", **labels) == 800
        assert value("usina_gpu_seconds_wasted_total", **labels, failure_class="oom") == 200
        assert value("usina_steps_running", **labels) is None
        assert (
            value(
                "usina_step_duration_seconds_count", pipeline="p", step="train", outcome="succeeded"
            )
            == 1
        )


def test_waiting_steps_and_their_age(world):
    store, clock, value = world
    _run(store, "r1", RunState.PENDING, T0 + 400)  # nobody has picked it up: prep is ready
    labels = {"pipeline": "p", "team": "fraud"}
    assert value("usina_steps_waiting", **labels) == 1  # train waits for prep: not ready
    assert value("usina_steps_waiting_oldest_seconds", **labels) == 600
    store.save_step(
        StepRecord(
            RunId("r1"), "prep", StepState.SUCCEEDED, {}, started_at=T0 + 500, finished_at=T0 + 900
        )
    )
    assert value("usina_steps_waiting_oldest_seconds", **labels) == 100
    store.save_step(
        StepRecord(RunId("r1"), "train", StepState.BACKOFF, {}, next_attempt_at=T0 + 950)
    )
    assert value("usina_steps_waiting_oldest_seconds", **labels) == 50


def test_a_resumed_run_counts_only_its_new_attempts(world):
    store, clock, value = world
    run = _run(store, "r1", RunState.FAILED, T0)
    store.save_attempt(
        _attempt("r1", 1, AttemptState.FAILED, T0, T0 + 100, 1, FailureClass.USER_ERROR)
    )
    labels = {"pipeline": "p", "team": "fraud"}
    assert (
        value("usina_attempts_total", **labels, outcome="failed", failure_class="user_error") == 1
    )
    # `usina runs resume`: the same run runs again and succeeds
    store.save_run(replace(run, state=RunState.RUNNING, finished_at=None))
    store.add_event(Event(RunId("r1"), T0 + 300, "run_resumed"))
    assert value("usina_pipeline_runs_active", **labels, state="running") == 1
    store.save_attempt(_attempt("r1", 2, AttemptState.SUCCEEDED, T0 + 310, T0 + 410, 1))
    store.save_run(replace(run, state=RunState.SUCCEEDED, finished_at=T0 + 410))
    assert (
        value("usina_attempts_total", **labels, outcome="failed", failure_class="user_error") == 1
    )
    assert value("usina_attempts_total", **labels, outcome="succeeded", failure_class="none") == 1
    assert value("usina_pipeline_runs_total", **labels, outcome="failed") == 1
    assert value("usina_pipeline_runs_total", **labels, outcome="succeeded") == 1


def test_a_store_that_fails_is_reported_not_raised(world):
    store, clock, value = world
    _run(store, "r1", RunState.SUCCEEDED, T0)
    assert value("usina_pipeline_runs_total", pipeline="p", team="fraud", outcome="succeeded") == 1

    def broken(**kwargs):
        raise OSError("database is gone")

    store.list_runs = broken
    assert value("usina_pipeline_metrics_up") == 0
    # what was counted stays counted
    assert value("usina_pipeline_runs_total", pipeline="p", team="fraud", outcome="succeeded") == 1
