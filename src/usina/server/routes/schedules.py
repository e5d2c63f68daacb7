"""Routes of schedules (``/schedules``): create or update, list, show with recent ticks, pause,
resume, delete, backfill. Reads need the viewer role in the schedule's project; every change
needs editor and is audited. The scheduler itself runs in every replica
(``usina.server.scheduler``)."""

from __future__ import annotations

import time
from datetime import datetime  # noqa: TC003 - pydantic reads it at run time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from usina.errors import NotFoundError
from usina.scheduling import CatchUp, Concurrency, Schedule, validate_cron
from usina.server.auth import CurrentPrincipal, require
from usina.server.routes.common import NamePath, audit, context_of, problems
from usina.stores.platform import Role

router = APIRouter()


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    project: str = Field(default="default", min_length=1, max_length=200, pattern=r"^[^*]+$")
    pipeline: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200, description="5-field cron, e.g. '0 3 * * *'")
    timezone: str = Field(default="UTC", max_length=64, description="IANA zone")
    params: dict[str, Any] = Field(default_factory=dict)
    concurrency: Concurrency = Concurrency.FORBID
    catchup: CatchUp = CatchUp.LATEST
    max_catchup: int = Field(default=10, ge=1, le=1000)
    starting_deadline: float | None = Field(default=None, gt=0)
    paused: bool = False


class TickOut(BaseModel):
    nominal: str
    outcome: str
    run_id: str | None
    reason: str | None


class ScheduleOut(BaseModel):
    name: str
    project: str
    pipeline: str
    cron: str
    timezone: str
    params: dict[str, Any]
    concurrency: str
    catchup: str
    paused: bool
    last_tick: str | None
    next_tick: str | None
    ticks: list[TickOut] = Field(default_factory=list)


class BackfillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime = Field(description="ISO 8601; ticks at or after it")
    end: datetime = Field(description="ISO 8601; ticks at or before it")


class BackfillOut(BaseModel):
    queued: list[TickOut]


def _iso(when: float | None) -> str | None:
    return None if when is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _out(schedule: Schedule, ticks: list[Any] | None = None) -> ScheduleOut:
    next_tick = None if schedule.paused else schedule.cron_schedule.next_after(time.time())
    return ScheduleOut(
        name=schedule.name, project=schedule.project, pipeline=schedule.pipeline,
        cron=schedule.cron, timezone=schedule.timezone, params=dict(schedule.params),
        concurrency=schedule.concurrency.value, catchup=schedule.catchup.value,
        paused=schedule.paused, last_tick=_iso(schedule.last_tick), next_tick=_iso(next_tick),
        ticks=[TickOut(nominal=_iso(t.nominal) or "", outcome=t.outcome, run_id=t.run_id,
                       reason=t.reason) for t in ticks or []],
    )  # fmt: skip


def _visible(request: Request, principal: Any, project: str, name: str) -> Schedule:
    ctx = context_of(request)
    if not principal.can(project, Role.VIEWER):
        raise NotFoundError(f"project {project!r} has no schedule {name!r}")
    return ctx.schedules.get(project, name)


@router.get("/schedules", response_model=list[ScheduleOut], tags=["schedules"])
def list_schedules(request: Request, principal: CurrentPrincipal) -> list[ScheduleOut]:
    """The schedules of the projects this token can read."""
    ctx = context_of(request)
    visible = principal.visible_projects()
    return [_out(s) for s in ctx.schedules.list_schedules(visible)]


@router.put(
    "/schedules", response_model=ScheduleOut, responses=problems(400, 403, 404), tags=["schedules"]
)
def put_schedule(request: Request, principal: CurrentPrincipal, body: ScheduleIn) -> ScheduleOut:
    """Create a schedule, or update it in place (ticks already handled never fire again)."""
    ctx = context_of(request)
    require(ctx, principal, body.project, Role.EDITOR, action="schedule.put", target=body.name)
    ctx.pipelines.get(body.pipeline).compile(body.params)  # unknown pipeline or params: 400/404
    validate_cron(body.cron, body.timezone)
    schedule = Schedule(
        name=body.name, project=body.project, pipeline=body.pipeline, cron=body.cron,
        timezone=body.timezone, params=body.params, concurrency=body.concurrency,
        catchup=body.catchup, max_catchup=body.max_catchup,
        starting_deadline=body.starting_deadline, paused=body.paused,
    )  # fmt: skip
    saved = ctx.schedules.put(schedule)
    audit(ctx, principal, "schedule.put", body.project, body.name, cron=body.cron)
    return _out(saved)


@router.get(
    "/schedules/{project}/{name}",
    response_model=ScheduleOut,
    responses=problems(404),
    tags=["schedules"],
)
def get_schedule(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> ScheduleOut:
    """A schedule and what its last ticks became (started, skipped and why, backfill)."""
    schedule = _visible(request, principal, project, name)
    return _out(schedule, context_of(request).schedules.ticks(project, name, limit=20))


def _pause(request: Request, principal: Any, project: str, name: str, paused: bool) -> ScheduleOut:
    ctx = context_of(request)
    _visible(request, principal, project, name)
    action = "schedule.pause" if paused else "schedule.resume"
    require(ctx, principal, project, Role.EDITOR, action=action, target=name)
    saved = ctx.schedules.set_paused(project, name, paused)
    audit(ctx, principal, action, project, name)
    return _out(saved)


@router.post(
    "/schedules/{project}/{name}/pause",
    response_model=ScheduleOut,
    responses=problems(403, 404),
    tags=["schedules"],
)
def pause_schedule(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> ScheduleOut:
    """Stop firing; ticks while paused are not caught up later."""
    return _pause(request, principal, project, name, True)


@router.post(
    "/schedules/{project}/{name}/resume",
    response_model=ScheduleOut,
    responses=problems(403, 404),
    tags=["schedules"],
)
def resume_schedule(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> ScheduleOut:
    """Fire again from now on."""
    return _pause(request, principal, project, name, False)


@router.delete(
    "/schedules/{project}/{name}", status_code=204, responses=problems(403, 404), tags=["schedules"]
)
def delete_schedule(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> None:
    """Delete a schedule; its runs stay."""
    ctx = context_of(request)
    _visible(request, principal, project, name)
    require(ctx, principal, project, Role.EDITOR, action="schedule.delete", target=name)
    ctx.schedules.delete(project, name)
    audit(ctx, principal, "schedule.delete", project, name)


@router.post(
    "/schedules/{project}/{name}/backfill",
    response_model=BackfillOut,
    responses=problems(400, 403, 404),
    tags=["schedules"],
)
def backfill_schedule(
    request: Request,
    principal: CurrentPrincipal,
    project: NamePath,
    name: NamePath,
    body: BackfillIn,
) -> BackfillOut:
    """Queue the ticks of a date range; the scheduler creates their runs a few at a time,
    each with its interval as parameters. Ticks whose run exists already are left alone."""
    ctx = context_of(request)
    _visible(request, principal, project, name)
    require(ctx, principal, project, Role.EDITOR, action="schedule.backfill", target=name)
    start, end = body.start.timestamp(), body.end.timestamp()
    if end < start:
        raise HTTPException(400, "backfill: end is before start")
    queued = ctx.scheduler.backfill(project, name, start, end)
    audit(ctx, principal, "schedule.backfill", project, name, ticks=len(queued))
    return BackfillOut(
        queued=[TickOut(nominal=_iso(t.nominal) or "", outcome=t.outcome, run_id=t.run_id,
                        reason=None) for t in queued]
    )  # fmt: skip
