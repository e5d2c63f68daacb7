"""The server's scheduler on a fake clock: one run per tick with the tick's interval, catch-up
after an outage, forbid while a run is in flight, backfill with bounded parallelism, and exactly
one run per tick across two replicas on PostgreSQL — one of them SIGKILLed between creating a
tick's run and moving the watermark."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from usina.engine.engine import Engine
from usina.engine.records import RunState
from usina.scheduling import CatchUp, Concurrency, Schedule, scheduled_run_id
from usina.server.registry import PipelineRegistry
from usina.server.scheduler import Scheduler, SchedulerSettings
from usina.stores.schedules import ScheduleStore
from usina.stores.sql import SqlMetadataStore
from usina.testing import InMemoryArtifactStore
from usina.testing.backend import FakeBackend
from usina.testing.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = textwrap.dedent(
    """
    from usina import pipeline, step

    @step
    def load(rows: int, interval_start: str) -> int:
        return rows

    @pipeline
    def nightly(rows: int = 10, interval_start: str = "", interval_end: str = ""):
        load(rows, interval_start)
    """
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def make(url: str, folder: Path, **settings: object) -> tuple[Scheduler, ScheduleStore, Engine]:
    folder.mkdir(parents=True, exist_ok=True)
    pipe = folder / "nightly.py"
    pipe.write_text(PIPELINE)
    artifacts = InMemoryArtifactStore()
    clock = FakeClock()
    engine = Engine(
        backend=FakeBackend(artifacts, clock), metadata=SqlMetadataStore(url),
        artifacts=artifacts, clock=clock,
    )  # fmt: skip
    store = ScheduleStore(url)
    scheduler = Scheduler(
        store,
        PipelineRegistry([str(pipe)]),
        engine,
        SchedulerSettings(**settings),  # type: ignore[arg-type]
    )
    _OPEN.extend([store, engine.metadata])
    return scheduler, store, engine


_OPEN: list[ScheduleStore | SqlMetadataStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def hourly(**changes: object) -> Schedule:
    base = Schedule(name="hourly", project="fraud", pipeline="nightly", cron="0 * * * *",
                    params={"rows": 5}, last_tick=ts("2026-12-01T09:00:00"))  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/usina.db"


def test_one_run_per_tick_with_its_interval(sqlite_url: str, tmp_path: Path) -> None:
    scheduler, store, engine = make(sqlite_url, tmp_path)
    store.put(hourly(), now=ts("2026-12-01T09:30:00"))
    assert scheduler.run_once(ts("2026-12-01T09:59:59")) == []
    created = scheduler.run_once(ts("2026-12-01T10:00:02"))
    assert created == [scheduled_run_id("fraud", "hourly", "nightly", ts("2026-12-01T10:00:00"))]
    run = engine.metadata.get_run(created[0])
    assert run.project == "fraud"
    assert run.labels["schedule"] == "hourly"
    assert run.params == {"rows": 5, "interval_start": "2026-12-01T09:00:00Z",
                          "interval_end": "2026-12-01T10:00:00Z"}  # fmt: skip
    assert scheduler.run_once(ts("2026-12-01T10:00:30")) == []  # the same tick, planned again
    assert store.get("fraud", "hourly").last_tick == ts("2026-12-01T10:00:00")
    (tick,) = store.ticks("fraud", "hourly")
    assert (tick.outcome, tick.run_id) == ("started", created[0])


def test_catch_up_all_after_a_three_hour_outage(sqlite_url: str, tmp_path: Path) -> None:
    scheduler, store, engine = make(sqlite_url, tmp_path)
    store.put(
        hourly(catchup=CatchUp.ALL, concurrency=Concurrency.ALLOW), now=ts("2026-12-01T09:30:00")
    )
    created = scheduler.run_once(ts("2026-12-01T12:10:00"))
    assert len(created) == 3
    assert [engine.metadata.get_run(r).labels["scheduled-time"] for r in created] == [
        str(int(ts(f"2026-12-01T{h}:00:00"))) for h in (10, 11, 12)
    ]


def test_forbid_skips_a_tick_while_the_last_run_is_in_flight(
    sqlite_url: str, tmp_path: Path
) -> None:
    scheduler, store, engine = make(sqlite_url, tmp_path)
    store.put(hourly(), now=ts("2026-12-01T09:30:00"))
    (first,) = scheduler.run_once(ts("2026-12-01T10:00:01"))
    assert scheduler.run_once(ts("2026-12-01T11:00:01")) == []  # `first` is still pending
    outcomes = {t.outcome: t for t in store.ticks("fraud", "hourly")}
    assert first in outcomes["skipped"].reason  # type: ignore[operator]
    run = engine.metadata.get_run(first)
    engine.metadata.save_run(replace(run, state=RunState.SUCCEEDED))
    assert len(scheduler.run_once(ts("2026-12-01T12:00:01"))) == 1


def test_paused_then_resumed_schedules_do_not_catch_up(sqlite_url: str, tmp_path: Path) -> None:
    scheduler, store, _ = make(sqlite_url, tmp_path)
    store.put(hourly(), now=ts("2026-12-01T09:30:00"))
    store.set_paused("fraud", "hourly", True, now=ts("2026-12-01T09:40:00"))
    assert scheduler.run_once(ts("2026-12-01T12:30:00")) == []
    store.set_paused("fraud", "hourly", False, now=ts("2026-12-01T12:30:00"))
    assert scheduler.run_once(ts("2026-12-01T12:40:00")) == []
    assert len(scheduler.run_once(ts("2026-12-01T13:00:01"))) == 1


def test_backfill_runs_the_range_with_bounded_parallelism(sqlite_url: str, tmp_path: Path) -> None:
    scheduler, store, engine = make(sqlite_url, tmp_path, backfill_max_active=2)
    store.put(
        hourly(cron="0 0 * * *", last_tick=ts("2026-12-01T00:00:00")), now=ts("2026-12-01T01:00:00")
    )
    queued = scheduler.backfill(
        "fraud", "hourly", ts("2026-11-01T00:00:00"), ts("2026-11-05T00:00:00")
    )
    assert len(queued) == 5
    created = scheduler.run_once(ts("2026-12-01T01:00:05"))
    assert len(created) == 2
    assert scheduler.run_once(ts("2026-12-01T01:00:10")) == []  # two still in flight
    for run_id in created:
        run = engine.metadata.get_run(run_id)
        engine.metadata.save_run(replace(run, state=RunState.SUCCEEDED))
    created += scheduler.run_once(ts("2026-12-01T01:00:15"))
    assert len(created) == 4
    first = engine.metadata.get_run(created[0])
    assert first.params["interval_start"] == "2026-10-31T00:00:00Z"
    assert first.params["interval_end"] == "2026-11-01T00:00:00Z"
    # a second backfill of the same range queues nothing that exists already
    again = scheduler.backfill(
        "fraud", "hourly", ts("2026-11-01T00:00:00"), ts("2026-11-05T00:00:00")
    )
    assert len(again) == 0


@pytest.mark.postgres
def test_two_replicas_make_exactly_one_run_per_tick(postgres_url: str, tmp_path: Path) -> None:
    one, store, engine = make(postgres_url, tmp_path / "a")
    (tmp_path / "b").mkdir()
    two, _, _ = make(postgres_url, tmp_path / "b")
    store.put(
        hourly(catchup=CatchUp.ALL, concurrency=Concurrency.ALLOW), now=ts("2026-12-01T09:30:00")
    )
    barrier = threading.Barrier(2)

    def drive(scheduler: Scheduler) -> None:
        for hour in range(10, 16):
            barrier.wait()
            scheduler.run_once(ts(f"2026-12-01T{hour}:00:01"))

    threads = [threading.Thread(target=drive, args=(s,)) for s in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    runs = [r for r in engine.metadata.list_runs(limit=100, project="fraud")]
    assert sorted(r.labels["scheduled-time"] for r in runs) == sorted(
        str(int(ts(f"2026-12-01T{h}:00:00"))) for h in range(10, 16)
    )


CRASHING_REPLICA = """
import sys
from pathlib import Path
sys.path[:0] = [{root!r}, {src!r}]
from tests.server.test_scheduler import make, ts
scheduler, store, engine = make({url!r}, Path({folder!r}))
scheduler.run_once(ts({now!r}))
print("survived")
"""


@pytest.mark.postgres
def test_a_replica_killed_at_a_tick_loses_and_doubles_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    scheduler, store, engine = make(postgres_url, tmp_path)
    store.put(hourly(project="crash"), now=ts("2026-12-01T09:30:00"))
    code = CRASHING_REPLICA.format(
        root=str(ROOT), src=str(ROOT / "src"), url=postgres_url, folder=str(tmp_path),
        now="2026-12-01T10:00:01",
    )  # fmt: skip
    env = {**os.environ, "USINA_TEST_CRASH_AT": "after-runs"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9, done.stdout + done.stderr  # SIGKILLed after creating the run
    assert "survived" not in done.stdout
    runs = engine.metadata.list_runs(limit=10, project="crash")
    assert len(runs) == 1  # the tick's run exists ...
    assert store.get("crash", "hourly").last_tick == ts("2026-12-01T09:00:00")  # ... unrecorded
    assert scheduler.run_once(ts("2026-12-01T10:00:09")) == []  # the other replica: exists
    assert store.get("crash", "hourly").last_tick == ts("2026-12-01T10:00:00")
    assert len(engine.metadata.list_runs(limit=10, project="crash")) == 1
