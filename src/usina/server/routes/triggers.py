"""Routes of triggers (``/triggers``): create, list, show with the causes handled, pause,
resume, delete. Reads need the viewer role in the trigger's project; every change needs editor
and is audited; an alias trigger also needs the viewer role in the model's project. The watcher
itself runs in every replica (``usina.server.triggers``)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from usina.errors import NotFoundError
from usina.i18n import N_, error
from usina.scheduling.triggers import CAUSE_PARAMS, Trigger, TriggerKind, validate
from usina.server.auth import CurrentPrincipal, require
from usina.server.routes.common import NamePath, audit, context_of, problems
from usina.stores.platform import Role

router = APIRouter()


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    project: str = Field(default="default", min_length=1, max_length=200, pattern=r"^[^*]+$")
    pipeline: str = Field(min_length=1, max_length=200, description="the pipeline to run")
    kind: TriggerKind
    spec: dict[str, str] = Field(
        description="alias: {model, alias}; run-succeeded: {pipeline}; objects: {prefix}"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    paused: bool = False


class FiringOut(BaseModel):
    cause: str
    outcome: str
    run_id: str | None
    at: str


class TriggerOut(BaseModel):
    name: str
    project: str
    pipeline: str
    kind: str
    spec: dict[str, str]
    params: dict[str, Any]
    cause_params: list[str] = Field(description="what the runs get, when the pipeline declares it")
    paused: bool
    created_at: str
    watching: str
    firings: list[FiringOut] = Field(default_factory=list)


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _out(trigger: Trigger, firings: list[Any] | None = None) -> TriggerOut:
    return TriggerOut(
        name=trigger.name, project=trigger.project, pipeline=trigger.pipeline,
        kind=trigger.kind.value, spec=dict(trigger.spec), params=dict(trigger.params),
        cause_params=list(CAUSE_PARAMS[trigger.kind]), paused=trigger.paused,
        created_at=_iso(trigger.created_at), watching=trigger.describe(),
        firings=[FiringOut(cause=f.shown, outcome=f.outcome, run_id=f.run_id, at=_iso(f.at))
                 for f in firings or []],
    )  # fmt: skip


def _visible(request: Request, principal: Any, project: str, name: str) -> Trigger:
    ctx = context_of(request)
    if not principal.can(project, Role.VIEWER):
        raise error(
            NotFoundError,
            N_("project {project!r} has no trigger {name!r}"),
            project=project,
            name=name,
        )
    return ctx.triggers.get(project, name)


@router.get("/triggers", response_model=list[TriggerOut], tags=["triggers"])
def list_triggers(request: Request, principal: CurrentPrincipal) -> list[TriggerOut]:
    """The triggers of the projects this token can read."""
    ctx = context_of(request)
    return [_out(t) for t in ctx.triggers.list_triggers(principal.visible_projects())]


@router.post(
    "/triggers",
    status_code=201,
    response_model=TriggerOut,
    responses=problems(400, 403, 404, 409),
    tags=["triggers"],
)
def create_trigger(request: Request, principal: CurrentPrincipal, body: TriggerIn) -> TriggerOut:
    """Create a trigger; what it watches is recorded as its baseline (the alias's version, the
    objects under the prefix now), so only later changes fire."""
    ctx = context_of(request)
    require(ctx, principal, body.project, Role.EDITOR, action="trigger.create", target=body.name)
    validate(body.kind, body.spec, body.pipeline)
    ctx.pipelines.get(body.pipeline).compile(body.params)  # unknown pipeline or params: 400/404
    if body.kind is TriggerKind.RUN_SUCCEEDED:
        ctx.pipelines.get(body.spec["pipeline"])
    if body.kind is TriggerKind.ALIAS and ctx.models is not None:
        try:
            model_project = ctx.models.project_of(body.spec["model"])
        except NotFoundError:
            model_project = None  # registered later: the trigger fires once it has the alias
        if model_project is not None and not principal.can(model_project, Role.VIEWER):
            raise error(
                NotFoundError, N_("model {model!r} does not exist"), model=body.spec["model"]
            )
    made = ctx.watcher.create(
        Trigger(
            name=body.name, project=body.project, pipeline=body.pipeline, kind=body.kind,
            spec=body.spec, params=body.params, paused=body.paused,
        )
    )  # fmt: skip
    audit(ctx, principal, "trigger.create", body.project, body.name, kind=body.kind.value)
    return _out(made)


@router.get(
    "/triggers/{project}/{name}",
    response_model=TriggerOut,
    responses=problems(404),
    tags=["triggers"],
)
def get_trigger(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> TriggerOut:
    """A trigger and the causes it handled last, each with its run."""
    trigger = _visible(request, principal, project, name)
    return _out(trigger, context_of(request).triggers.firings(project, name, limit=20))


def _pause(request: Request, principal: Any, project: str, name: str, paused: bool) -> TriggerOut:
    ctx = context_of(request)
    _visible(request, principal, project, name)
    action = "trigger.pause" if paused else "trigger.resume"
    require(ctx, principal, project, Role.EDITOR, action=action, target=name)
    saved = ctx.triggers.set_paused(project, name, paused)
    audit(ctx, principal, action, project, name)
    return _out(saved)


@router.post(
    "/triggers/{project}/{name}/pause",
    response_model=TriggerOut,
    responses=problems(403, 404),
    tags=["triggers"],
)
def pause_trigger(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> TriggerOut:
    """Stop firing until resumed."""
    return _pause(request, principal, project, name, True)


@router.post(
    "/triggers/{project}/{name}/resume",
    response_model=TriggerOut,
    responses=problems(403, 404),
    tags=["triggers"],
)
def resume_trigger(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> TriggerOut:
    """Fire again; what changed while paused fires, once per cause."""
    return _pause(request, principal, project, name, False)


@router.delete(
    "/triggers/{project}/{name}", status_code=204, responses=problems(403, 404), tags=["triggers"]
)
def delete_trigger(
    request: Request, principal: CurrentPrincipal, project: NamePath, name: NamePath
) -> None:
    """Delete a trigger; its runs stay."""
    ctx = context_of(request)
    _visible(request, principal, project, name)
    require(ctx, principal, project, Role.EDITOR, action="trigger.delete", target=name)
    ctx.triggers.delete(project, name)
    audit(ctx, principal, "trigger.delete", project, name)
