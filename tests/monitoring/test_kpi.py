"""``usina kpi --output json`` over a seeded history returns the numbers worked out by hand."""

from __future__ import annotations

import time

import pytest

from tests.integration.cli_helpers import Usina
from usina.engine.records import (
    AttemptId,
    AttemptRecord,
    AttemptState,
    Event,
    RunId,
    RunRecord,
    RunState,
)
from usina.monitoring.kpi import parse_period
from usina.sdk.retry import FailureClass
from usina.stores.sql import SqlMetadataStore

DAY = 86400.0
NOW = time.time()


def _run(store, rid, pipeline, state, created, finished):
    store.create_run(
        RunRecord(
            id=RunId(rid),
            pipeline=pipeline,
            plan={},
            params={},
            state=state,
            created_at=created,
            started_at=created + 1,
            finished_at=finished,
        ),
        [],
    )


def _attempt(store, rid, n, state, started, seconds, gpus, klass=None, wait=None):
    aid = AttemptId(f"{rid}-train-{n}")
    store.save_attempt(
        AttemptRecord(
            id=aid,
            run_id=RunId(rid),
            node="train",
            number=n,
            state=state,
            resources={"gpus": gpus},
            started_at=started,
            finished_at=started + seconds,
            failure_class=klass,
            gpus=gpus,
        )
    )
    if wait is not None:
        store.add_event(Event(RunId(rid), started + wait, "attempt_running", "train", aid))


@pytest.fixture
def usina(tmp_path):
    u = Usina(tmp_path)
    store = SqlMetadataStore(f"sqlite:///{tmp_path / '.usina' / 'usina.db'}")
    with store:
        # fraud: ok; then two failures (one incident) recovered 900 s after the first; then a
        # failure still open at the end of the period.
        base = NOW - 6 * DAY
        _run(store, "f1", "fraud", RunState.SUCCEEDED, base, base + 100)
        _attempt(store, "f1", 1, AttemptState.SUCCEEDED, base + 2, 60, 0, wait=40)
        t = NOW - 5 * DAY
        _run(store, "f2", "fraud", RunState.FAILED, t, t + 100)
        _attempt(store, "f2", 1, AttemptState.FAILED, t + 2, 1800, 2, FailureClass.OOM, wait=10)
        _run(store, "f3", "fraud", RunState.FAILED, t + 150, t + 200)
        _run(store, "f4", "fraud", RunState.SUCCEEDED, t + 300, t + 1000)
        _attempt(store, "f4", 1, AttemptState.FAILED, t + 302, 900, 4, FailureClass.PREEMPTED, 20)
        _attempt(store, "f4", 2, AttemptState.SUCCEEDED, t + 1300, 2700, 4, wait=30)
        _run(store, "f5", "fraud", RunState.FAILED, NOW - DAY, NOW - DAY + 50)
        # risk: a failure recovered 300 s later, and a cancelled run
        r = NOW - 3 * DAY
        _run(store, "r1", "risk", RunState.FAILED, r, r + 10)
        _run(store, "r2", "risk", RunState.SUCCEEDED, r + 20, r + 310)
        _run(store, "r3", "risk", RunState.CANCELLED, r + 400, r + 500)
        # before the period: not counted
        old = NOW - 10 * DAY
        _run(store, "o1", "fraud", RunState.FAILED, old, old + 10)
        _attempt(store, "o1", 1, AttemptState.FAILED, old, 3600, 8, FailureClass.OOM, wait=5)
    return u


def test_kpis_of_a_seeded_history(usina):
    res = usina("kpi", "--since", "7d", "--output", "json")
    assert res.code == 0, res.err
    kpi = res.json()
    assert kpi["period"]["runs"] == 8
    assert kpi["runs"] == {
        "finished": 8,
        "succeeded": 3,
        "failed": 4,
        "cancelled": 1,
        "success_rate": pytest.approx(3 / 7),
    }
    # incidents: fraud f2+f3 -> f4 (1000 - 100 = 900 s), risk r1 -> r2 (310 - 10 = 300 s); f5 open
    assert kpi["recovery"] == {
        "incidents": 3,
        "recovered": 2,
        "open": 1,
        "mttr_seconds": pytest.approx(600.0),
    }
    # used: 2 GPUs x 1800 s + 4 x 900 + 4 x 2700 = 18000 GPU-s = 5 h; wasted: oom 1 h, preempted 1 h
    assert kpi["gpu"] == {
        "used_hours": pytest.approx(5.0),
        "wasted_hours": pytest.approx(2.0),
        "wasted_share": pytest.approx(0.4),
        "wasted_hours_by_class": {"oom": pytest.approx(1.0), "preempted": pytest.approx(1.0)},
    }
    # waits 10, 20, 30, 40 s: p50 = 25, p99 = 30 + 0.97 x 10 (linear interpolation)
    assert kpi["queue_wait"] == {
        "samples": 4,
        "p50_seconds": pytest.approx(25.0),
        "p99_seconds": pytest.approx(39.7),
    }
    # No MLflow store here: the platform KPIs stand, the models' say why they are missing.
    assert kpi["models"]["available"] is False
    assert "no MLflow store" in kpi["models"]["error"]


def test_a_shorter_period_and_the_table(usina):
    res = usina("kpi", "--since", "2d", "--no-models", "--output", "json")
    assert res.code == 0, res.err
    kpi = res.json()
    assert "models" not in kpi
    assert kpi["runs"]["failed"] == 1  # f5 only
    assert kpi["recovery"] == {"incidents": 1, "recovered": 0, "open": 1, "mttr_seconds": None}
    assert kpi["gpu"]["wasted_share"] is None
    text = usina("kpi", "--since", "7d", "--no-models")
    assert text.code == 0, text.err
    assert "success rate" in text.out
    assert "42.9%" in text.out
    assert "wasted by oom" in text.out


def test_a_bad_period_is_a_usage_error(usina):
    res = usina("kpi", "--since", "seven days")
    assert res.code == 2
    assert "30m, 12h, 7d or 2w" in res.err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("90", 90)],
)
def test_periods(text, seconds):
    assert parse_period(text) == seconds
