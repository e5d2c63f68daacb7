"""Contract of ``MetadataStore``: the in-memory fake, SQLite and PostgreSQL behave the same."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from usina.engine.ports import MetadataStore
from usina.engine.records import (
    ArtifactRef,
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
from usina.errors import NotFoundError, StateError, StoreError
from usina.sdk.retry import FailureClass
from usina.stores.sql import SqlMetadataStore, normalize_url
from usina.testing import InMemoryMetadataStore

TABLES = ("events", "attempts", "steps", "cache", "runs")


@pytest.fixture(
    params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "fake":
        yield InMemoryMetadataStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'usina.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    sql = SqlMetadataStore(url)
    try:
        yield sql
    finally:
        if request.param == "postgres":  # one database per session: empty it for the next test
            engine = sa.create_engine(normalize_url(url))
            with engine.begin() as conn:
                conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)}"))
            engine.dispose()
        sql.close()


def make_run(
    run_id: str = "r1",
    *,
    created_at: float = 100.0,
    state: RunState = RunState.PENDING,
    pipeline: str = "fraud",
    project: str = "default",
) -> RunRecord:
    return RunRecord(
        id=RunId(run_id),
        pipeline=pipeline,
        plan={"nodes": [{"name": "train", "inputs": ["features"]}], "version": 1},
        params={"lr": 0.05, "rounds": 10, "tags": ["a", "b"], "nested": {"x": None}},
        state=state,
        created_at=created_at,
        labels={"team": "risk"},
        project=project,
    )


def make_step(run_id: str = "r1", node: str = "train", **changes: object) -> StepRecord:
    step = StepRecord(
        run_id=RunId(run_id),
        node=node,
        state=StepState.PENDING,
        resources={"cpu": 2, "memory": "4Gi", "gpus": 0},
    )
    return dataclasses.replace(step, **changes)  # type: ignore[arg-type]


def make_attempt(node: str, number: int, started_at: float, run_id: str = "r1") -> AttemptRecord:
    return AttemptRecord(
        id=AttemptId(f"{run_id}-{node}-{number}"),
        run_id=RunId(run_id),
        node=node,
        number=number,
        state=AttemptState.RUNNING,
        resources={"cpu": 1, "memory": "1Gi"},
        started_at=started_at,
    )


REF = ArtifactRef(digest="sha256:" + "ab" * 32, serializer="parquet", type_name="t", size=10)


# -- runs --------------------------------------------------------------------------------------


def test_created_run_reads_back_equal(store: MetadataStore) -> None:
    run = make_run()
    steps = [make_step(node="train"), make_step(node="features")]
    store.create_run(run, steps)
    assert store.get_run("r1") == run
    assert store.get_steps("r1") == sorted(steps, key=lambda s: s.node)


def test_missing_run_raises_not_found(store: MetadataStore) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        store.get_run("nope")
    assert store.get_steps("nope") == []
    assert store.get_attempts("nope") == []
    assert store.list_events("nope") == []


def test_creating_a_run_twice_is_refused(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    with pytest.raises(StateError, match="exists already"):
        store.create_run(make_run(), [])


def test_save_run_upserts(store: MetadataStore) -> None:
    run = make_run()
    store.save_run(run)  # insert
    assert store.get_run("r1") == run
    done = dataclasses.replace(
        run, state=RunState.FAILED, started_at=101.5, finished_at=102.25, error="boom"
    )
    store.save_run(done)  # update
    assert store.get_run("r1") == done
    assert store.list_runs() == [done]


def test_list_runs_newest_first_with_keyset_pagination(store: MetadataStore) -> None:
    for i in range(7):
        store.create_run(make_run(f"r{i}", created_at=100.0 + i), [])
    first = store.list_runs(limit=3)
    assert [r.id for r in first] == ["r6", "r5", "r4"]
    second = store.list_runs(limit=3, before=first[-1].created_at)
    assert [r.id for r in second] == ["r3", "r2", "r1"]
    third = store.list_runs(limit=3, before=second[-1].created_at)
    assert [r.id for r in third] == ["r0"]
    assert store.list_runs(limit=3, before=third[-1].created_at) == []


def test_list_runs_filters(store: MetadataStore) -> None:
    store.create_run(make_run("a", created_at=1, pipeline="fraud", project="p1"), [])
    store.create_run(make_run("b", created_at=2, pipeline="risk", project="p1"), [])
    store.create_run(
        make_run("c", created_at=3, pipeline="fraud", project="p2", state=RunState.RUNNING), []
    )
    assert [r.id for r in store.list_runs(pipeline="fraud")] == ["c", "a"]
    assert [r.id for r in store.list_runs(project="p1")] == ["b", "a"]
    assert [r.id for r in store.list_runs(state=RunState.RUNNING)] == ["c"]
    assert [r.id for r in store.list_runs(state=RunState.PENDING, pipeline="fraud")] == ["a"]
    assert [r.id for r in store.list_runs(project="p1", before=2)] == ["a"]
    assert store.list_runs(project="nobody") == []


def test_list_runs_refuses_a_limit_below_one(store: MetadataStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_runs(limit=0)


# -- steps and attempts ------------------------------------------------------------------------


def test_save_step_upserts(store: MetadataStore) -> None:
    store.create_run(make_run(), [make_step()])
    done = make_step(
        state=StepState.SUCCEEDED,
        cache_key="k1",
        cached=True,
        outputs=(REF, dataclasses.replace(REF, serializer="json", size=3)),
        attempts=2,
        next_attempt_at=5.5,
        started_at=1.0,
        finished_at=2.0,
        error=None,
        metrics={"auc": 0.93, "loss": 0.1},
    )
    store.save_step(done)
    store.save_step(make_step(node="eval"))  # insert of a new step
    assert store.get_steps("r1") == [make_step(node="eval"), done]


def test_step_metrics_may_be_nan_or_infinite(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    metrics = {"loss": float("nan"), "grad": float("inf"), "low": float("-inf"), "auc": 0.5}
    store.save_step(make_step(metrics=metrics))
    (step,) = store.get_steps("r1")
    assert math.isnan(step.metrics["loss"])
    assert step.metrics["grad"] == float("inf")
    assert step.metrics["low"] == float("-inf")
    assert step.metrics["auc"] == 0.5


def test_saving_a_step_of_an_unknown_run_fails(store: MetadataStore) -> None:
    with pytest.raises(StoreError):
        store.save_step(make_step(run_id="ghost"))


def test_attempts_per_node_in_order(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    store.save_attempt(make_attempt("train", 2, started_at=30))
    store.save_attempt(make_attempt("features", 1, started_at=10))
    store.save_attempt(make_attempt("train", 1, started_at=20))
    failed = dataclasses.replace(
        make_attempt("train", 1, started_at=20),
        state=AttemptState.FAILED,
        finished_at=25.0,
        failure_class=FailureClass.OOM,
        exit_code=137,
        reason="OOMKilled",
        message="killed",
        backend="kubernetes",
        gpus=2,
        log_uri="file:///logs/1",
    )
    store.save_attempt(failed)  # upsert
    assert [a.id for a in store.get_attempts("r1")] == [
        "r1-features-1",
        "r1-train-1",
        "r1-train-2",
    ]
    train = store.get_attempts("r1", node="train")
    assert train == [failed, make_attempt("train", 2, started_at=30)]
    assert train[0].gpu_seconds == 10.0
    assert store.get_attempts("r1", node="nothing") == []


def test_record_attempt_writes_the_claim_its_step_and_its_event_once(
    store: MetadataStore,
) -> None:
    store.create_run(make_run(), [make_step()])
    claim = make_attempt("train", 1, started_at=10)
    running = make_step(state=StepState.RUNNING, attempts=1, started_at=10.0)
    started = Event(RunId("r1"), 10.0, "attempt_started", node="train", attempt=claim.id)
    assert store.record_attempt(claim, expected=None, events=[started], step=running)
    # A second claim of the same attempt (another engine) writes nothing at all.
    other = dataclasses.replace(claim, started_at=11.0, backend="other")
    again = Event(RunId("r1"), 11.0, "attempt_started", node="train", attempt=claim.id)
    stale_step = make_step(state=StepState.RUNNING, attempts=1, started_at=11.0)
    assert not store.record_attempt(other, expected=None, events=[again], step=stale_step)
    assert store.get_attempts("r1") == [claim]
    assert store.get_steps("r1") == [running]
    assert [(e.kind, e.at) for e in store.list_events("r1")] == [("attempt_started", 10.0)]


def test_record_attempt_concludes_only_from_the_expected_state(store: MetadataStore) -> None:
    store.create_run(make_run(), [make_step()])
    claim = make_attempt("train", 1, started_at=10)
    assert store.record_attempt(claim, expected=None)
    done = dataclasses.replace(claim, state=AttemptState.SUCCEEDED, finished_at=20.0, exit_code=0)
    events = [
        Event(RunId("r1"), 12.0, "attempt_running", node="train", attempt=claim.id),
        Event(RunId("r1"), 20.0, "attempt_succeeded", node="train", attempt=claim.id),
    ]
    # Not from a state it is not in: nothing written.
    assert not store.record_attempt(done, expected=AttemptState.FAILED, events=events)
    assert store.get_attempts("r1") == [claim]
    assert store.list_events("r1") == []
    assert store.record_attempt(done, expected=AttemptState.RUNNING, events=events)
    # A second conclusion (an engine that saw it running too) loses, and writes no event.
    failed = dataclasses.replace(claim, state=AttemptState.FAILED, finished_at=21.0)
    lost = Event(RunId("r1"), 21.0, "attempt_failed", node="train", attempt=claim.id)
    assert not store.record_attempt(failed, expected=AttemptState.RUNNING, events=[lost])
    assert store.get_attempts("r1") == [done]
    assert [e.kind for e in store.list_events("r1")] == ["attempt_running", "attempt_succeeded"]


def test_run_and_step_writes_carry_their_events(store: MetadataStore) -> None:
    submitted = Event(RunId("r1"), 1.0, "run_submitted", message="1 steps")
    store.create_run(make_run(), [make_step()], [submitted])
    started = Event(RunId("r1"), 2.0, "run_started")
    store.save_run(make_run(state=RunState.RUNNING), [started])
    done = make_step(state=StepState.SUCCEEDED, attempts=1, finished_at=3.0)
    store.save_step(done, [Event(RunId("r1"), 3.0, "step_succeeded", node="train")])
    store.save_step(done)  # no events: none written
    assert store.get_run("r1").state is RunState.RUNNING
    assert store.get_steps("r1") == [done]
    assert [(e.kind, e.node) for e in store.list_events("r1")] == [
        ("run_submitted", None),
        ("run_started", None),
        ("step_succeeded", "train"),
    ]


def test_a_refused_create_run_writes_no_event(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    with pytest.raises(StateError):
        store.create_run(make_run(), [], [Event(RunId("r1"), 1.0, "run_submitted")])
    assert store.list_events("r1") == []


def test_record_attempt_of_an_unknown_run_fails(store: MetadataStore) -> None:
    with pytest.raises(StoreError):
        store.record_attempt(make_attempt("train", 1, 10.0, run_id="ghost"), expected=None)


def test_concurrent_claims_of_one_attempt_have_one_winner(store: MetadataStore) -> None:
    store.create_run(make_run(), [make_step()])
    claim = make_attempt("train", 1, started_at=10)
    won: list[bool] = []
    barrier = threading.Barrier(4)

    def claim_it(n: int) -> None:
        barrier.wait()
        event = Event(RunId("r1"), float(n), "attempt_started", node="train", attempt=claim.id)
        won.append(store.record_attempt(claim, expected=None, events=[event]))

    threads = [threading.Thread(target=claim_it, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False, False, False, True]
    assert [e.kind for e in store.list_events("r1")] == ["attempt_started"]


# -- events ------------------------------------------------------------------------------------


def test_events_in_time_then_insertion_order(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    store.create_run(make_run("other"), [])
    kinds = ["run_started", "step_started", "attempt_failed", "attempt_started", "run_done"]
    for i, kind in enumerate(kinds):
        store.add_event(Event(run_id=RunId("r1"), at=float(i // 2), kind=kind, node="n"))
    store.add_event(Event(run_id=RunId("r1"), at=-1.0, kind="early", message="clock skew"))
    store.add_event(Event(run_id=RunId("other"), at=0.0, kind="x", attempt="a1"))
    events = store.list_events("r1")
    assert [e.kind for e in events] == ["early", *kinds]
    assert events[0] == Event(run_id=RunId("r1"), at=-1.0, kind="early", message="clock skew")
    assert store.list_events("other") == [
        Event(run_id=RunId("other"), at=0.0, kind="x", attempt="a1")
    ]


# -- cache -------------------------------------------------------------------------------------


def test_cache_get_and_put(store: MetadataStore) -> None:
    assert store.cache_get("k") is None
    store.cache_put("k", [REF], run_id="r1", node="train")
    assert store.cache_get("k") == (REF,)
    newer = dataclasses.replace(REF, digest="sha256:" + "cd" * 32)
    store.cache_put("k", (newer, REF), run_id="r2", node="train")
    assert store.cache_get("k") == (newer, REF)
    store.cache_put("empty", [], run_id="r1", node="noop")
    assert store.cache_get("empty") == ()


# -- leases ------------------------------------------------------------------------------------


def test_lease_acquire_contend_renew_expire_release(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    assert store.acquire_lease("r1", "a", ttl=10, now=100)
    assert store.get_run("r1").lease_owner == "a"
    assert store.get_run("r1").lease_expires == 110
    assert not store.acquire_lease("r1", "b", ttl=10, now=105)  # contended
    assert store.acquire_lease("r1", "a", ttl=10, now=108)  # renew
    assert store.get_run("r1").lease_expires == 118
    assert not store.acquire_lease("r1", "b", ttl=10, now=117.9)
    assert store.acquire_lease("r1", "b", ttl=10, now=118)  # expired: stolen
    assert store.get_run("r1").lease_owner == "b"
    store.release_lease("r1", "a")  # not the owner: ignored
    assert store.get_run("r1").lease_owner == "b"
    assert not store.acquire_lease("r1", "a", ttl=10, now=119)
    store.release_lease("r1", "b")
    run = store.get_run("r1")
    assert (run.lease_owner, run.lease_expires) == (None, None)
    assert store.acquire_lease("r1", "a", ttl=10, now=120)


def test_save_run_keeps_the_lease(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    stale = store.get_run("r1")
    assert store.acquire_lease("r1", "a", ttl=10, now=100)
    store.save_run(dataclasses.replace(stale, state=RunState.RUNNING))
    run = store.get_run("r1")
    assert run.state == RunState.RUNNING
    assert (run.lease_owner, run.lease_expires) == ("a", 110)


def test_lease_of_a_missing_run(store: MetadataStore) -> None:
    with pytest.raises(NotFoundError):
        store.acquire_lease("ghost", "a", ttl=10, now=0)
    store.release_lease("ghost", "a")  # nothing to release: no error


def test_only_one_of_many_racing_owners_gets_the_lease(store: MetadataStore) -> None:
    store.create_run(make_run(), [])
    won: list[str] = []
    barrier = threading.Barrier(8)

    def race(owner: str) -> None:
        barrier.wait()
        if store.acquire_lease("r1", owner, ttl=60, now=1000):
            won.append(owner)

    threads = [threading.Thread(target=race, args=(f"o{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert store.get_run("r1").lease_owner == won[0]


def test_records_are_copies(store: MetadataStore) -> None:
    run = make_run()
    store.create_run(run, [])
    run.params["lr"] = 99  # a caller mutating its record does not change the store
    assert store.get_run("r1").params["lr"] == 0.05
