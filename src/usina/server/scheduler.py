"""The server's scheduler: turns schedules into runs, once per tick, on every replica alike.

Every pass (``run_once``), for each schedule: ``usina.scheduling.plan`` says which ticks start,
which are skipped and why, and which runs a ``replace`` schedule cancels. The scheduler then

1. creates each started tick's run with the id derived from the tick (``scheduled_run_id``);
   a replica that loses the race, or one that restarted after creating it, finds "exists
   already" and counts it as done;
2. records what every tick became (``schedule_ticks``: started or skipped, with the reason);
3. moves the schedule's watermark forward (a compare-and-set that only moves it forward).

Because (1) happens before (3), a replica SIGKILLed between them leaves a watermark behind:
the next pass (on any replica) plans the same tick, finds its run, and advances. No tick is lost
and none runs twice. The runs carry the labels ``schedule`` and ``scheduled-time``, and their
parameters get ``scheduled_time``/``interval_start``/``interval_end`` when the pipeline
declares them.

Backfill (``backfill``) records each tick of a date range as ``pending``; every pass creates the
oldest pending ticks' runs while fewer than ``backfill_max_active`` of that schedule's backfill
runs are unfinished. Their ids are the live ticks' ids, so a backfill never doubles a run the
schedule already made.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usina.errors import NotFoundError, StateError, StoreError, UsinaError
from usina.scheduling import Schedule, Tick, backfill_ticks, plan
from usina.server.periodic import Periodic
from usina.stores.schedules import TickRecord

if TYPE_CHECKING:
    from usina.engine.engine import Engine
    from usina.server.registry import PipelineRegistry
    from usina.stores.schedules import ScheduleStore

log = logging.getLogger(__name__)

LABEL_SCHEDULE = "schedule"
LABEL_TIME = "scheduled-time"


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """interval: seconds between passes (default 5). backfill_max_active: unfinished backfill
    runs per schedule at once (default 2)."""

    interval: float = 5.0
    backfill_max_active: int = 2
    enabled: bool = True


class Scheduler:
    def __init__(
        self,
        store: ScheduleStore,
        pipelines: PipelineRegistry,
        engine: Engine,
        settings: SchedulerSettings | None = None,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.engine = engine
        self.settings = settings or SchedulerSettings()
        self._loop = Periodic("usina-scheduler", self.run_once, self.settings.interval)
        self.passes = 0

    # -- one pass --------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> list[str]:
        """One pass over every schedule; the ids of the runs this pass created."""
        now = time.time() if now is None else now
        created: list[str] = []
        for schedule in self.store.list_schedules():
            try:
                created += self._schedule(schedule, now)
            except UsinaError as exc:
                log.warning("schedule %s/%s: %s", schedule.project, schedule.name, exc)
        created += self._backfills(now)
        self.passes += 1
        return created

    def _in_flight(self, schedule: Schedule, *, backfill: bool = False) -> list[str]:
        runs = self.engine.metadata.list_runs(
            limit=200, pipeline=schedule.pipeline, project=schedule.project
        )
        return [
            r.id
            for r in runs
            if r.labels.get(LABEL_SCHEDULE) == schedule.name
            and not r.state.finished
            and (r.labels.get("backfill") == "true") == backfill
        ]

    def _schedule(self, schedule: Schedule, now: float) -> list[str]:
        if schedule.paused:
            return []
        decision = plan(schedule, now, self._in_flight(schedule))
        if decision.last_tick is None or decision.last_tick == schedule.last_tick:
            return []
        created: list[str] = []
        for run_id in decision.cancel:
            self.engine.cancel(run_id)
            log.info("schedule %s: cancelled %s (concurrency 'replace')", schedule.name, run_id)
        for tick in decision.start:
            if self._create(schedule, tick):
                created.append(tick.run_id)
            self._record(schedule, tick, "started", None, now)
        for tick, reason in decision.skip:
            self._record(schedule, tick, "skipped", reason, now)
        _crash_point("after-runs")
        self.store.advance(schedule.project, schedule.name, decision.last_tick)
        return created

    def _create(self, schedule: Schedule, tick: Tick, *, backfill: bool = False) -> bool:
        """Create the tick's run; False when it exists already (another replica, or us before
        a crash)."""
        registered = self.pipelines.get(schedule.pipeline)
        params = tick.params(schedule, accepted=list(registered.pipeline.params))
        labels = {LABEL_SCHEDULE: schedule.name, LABEL_TIME: str(int(tick.nominal))}
        if backfill:
            labels["backfill"] = "true"
        try:
            self.engine.metadata.get_run(tick.run_id)
            return False
        except NotFoundError:
            pass
        try:
            self.engine.submit(
                registered.compile(params),
                run_id=tick.run_id,
                labels=labels,
                project=schedule.project,
            )
        except (StateError, StoreError):
            try:  # lost a race with another replica: the run exists now
                self.engine.metadata.get_run(tick.run_id)
            except NotFoundError:
                raise
            return False
        log.info("schedule %s: run %s for %s", schedule.name, tick.run_id, tick.nominal)
        return True

    def _record(
        self, schedule: Schedule, tick: Tick, outcome: str, reason: str | None, now: float
    ) -> None:
        self.store.record_tick(
            TickRecord(
                schedule.project, schedule.name, tick.nominal, outcome, tick.run_id, reason, now
            )
        )

    # -- backfill --------------------------------------------------------------------------

    def backfill(
        self, project: str, name: str, start: float, end: float, *, now: float | None = None,
        max_ticks: int = 1000,
    ) -> list[TickRecord]:  # fmt: skip
        """Queue the ticks of ``[start, end]`` (at most ``max_ticks``) as pending; the ones whose
        run exists already are left alone. Returns what was queued."""
        now = time.time() if now is None else now
        schedule = self.store.get(project, name)
        self.pipelines.get(schedule.pipeline)  # refuse a backfill of an unknown pipeline now
        ticks = backfill_ticks(schedule, start, end)
        if len(ticks) > max_ticks:
            raise StateError(
                f"the range holds {len(ticks)} ticks of {schedule.cron!r}; at most {max_ticks} "
                "at once: backfill a shorter range"
            )
        queued = []
        for tick in ticks:
            try:
                self.engine.metadata.get_run(tick.run_id)
                continue
            except NotFoundError:
                pass
            record = TickRecord(project, name, tick.nominal, "pending", tick.run_id, None, now)
            if self.store.record_tick(record):
                queued.append(record)
        return queued

    def _backfills(self, now: float) -> list[str]:
        created: list[str] = []
        active: dict[tuple[str, str], int] = {}
        for pending in self.store.pending_ticks():
            key = (pending.project, pending.name)
            try:
                schedule = self.store.get(*key)
            except NotFoundError:
                continue
            if key not in active:
                active[key] = len(self._in_flight(schedule, backfill=True))
            if active[key] >= self.settings.backfill_max_active:
                continue
            previous = schedule.cron_schedule.previous(pending.nominal)
            tick = Tick(pending.nominal, previous, str(pending.run_id))
            if self._create(schedule, tick, backfill=True):
                created.append(tick.run_id)
                active[key] += 1
            self.store.mark_tick(pending.project, pending.name, pending.nominal, "backfill")
        return created

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.enabled:
            self._loop.start()

    def stop(self) -> None:
        self._loop.stop()


def _crash_point(name: str) -> None:
    """Tests kill the process here (``USINA_TEST_CRASH_AT=<name>``) to prove a crash between
    creating a tick's runs and moving the watermark loses nothing and doubles nothing."""
    if os.environ.get("USINA_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
