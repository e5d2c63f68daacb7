"""Schedules in SQL: what the platform server's scheduler reads and moves forward.

``ScheduleStore`` works on the platform database (opened by ``usina.stores.database``, like the
other stores). Writes that race between replicas are safe by construction: ``advance`` is a
compare-and-set of the watermark (it only moves forward), and ``record_tick`` keeps the first
outcome of a tick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from usina.errors import NotFoundError
from usina.scheduling import CatchUp, Concurrency, Schedule, validate_cron
from usina.stores.database import SqlStore
from usina.stores.sql_schema import schedule_ticks, schedules

if TYPE_CHECKING:
    from collections.abc import Collection


@dataclass(frozen=True, slots=True)
class TickRecord:
    project: str
    name: str
    nominal: float
    outcome: str  # started | skipped | pending (a backfill's, not created yet) | backfill
    run_id: str | None
    reason: str | None
    at: float


def _spec(schedule: Schedule) -> dict[str, Any]:
    return {
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "params": dict(schedule.params),
        "concurrency": schedule.concurrency.value,
        "catchup": schedule.catchup.value,
        "max_catchup": schedule.max_catchup,
        "late_after": schedule.late_after,
        "starting_deadline": schedule.starting_deadline,
    }


def _from_row(row: Any) -> Schedule:
    spec = dict(row["spec"])
    return Schedule(
        name=row["name"],
        project=row["project"],
        pipeline=row["pipeline"],
        cron=spec["cron"],
        timezone=spec.get("timezone", "UTC"),
        params=dict(spec.get("params") or {}),
        concurrency=Concurrency(spec.get("concurrency", "forbid")),
        catchup=CatchUp(spec.get("catchup", "latest")),
        max_catchup=int(spec.get("max_catchup", 10)),
        late_after=float(spec.get("late_after", 60.0)),
        starting_deadline=spec.get("starting_deadline"),
        paused=bool(row["paused"]),
        created_at=float(row["created_at"]),
        last_tick=row["last_tick"],
    )


class ScheduleStore(SqlStore):
    """Schedules and their ticks, in the platform database."""

    kind = "schedule store"

    def put(self, schedule: Schedule, *, now: float | None = None) -> Schedule:
        """Create the schedule, or update it in place (its watermark is kept, so an edit never
        fires a tick that was handled already)."""
        validate_cron(schedule.cron, schedule.timezone)
        now = time.time() if now is None else now
        key = (schedules.c.project == schedule.project) & (schedules.c.name == schedule.name)
        with self._conn(f"saving schedule {schedule.name!r}") as conn:
            row = conn.execute(sa.select(schedules).where(key)).mappings().first()
            if row is None:
                created = replace(schedule, created_at=now, last_tick=schedule.last_tick)
                conn.execute(
                    sa.insert(schedules).values(
                        project=schedule.project, name=schedule.name,
                        pipeline=schedule.pipeline, spec=_spec(schedule),
                        paused=schedule.paused, revision=1, created_at=now, updated_at=now,
                        last_tick=schedule.last_tick if schedule.last_tick is not None else now,
                    )
                )  # fmt: skip
                return replace(created, last_tick=created.last_tick or now)
            conn.execute(
                sa.update(schedules)
                .where(key)
                .values(
                    pipeline=schedule.pipeline, spec=_spec(schedule), paused=schedule.paused,
                    revision=row["revision"] + 1, updated_at=now,
                )
            )  # fmt: skip
            return replace(schedule, created_at=row["created_at"], last_tick=row["last_tick"])

    def get(self, project: str, name: str) -> Schedule:
        key = (schedules.c.project == project) & (schedules.c.name == name)
        with self._conn(f"reading schedule {name!r}", write=False) as conn:
            row = conn.execute(sa.select(schedules).where(key)).mappings().first()
        if row is None:
            raise NotFoundError(
                f"project {project!r} has no schedule {name!r}; `usina schedules ls` lists them"
            )
        return _from_row(row)

    def list_schedules(self, projects: Collection[str] | None = None) -> list[Schedule]:
        query = sa.select(schedules).order_by(schedules.c.project, schedules.c.name)
        if projects is not None:
            query = query.where(schedules.c.project.in_(list(projects)))
        with self._conn("listing schedules", write=False) as conn:
            return [_from_row(r) for r in conn.execute(query).mappings()]

    def delete(self, project: str, name: str) -> None:
        key = (schedules.c.project == project) & (schedules.c.name == name)
        with self._conn(f"deleting schedule {name!r}") as conn:
            if conn.execute(sa.delete(schedules).where(key)).rowcount == 0:
                raise NotFoundError(f"project {project!r} has no schedule {name!r}")

    def set_paused(
        self, project: str, name: str, paused: bool, *, now: float | None = None
    ) -> Schedule:
        """Pause, or resume: a resumed schedule starts from ``now`` (ticks missed while paused are
        not caught up)."""
        now = time.time() if now is None else now
        key = (schedules.c.project == project) & (schedules.c.name == name)
        values: dict[str, Any] = {"paused": paused, "updated_at": now}
        if not paused:
            values["last_tick"] = now
        with self._conn(f"pausing schedule {name!r}") as conn:
            if conn.execute(sa.update(schedules).where(key).values(**values)).rowcount == 0:
                raise NotFoundError(f"project {project!r} has no schedule {name!r}")
        return self.get(project, name)

    def advance(self, project: str, name: str, last_tick: float) -> bool:
        """Move the watermark forward to ``last_tick``; False when it is there already (another
        replica did it) or the schedule is gone."""
        key = (schedules.c.project == project) & (schedules.c.name == name)
        ahead = sa.or_(schedules.c.last_tick.is_(None), schedules.c.last_tick < last_tick)
        with self._conn(f"advancing schedule {name!r}") as conn:
            done = conn.execute(sa.update(schedules).where(key & ahead).values(last_tick=last_tick))
            return bool(done.rowcount)

    def record_tick(self, tick: TickRecord) -> bool:
        """Keep what a tick became; False when its outcome was recorded already."""
        try:
            with self._conn("recording a tick") as conn:
                exists = conn.execute(
                    sa.select(schedule_ticks.c.nominal).where(
                        (schedule_ticks.c.project == tick.project)
                        & (schedule_ticks.c.name == tick.name)
                        & (schedule_ticks.c.nominal == tick.nominal)
                    )
                ).first()
                if exists is not None:
                    return False
                conn.execute(
                    sa.insert(schedule_ticks).values(
                        project=tick.project, name=tick.name, nominal=tick.nominal,
                        outcome=tick.outcome, run_id=tick.run_id, reason=tick.reason[:500]
                        if tick.reason else None, at=tick.at,
                    )
                )  # fmt: skip
        except IntegrityError:
            return False
        return True

    def mark_tick(self, project: str, name: str, nominal: float, outcome: str) -> None:
        """Change a recorded tick's outcome (a pending backfill tick whose run was created)."""
        key = (
            (schedule_ticks.c.project == project)
            & (schedule_ticks.c.name == name)
            & (schedule_ticks.c.nominal == nominal)
        )
        with self._conn("marking a tick") as conn:
            conn.execute(sa.update(schedule_ticks).where(key).values(outcome=outcome))

    def pending_ticks(self, limit: int = 1000) -> list[TickRecord]:
        """Backfill ticks whose run is still to be created, oldest first."""
        query = (
            sa.select(schedule_ticks)
            .where(schedule_ticks.c.outcome == "pending")
            .order_by(schedule_ticks.c.nominal)
            .limit(limit)
        )
        with self._conn("listing pending ticks", write=False) as conn:
            return [TickRecord(**dict(r)) for r in conn.execute(query).mappings()]

    def ticks(self, project: str, name: str, limit: int = 50) -> list[TickRecord]:
        query = (
            sa.select(schedule_ticks)
            .where((schedule_ticks.c.project == project) & (schedule_ticks.c.name == name))
            .order_by(schedule_ticks.c.nominal.desc())
            .limit(limit)
        )
        with self._conn("listing ticks", write=False) as conn:
            return [TickRecord(**dict(r)) for r in conn.execute(query).mappings()]
