"""The reconciler on fakes: state transitions, retries on a fake clock, cache, cancel, resume."""

from __future__ import annotations

import json

import pytest

from usina import FailureClass, Resources, Retry, pipeline, step
from usina.engine.engine import Engine, EngineSettings
from usina.engine.ports import result_key
from usina.engine.records import AttemptState, RunState, StepState
from usina.testing import InMemoryArtifactStore, InMemoryMetadataStore
from usina.testing.backend import FakeBackend
from usina.testing.clock import FakeClock

F = FailureClass


@step
def extract() -> int:
    return 1


@step(retry=Retry(user=3, backoff=1.0, backoff_factor=2.0))
def transform(x: int) -> int:
    return x


@step(retry=Retry(oom=2, oom_grow=2.0), resources=Resources(memory="1Gi"))
def train(x: int) -> int:
    return x


@step
def report(a: int, b: int) -> int:
    return a + b


@pipeline
def etl():
    x = extract()
    report(transform(x), train(x))


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
        settings=EngineSettings(max_parallel=4, poll_interval=1.0, environment="test-env"),
    )
    return engine, backend, metadata, clock


def _states(metadata, run_id):
    return {s.node: s.state for s in metadata.get_steps(run_id)}


def test_a_clean_run_succeeds_with_one_attempt_per_step(world):
    engine, backend, metadata, _ = world
    run = engine.submit(etl.compile())
    final = engine.drive(run.id)
    assert final.state is RunState.SUCCEEDED
    assert set(_states(metadata, run.id).values()) == {StepState.SUCCEEDED}
    attempts = metadata.get_attempts(run.id)
    assert sorted(a.node for a in attempts) == ["extract", "report", "train", "transform"]
    assert all(a.state is AttemptState.SUCCEEDED for a in attempts)
    # outputs flow: report got the artifacts of transform and train
    report_task = next(x.task for x in backend.launched.values() if x.task.node["id"] == "report")
    assert set(report_task.inputs) == {"a", "b"}
    assert all("artifact" in v for v in report_task.inputs.values())


def test_user_error_retries_follow_the_exponential_schedule_exactly(world):
    engine, backend, metadata, clock = world
    backend.script("transform", F.USER_ERROR, F.USER_ERROR, F.USER_ERROR, "ok")
    t0 = clock.now()
    run = engine.submit(etl.compile())
    final = engine.drive(run.id)
    assert final.state is RunState.SUCCEEDED
    starts = [a.started_at - t0 for a in metadata.get_attempts(run.id, "transform")]
    # extract runs 0..1; transform #1 starts at 1, fails seen at 2, waits 1 -> #2 at 3,
    # fails seen at 4, waits 2 -> #3 at 6, fails seen at 7, waits 4 -> #4 at 11.
    assert starts == [1.0, 3.0, 6.0, 11.0]
    classes = [a.failure_class for a in metadata.get_attempts(run.id, "transform")]
    assert classes == [F.USER_ERROR, F.USER_ERROR, F.USER_ERROR, None]


def test_user_error_past_the_budget_fails_the_run_and_skips_downstream(world):
    engine, backend, metadata, _ = world
    backend.script("transform", *([F.USER_ERROR] * 4))
    run = engine.submit(etl.compile())
    final = engine.drive(run.id)
    assert final.state is RunState.FAILED
    states = _states(metadata, run.id)
    assert states["transform"] is StepState.FAILED
    assert states["report"] is StepState.SKIPPED
    assert states["train"] is StepState.SUCCEEDED
    assert "transform" in (final.error or "")
    assert len(metadata.get_attempts(run.id, "transform")) == 4


def test_oom_retry_grows_memory_in_the_next_task(world):
    engine, backend, metadata, _ = world
    backend.script("train", F.OOM, F.OOM, "ok")
    run = engine.submit(etl.compile())
    assert engine.drive(run.id).state is RunState.SUCCEEDED
    memories = [a.resources["memory"] for a in metadata.get_attempts(run.id, "train")]
    assert memories == ["1Gi", "2Gi", "4Gi"]
    tasks = [x.task for x in backend.launched.values() if x.task.node["id"] == "train"]
    assert [t.resources.memory for t in tasks] == ["1Gi", "2Gi", "4Gi"]


def test_preemptions_do_not_use_the_user_budget(world):
    engine, backend, metadata, _ = world
    backend.script("extract", F.PREEMPTED, F.NODE_LOST, F.PREEMPTED, "ok")
    run = engine.submit(etl.compile())  # extract has Retry(user=0)
    assert engine.drive(run.id).state is RunState.SUCCEEDED
    assert len(metadata.get_attempts(run.id, "extract")) == 4


def test_unschedulable_fails_without_retry(world):
    engine, backend, metadata, _ = world
    backend.script("extract", F.UNSCHEDULABLE)
    run = engine.submit(etl.compile())
    final = engine.drive(run.id)
    assert final.state is RunState.FAILED
    assert len(metadata.get_attempts(run.id, "extract")) == 1


def test_second_run_is_fully_cached_and_a_changed_param_is_not(world):
    engine, backend, metadata, _ = world
    first = engine.drive(engine.submit(etl.compile()).id)
    launched = len(backend.launch_calls)
    second = engine.drive(engine.submit(etl.compile()).id)
    assert second.state is RunState.SUCCEEDED
    assert len(backend.launch_calls) == launched  # nothing ran
    assert all(s.cached for s in metadata.get_steps(second.id))
    assert first.id != second.id


def test_a_cached_result_with_a_deleted_artifact_is_recomputed(world):
    engine, backend, metadata, _ = world
    first = engine.drive(engine.submit(etl.compile()).id)
    extract_out = next(s for s in metadata.get_steps(first.id) if s.node == "extract").outputs[0]
    engine.artifacts.delete(extract_out.digest)
    before = len(backend.launch_calls)
    second = engine.drive(engine.submit(etl.compile()).id)
    assert second.state is RunState.SUCCEEDED
    ran = [a.node for a in metadata.get_attempts(second.id)]
    assert "extract" in ran
    assert len(backend.launch_calls) > before


def test_concurrency_limit_is_respected(world):
    engine, backend, metadata, _ = world
    engine.settings = EngineSettings(max_parallel=1, environment="test-env")
    run = engine.submit(etl.compile())
    max_running = 0
    while True:
        rec = engine.reconcile(run.id)
        running = [a for a in metadata.get_attempts(run.id) if a.state is AttemptState.RUNNING]
        max_running = max(max_running, len(running))
        if rec.state.finished:
            break
    assert max_running == 1


def test_cancel_stops_running_steps_and_skips_the_rest(world):
    engine, backend, metadata, _ = world
    backend.hold.add("transform")
    run = engine.submit(etl.compile())
    for _ in range(3):
        engine.reconcile(run.id)
    engine.cancel(run.id)
    final = engine.drive(run.id)
    assert final.state is RunState.CANCELLED
    states = _states(metadata, run.id)
    assert states["transform"] is StepState.CANCELLED
    assert states["report"] is StepState.CANCELLED
    att = metadata.get_attempts(run.id, "transform")[-1]
    assert att.failure_class is F.CANCELLED


def test_resume_reruns_failed_steps_only_and_resets_their_budget(world):
    engine, backend, metadata, _ = world
    backend.script("transform", *([F.USER_ERROR] * 4))
    run = engine.submit(etl.compile())
    assert engine.drive(run.id).state is RunState.FAILED
    launched_before = {
        a.node: len(metadata.get_attempts(run.id, a.node)) for a in metadata.get_attempts(run.id)
    }
    engine.resume(run.id, etl.compile())
    final = engine.drive(run.id)
    assert final.state is RunState.SUCCEEDED
    counts = {n: len(metadata.get_attempts(run.id, n)) for n in launched_before}
    assert counts["extract"] == 1
    assert counts["train"] == 1
    assert counts["transform"] == 5  # one more attempt after resume
    assert len(metadata.get_attempts(run.id, "report")) == 1


def test_a_crash_between_claim_and_launch_relaunches_the_same_attempt(world):
    engine, backend, metadata, _ = world
    run = engine.submit(etl.compile())
    engine.reconcile(run.id)  # launches extract
    [attempt] = metadata.get_attempts(run.id)
    # Simulate a new backend that never heard of it (the old process died before launching).
    backend.launched.clear()
    final = engine.drive(run.id)
    assert final.state is RunState.SUCCEEDED
    ids = [a.id for a in metadata.get_attempts(run.id, "extract")]
    assert ids == [attempt.id]  # same attempt, launched again under its own id


def test_a_result_written_while_the_engine_was_down_is_adopted(world):
    engine, backend, metadata, _ = world
    run = engine.submit(etl.compile())
    engine.reconcile(run.id)
    [attempt] = metadata.get_attempts(run.id)
    item = backend.launched.pop(attempt.id)
    backend._complete(item)  # the worker finished and wrote its result
    assert engine.artifacts.read_record(result_key(attempt.id)) is not None
    final = engine.drive(run.id)
    assert final.state is RunState.SUCCEEDED
    assert len(metadata.get_attempts(run.id, "extract")) == 1
    assert backend.launch_calls.count(attempt.id) == 1


def test_metrics_from_the_result_reach_the_step_record(world):
    engine, backend, metadata, _ = world
    run = engine.drive(engine.submit(etl.compile()).id)
    steps = {s.node: s for s in metadata.get_steps(run.id)}
    assert steps["report"].metrics == {"attempt": 1.0}
    raw = engine.artifacts.read_record(result_key(metadata.get_attempts(run.id, "report")[0].id))
    assert json.loads(raw)["metrics"] == {"attempt": 1.0}


def test_lease_blocks_a_second_driver(world):
    engine, backend, metadata, clock = world
    run = engine.submit(etl.compile())
    assert metadata.acquire_lease(run.id, "otherhost:1:abc", 30.0, clock.now())
    from usina.errors import StateError

    with pytest.raises(StateError, match="being driven by otherhost"):
        engine.drive(run.id)
    clock.advance(31)
    assert engine.drive(run.id).state is RunState.SUCCEEDED


def test_a_resume_written_by_another_engine_is_seen_by_the_driver(world):
    engine, backend, metadata, clock = world
    backend.script("transform", *([F.USER_ERROR] * 4))
    run = engine.submit(etl.compile())
    assert metadata.acquire_lease(run.id, engine.owner, 30.0, clock.now())
    while not engine.reconcile(run.id).state.finished:  # the driver keeps its mirror
        clock.advance(1.0)
    other = Engine(
        backend=backend,
        metadata=metadata,
        artifacts=engine.artifacts,
        clock=clock,
        settings=engine.settings,
        owner=engine.owner,  # an API engine of the same server process
    )
    other.resume(run.id, etl.compile())
    while not engine.reconcile(run.id).state.finished:
        clock.advance(1.0)
    assert metadata.get_run(run.id).state is RunState.SUCCEEDED
    assert len(metadata.get_attempts(run.id, "transform")) == 5


@step(env=["USINA_TEST_TOKEN"], resources=Resources(memory="3Gi"))
def needs_token() -> int:
    return 1


@pipeline
def with_env():
    needs_token()


def test_the_engine_submits_exactly_what_build_task_builds(monkeypatch) -> None:
    from usina.engine.tasks import build_task, task_env

    monkeypatch.setenv("USINA_TEST_TOKEN", "s3cret")
    clock = FakeClock()
    artifacts = InMemoryArtifactStore()
    backend = FakeBackend(artifacts, clock)
    settings = EngineSettings(environment="test-env", env={"LOG_LEVEL": "debug"})
    engine = Engine(
        backend=backend,
        metadata=InMemoryMetadataStore(),
        artifacts=artifacts,
        clock=clock,
        settings=settings,
    )
    plan = with_env.compile()
    run = engine.submit(plan, labels={"team": "ml"})
    engine.reconcile(run.id)
    (launched,) = backend.launched.values()
    node = plan.node("needs_token")
    built = build_task(
        plan,
        node,
        run_id=run.id,
        artifacts_url=artifacts.url,
        env=task_env(node, base=settings.env),
        run_labels=run.labels,
    )
    assert launched.task == built
    assert built.env == {"LOG_LEVEL": "debug", "USINA_TEST_TOKEN": "s3cret"}
    assert built.labels["usina.dev/team"] == "ml"
    assert built.labels["usina.dev/attempt"] == "1"
    assert built.resources == Resources(memory="3Gi")


def _with_code(plan, node_id: str, code: str):
    from dataclasses import replace as dc_replace

    from usina.sdk.pipeline import Plan

    nodes = tuple(
        dc_replace(n, code_hash=code, code_deps={"helpers.py:f": code}) if n.id == node_id else n
        for n in plan.nodes
    )
    return Plan(plan.pipeline, plan.params, nodes, plan.source, plan.sys_path)


def test_resume_reruns_a_step_whose_code_changed_and_its_dependents_only(world):
    engine, _backend, metadata, _ = world
    run = engine.submit(etl.compile())
    assert engine.drive(run.id).state is RunState.SUCCEEDED
    finished = metadata.get_run(run.id).finished_at
    # nothing changed: a no-op that leaves the run alone
    assert engine.reruns(run.id, etl.compile()) == {}
    assert engine.resume(run.id, etl.compile()).finished_at == finished

    changed = _with_code(etl.compile(), "train", "new")
    why = engine.reruns(run.id, changed)
    assert set(why) == {"train", "report"}
    assert why["train"].startswith("code of helpers.py:f")
    engine.resume(run.id, changed)
    assert engine.drive(run.id).state is RunState.SUCCEEDED
    counts = {n: len(metadata.get_attempts(run.id, n)) for n in ("extract", "transform")}
    assert counts == {"extract": 1, "transform": 1}
    assert len(metadata.get_attempts(run.id, "train")) == 2
    assert len(metadata.get_attempts(run.id, "report")) == 2
    assert engine.reruns(run.id, changed, ["transform"]) == {
        "transform": "--rerun",
        "report": "upstream step 'transform' runs again",
    }
