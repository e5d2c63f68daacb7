"""A change and the event that reports it are one write: a driver SIGKILLed between the two
(just before the store inserts the event, the change already made in the open transaction)
leaves both or neither, on SQLite and on PostgreSQL; and after another engine finishes the run,
every attempt (relaunched ones included) has exactly one ``attempt_started`` and one outcome
event matching its final state, and the run and step events are each written exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.event_kill_driver import START, engine, pair
from usina.engine.engine import Engine
from usina.engine.records import AttemptState, RunState, StepState
from usina.stores.sql import SqlMetadataStore
from usina.testing.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
DRIVER = (sys.executable, "-m", "tests.integration.event_kill_driver")
# The driver's run: first-1 fails (a scripted infra failure) and is retried as first-2, then
# second-1 runs. Kill before each event that reports a change, in the order they happen.
KILL_POINTS = [
    ("run_started", 1),
    ("attempt_started", 1),  # the claim of first-1
    ("attempt_failed", 1),
    ("step_retry", 1),
    ("attempt_started", 2),  # first-2
    ("attempt_succeeded", 1),
    ("step_succeeded", 1),
    ("attempt_started", 3),  # second-1
    ("attempt_succeeded", 2),
    ("run_succeeded", 1),
]
OUTCOME = {AttemptState.SUCCEEDED: "attempt_succeeded", AttemptState.FAILED: "attempt_failed"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'usina.db'}"
    server = request.getfixturevalue("postgres_server")
    url: str = server.create_database()
    return url


def _check_events(store: SqlMetadataStore, run_id: str) -> None:
    """The events say exactly what the records say: each attempt has one ``attempt_started``
    and, once concluded, one outcome event matching its state; every attempt event names a
    recorded attempt; a step has ``step_succeeded`` once when it succeeded and a ``step_retry``
    per failed attempt it moved past; the run has ``run_started`` once it left pending and
    ``run_succeeded`` once it succeeded."""
    run = store.get_run(run_id)
    attempts = {a.id: a for a in store.get_attempts(run_id)}
    events = store.list_events(run_id)
    named = [e.attempt for e in events if e.attempt]
    assert set(named) <= set(attempts), (sorted(set(named) - set(attempts)), list(attempts))
    for aid, attempt in attempts.items():
        kinds = [e.kind for e in events if e.attempt == aid and e.kind != "attempt_running"]
        expected = ["attempt_started"]
        if attempt.state in OUTCOME:
            expected.append(OUTCOME[attempt.state])
        assert kinds == expected, (aid, attempt.state, kinds)
    for step in store.get_steps(run_id):
        kinds = [e.kind for e in events if e.node == step.node and e.attempt is None]
        succeeded = int(step.state is StepState.SUCCEEDED)
        assert kinds.count("step_succeeded") == succeeded, (step, kinds)
        passed = [
            a
            for a in attempts.values()
            if a.node == step.node
            and a.state is AttemptState.FAILED
            and (a.number < step.attempts or step.state is StepState.BACKOFF)
        ]
        assert kinds.count("step_retry") == len(passed), (step, kinds)
    kinds = [e.kind for e in events if e.node is None]
    assert kinds.count("run_submitted") == 1, kinds
    assert kinds.count("run_started") == int(run.state is not RunState.PENDING), (run, kinds)
    assert kinds.count("run_succeeded") == int(run.state is RunState.SUCCEEDED), (run, kinds)


@pytest.mark.parametrize(("kind", "nth"), KILL_POINTS, ids=[f"{k}-{n}" for k, n in KILL_POINTS])
def test_a_kill_between_a_change_and_its_event_loses_neither(
    tmp_path: Path, db_url: str, kind: str, nth: int
) -> None:
    artifacts = str(tmp_path / "artifacts")
    submitter, _ = engine(db_url, artifacts, FakeClock(START))
    run = submitter.submit(pair.compile())
    submitter.metadata.close()  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    driver = subprocess.run(
        [*DRIVER, db_url, artifacts, run.id, kind, str(nth)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert driver.returncode == -signal.SIGKILL, driver.stderr[-3000:]

    store = SqlMetadataStore(db_url)
    try:
        # Right after the kill: no record without its event, no event without its record.
        _check_events(store, run.id)

        # Another engine (later, so the dead driver's lease has expired) finishes the run.
        recovering, _ = engine(db_url, artifacts, FakeClock(START + 3600))
        final = recovering.drive(run.id)
        recovering.metadata.close()  # type: ignore[attr-defined]
        assert final.state is RunState.SUCCEEDED, final.error
        _check_events(store, run.id)
        for step in store.get_steps(run.id):
            assert step.state is StepState.SUCCEEDED
            attempts = store.get_attempts(run.id, step.node)
            good = [a for a in attempts if a.state is AttemptState.SUCCEEDED]
            assert len(good) == 1, (step.node, attempts)
    finally:
        store.close()


def test_two_engines_that_both_saw_an_attempt_running_conclude_it_once(
    tmp_path: Path, db_url: str
) -> None:
    """Engine b holds the run's lease and trusts what it read; engine a (whose lease lapsed
    under a slow pass, say) concludes an attempt b also saw running. b's conclusion loses:
    its pass stops, writes nothing, and its next pass rereads, so every event is written once."""
    clock = FakeClock(START)
    a, backend = engine(db_url, str(tmp_path / "artifacts"), clock)
    b = Engine(  # the same cluster (backend) and artifacts, its own store connection
        backend=backend,
        metadata=SqlMetadataStore(db_url),
        artifacts=a.artifacts,
        clock=clock,
        settings=a.settings,
        owner="engine-b",
    )
    store = SqlMetadataStore(db_url)
    try:
        run = a.submit(pair.compile())
        backend.hold.add("first")
        assert b.metadata.acquire_lease(run.id, b.owner, 600.0, clock.now())
        b.reconcile(run.id)  # claims first-1 and launches it
        b.reconcile(run.id)  # sees it running
        a.reconcile(run.id)  # sees it running too
        backend.hold.clear()
        a.reconcile(run.id)  # concludes first-1, settles first, claims second-1
        assert [s.state for s in store.get_steps(run.id)] == [
            StepState.SUCCEEDED,
            StepState.RUNNING,
        ]
        b.reconcile(run.id)  # concludes first-1 from what it read: refused, nothing written
        _check_events(store, run.id)
        final = b.drive(run.id)
        assert final.state is RunState.SUCCEEDED, final.error
        _check_events(store, run.id)
        ids = [a.id for a in store.get_attempts(run.id)]
        assert len(ids) == 2, ids
    finally:
        store.close()
        a.metadata.close()  # type: ignore[attr-defined]
        b.metadata.close()  # type: ignore[attr-defined]
