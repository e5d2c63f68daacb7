"""An attempt's state change and its event are one write: a driver SIGKILLed between the two
(just before the store inserts the event, the state change already made in the transaction)
leaves both or neither, on SQLite and on PostgreSQL; and after another engine finishes the run,
every attempt has exactly one ``attempt_started`` and exactly one outcome event matching its
final state (relaunched attempts included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.event_kill_driver import START, engine, pair
from usina.engine.records import AttemptState, RunState, StepState
from usina.stores.sql import SqlMetadataStore
from usina.testing.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
DRIVER = (sys.executable, "-m", "tests.integration.event_kill_driver")
# The driver writes 6 attempt events: first-1 started/failed (a scripted infra failure),
# first-2 started/succeeded, second-1 started/succeeded. Kill before each of them.
KILL_POINTS = range(1, 7)
OUTCOME = {AttemptState.SUCCEEDED: "attempt_succeeded", AttemptState.FAILED: "attempt_failed"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'usina.db'}"
    server = request.getfixturevalue("postgres_server")
    url: str = server.create_database()
    return url


def _check_events(store: SqlMetadataStore, run_id: str) -> list[tuple[str, str]]:
    """Each attempt has one ``attempt_started`` and, once concluded, one outcome event that
    matches its state; every attempt event names a recorded attempt. Returns the attempts as
    (id, state)."""
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
    return [(aid, a.state.value) for aid, a in attempts.items()]


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_kill_between_a_state_change_and_its_event_loses_neither(
    tmp_path: Path, db_url: str, kill_at: int
) -> None:
    artifacts = str(tmp_path / "artifacts")
    submitter, _ = engine(db_url, artifacts, FakeClock(START))
    run = submitter.submit(pair.compile())
    submitter.metadata.close()  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    driver = subprocess.run(
        [*DRIVER, db_url, artifacts, run.id, str(kill_at)],
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
        states = _check_events(store, run.id)
        for step in store.get_steps(run.id):
            assert step.state is StepState.SUCCEEDED
            good = [
                a
                for a in store.get_attempts(run.id, step.node)
                if a.state is AttemptState.SUCCEEDED
            ]
            assert len(good) == 1, (step.node, states)
    finally:
        store.close()
