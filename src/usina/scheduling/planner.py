"""What a schedule should do now: which ticks become runs, which are skipped and why, which
running runs are replaced — a pure function of the schedule, the clock and the runs in flight.

Exactly one run per tick, across server replicas and restarts, comes from the run id: it is
derived from (project, schedule name, nominal time) alone (``scheduled_run_id``), and the metadata
store refuses a second run with an existing id. A replica that loses the race, or a restarted
one that plans the same tick again, gets "exists already" and moves on. The schedule's internal
revision never enters the id, so editing a schedule cannot fire a tick twice.

Catch-up after downtime (``CatchUp``), for the ticks due since the last one handled:

- ``latest`` (default): run the newest due tick once, skip the older ones (as Kubernetes' CronJob
  and Argo do);
- ``all``: run every due tick, oldest first, at most ``max_catchup`` (the newest ones); older
  ones are skipped;
- ``skip``: run a tick only if it is on time (at most ``late_after`` seconds late).

A tick more than ``starting_deadline`` seconds late is always skipped. Concurrency with the
schedule's own runs still in flight (``Concurrency``, as CronJob's ``concurrencyPolicy``):
``allow`` starts them all; ``forbid`` skips every due tick while a run is in flight and otherwise
starts only the newest selected one; ``replace`` cancels the runs in flight and starts the newest
selected tick. Every skipped tick is returned with its reason, never dropped silently.
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.scheduling.cron import CronSchedule

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class Concurrency(enum.StrEnum):
    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"


class CatchUp(enum.StrEnum):
    LATEST = "latest"
    ALL = "all"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A pipeline run on a cron schedule.

    name: unique within the project; part of every run id this schedule creates.
    cron / timezone: see ``usina.scheduling.cron`` (IANA zone, default UTC).
    params: pipeline parameters of every run; ``scheduled_time``, ``interval_start`` and
        ``interval_end`` are added when the pipeline declares them (ISO 8601, UTC).
    concurrency, catchup: see the module docstring.
    max_catchup: with ``catchup=all``, the most ticks run after downtime (default 10).
    late_after: with ``catchup=skip``, seconds a tick may be late and still run (default 60).
    starting_deadline: seconds after which a missed tick is never run (None: no bound).
    last_tick: the newest nominal time already handled (started or skipped); None before the
        first; ticks at or before it are never planned again.
    """

    name: str
    project: str
    pipeline: str
    cron: str
    timezone: str = "UTC"
    params: Mapping[str, Any] = field(default_factory=dict)
    concurrency: Concurrency = Concurrency.FORBID
    catchup: CatchUp = CatchUp.LATEST
    max_catchup: int = 10
    late_after: float = 60.0
    starting_deadline: float | None = None
    paused: bool = False
    created_at: float = 0.0
    last_tick: float | None = None

    @property
    def cron_schedule(self) -> CronSchedule:
        return CronSchedule(self.cron, self.timezone)


@dataclass(frozen=True, slots=True)
class Tick:
    """One nominal fire time and the run it becomes."""

    nominal: float
    interval_start: float
    run_id: str

    def params(self, schedule: Schedule, accepted: Sequence[str] = ()) -> dict[str, Any]:
        """The run's parameters: the schedule's, plus the tick's times the pipeline accepts."""
        out = dict(schedule.params)
        times = {
            "scheduled_time": self.nominal,
            "interval_start": self.interval_start,
            "interval_end": self.nominal,
        }
        for name, value in times.items():
            if name in accepted:
                out[name] = _iso(value)
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    start: tuple[Tick, ...] = ()
    skip: tuple[tuple[Tick, str], ...] = ()
    cancel: tuple[str, ...] = ()
    last_tick: float | None = None  # the schedule's new watermark
    next_tick: float | None = None  # when to look again


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def scheduled_run_id(project: str, schedule: str, pipeline: str, nominal: float) -> str:
    """``<pipeline>-<yyyymmdd-hhmmss>-s<8 hex>``: the same for the same tick, whoever asks."""
    stem = "".join(c if c.isalnum() else "-" for c in pipeline.lower()).strip("-")[:30] or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(nominal))
    key = f"{project}\x00{schedule}\x00{int(nominal)}".encode()
    return f"{stem}-{stamp}-s{hashlib.sha256(key).hexdigest()[:8]}"


def _tick(schedule: Schedule, nominal: float, previous: float | None) -> Tick:
    start = previous if previous is not None else schedule.cron_schedule.previous(nominal)
    return Tick(
        nominal=nominal,
        interval_start=start,
        run_id=scheduled_run_id(schedule.project, schedule.name, schedule.pipeline, nominal),
    )


def _ticks(schedule: Schedule, nominals: Sequence[float]) -> list[Tick]:
    out: list[Tick] = []
    previous: float | None = None
    for nominal in nominals:
        out.append(_tick(schedule, nominal, previous))
        previous = nominal
    return out


def plan(schedule: Schedule, now: float, in_flight: Sequence[str] = ()) -> Plan:
    """What ``schedule`` should do at ``now``, given the ids of its runs not yet finished."""
    cron = schedule.cron_schedule
    since = schedule.last_tick if schedule.last_tick is not None else schedule.created_at
    if schedule.paused:
        return Plan(last_tick=schedule.last_tick, next_tick=None)
    due = _ticks(schedule, cron.ticks(since, now))
    next_tick = cron.next_after(now)
    if not due:
        return Plan(last_tick=schedule.last_tick, next_tick=next_tick)
    skipped: list[tuple[Tick, str]] = []
    chosen: list[Tick] = []
    for tick in due:
        late = now - tick.nominal
        if schedule.starting_deadline is not None and late > schedule.starting_deadline:
            skipped.append((tick, f"missed its starting deadline ({late:.0f}s late)"))
        else:
            chosen.append(tick)
    if schedule.catchup is CatchUp.LATEST and len(chosen) > 1:
        skipped += [(t, "catch-up 'latest': a newer tick runs instead") for t in chosen[:-1]]
        chosen = chosen[-1:]
    elif schedule.catchup is CatchUp.ALL and len(chosen) > schedule.max_catchup:
        cut = len(chosen) - schedule.max_catchup
        skipped += [
            (t, f"catch-up 'all' runs at most {schedule.max_catchup}") for t in chosen[:cut]
        ]
        chosen = chosen[cut:]
    elif schedule.catchup is CatchUp.SKIP:
        on_time = [t for t in chosen if now - t.nominal <= schedule.late_after]
        skipped += [(t, "catch-up 'skip': the tick was missed") for t in chosen if t not in on_time]
        chosen = on_time
    cancel: tuple[str, ...] = ()
    if schedule.concurrency is Concurrency.FORBID:
        if in_flight:
            reason = f"concurrency 'forbid': {in_flight[0]} is still running"
            skipped += [(t, reason) for t in chosen]
            chosen = []
        elif len(chosen) > 1:
            skipped += [(t, "concurrency 'forbid': one run at a time") for t in chosen[:-1]]
            chosen = chosen[-1:]
    elif schedule.concurrency is Concurrency.REPLACE and chosen:
        cancel = tuple(in_flight)
        skipped += [(t, "concurrency 'replace': a newer tick replaces it") for t in chosen[:-1]]
        chosen = chosen[-1:]
    skipped.sort(key=lambda item: item[0].nominal)
    return Plan(
        start=tuple(chosen),
        skip=tuple(skipped),
        cancel=cancel,
        last_tick=due[-1].nominal,
        next_tick=next_tick,
    )


def backfill_ticks(schedule: Schedule, start: float, end: float) -> list[Tick]:
    """The ticks with ``start <= t <= end``, oldest first, each with its interval; their run ids
    are the live ticks' ids, so a backfill never doubles a run the schedule already made."""
    nominals = schedule.cron_schedule.ticks(start - 1e-6, end)
    return _ticks(schedule, nominals)
