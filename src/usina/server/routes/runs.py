"""Routes of runs (``/runs``): list, submit, show, cancel, resume, attempts, events,
lineage. A run of a project the token cannot read answers 404."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from usina.bundles import pinned_bundle
from usina.engine.records import RunState, step_reasons
from usina.errors import DefinitionError, StateError
from usina.server.auth import CurrentPrincipal, require
from usina.server.routes.common import (
    RunIdPath,
    audit,
    context_of,
    problems,
    visible_run,
)
from usina.server.schemas import (
    AttemptOut,
    EventOut,
    LineageConsumer,
    LineageItem,
    LineageProducer,
    ResumeRequest,
    RunDetail,
    RunPage,
    RunStateName,
    SubmitRequest,
    artifact_out,
    attempt_out,
    event_out,
    run_detail,
    summary_from_row,
)
from usina.stores.platform import Role, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from usina.sdk.pipeline import Plan
    from usina.server.context import ServerContext
    from usina.server.guards import GuardSettings

router = APIRouter()


def check_submit_sizes(body: SubmitRequest, guards: GuardSettings) -> None:
    """422 naming the limit when a run's parameters or labels are over the server's bounds
    (``GuardSettings``): every listing of the project would carry them."""
    size = len(json.dumps(body.params, default=str, separators=(",", ":")))
    if size > guards.max_params_bytes:
        raise HTTPException(
            422,
            f"the run's parameters are {size} bytes of JSON, over the server's limit of "
            f"{guards.max_params_bytes} (GuardSettings.max_params_bytes); pass large inputs "
            "as artifacts or files, and their location as a parameter",
        )
    if len(body.labels) > guards.max_labels:
        raise HTTPException(
            422,
            f"the run has {len(body.labels)} labels, over the server's limit of "
            f"{guards.max_labels} (GuardSettings.max_labels)",
        )
    for key, value in body.labels.items():
        if not key or len(key) > guards.max_label_key:
            raise HTTPException(
                422,
                f"label key {key[:80]!r} has {len(key)} characters; keys have 1 to "
                f"{guards.max_label_key} (GuardSettings.max_label_key)",
            )
        if len(value) > guards.max_label_value:
            raise HTTPException(
                422,
                f"label {key!r} has a value of {len(value)} characters, over the server's "
                f"limit of {guards.max_label_value} (GuardSettings.max_label_value)",
            )


# -- runs ----------------------------------------------------------------------------------


@router.get("/runs", response_model=RunPage, responses=problems(400), tags=["runs"])
def list_runs(
    request: Request,
    principal: CurrentPrincipal,
    project: Annotated[str | None, Query(max_length=200)] = None,
    state: RunStateName | None = None,
    pipeline: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> RunPage:
    """Runs newest first, one page at a time (keyset pagination: pass ``next_cursor``)."""
    ctx = context_of(request)
    visible = principal.visible_projects()
    if project is not None:
        if not principal.can(project, Role.VIEWER):
            return RunPage(items=[], next_cursor=None)
        visible = frozenset({project})
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    rows = ctx.platform.runs_page(
        projects_=visible,
        limit=limit + 1,
        after=after,
        state=RunState(state) if state else None,
        pipeline=pipeline,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return RunPage(items=[summary_from_row(r) for r in rows], next_cursor=nxt)


@router.post(
    "/runs",
    response_model=RunDetail,
    status_code=201,
    responses=problems(400, 403, 404, 413, 422),
    tags=["runs"],
)
def submit_run(request: Request, principal: CurrentPrincipal, body: SubmitRequest) -> RunDetail:
    """Submit a run of a pipeline this server has, or of the pipeline in a code bundle
    uploaded before (``bundle`` and ``file``); the reconciler picks it up at once."""
    ctx = context_of(request)
    check_submit_sizes(body, request.app.state.guards)
    require(ctx, principal, body.project, Role.EDITOR, action="run.submit", target=body.pipeline)
    if body.bundle is not None:
        plan = bundle_plan(ctx, body, body.bundle)
    else:
        if body.file is not None:
            raise HTTPException(422, "file names a pipeline file inside a bundle: give bundle too")
        plan = ctx.pipelines.get(body.pipeline).compile(body.params)
    for tries_left in (2, 1, 0):
        try:
            run = ctx.engine.submit(plan, labels=body.labels, project=body.project)
            break
        except StateError:
            # Run ids carry 16 random bits per second: busy servers do collide. Draw again.
            if not tries_left:
                raise
    where = {"bundle": body.bundle} if body.bundle else {}  # the code it ran, when uploaded
    audit(ctx, principal, "run.submit", body.project, run.id, pipeline=run.pipeline, **where)
    return run_detail(run, ctx.metadata.get_steps(run.id))


def bundle_plan(ctx: ServerContext, body: SubmitRequest, digest: str) -> Plan:
    """The plan of ``body``'s bundle, loaded and compiled in a child process (the user's code
    never runs in the server: ``usina.compose.bundle_compile``)."""
    from usina.compose.bundle_compile import compile_bundle

    if body.file is None:
        raise HTTPException(422, "a run of a bundle needs file: the pipeline's FILE.py[:ATTR]")
    if not ctx.artifacts.exists(digest):
        raise HTTPException(
            404, f"bundle {digest} is not stored; upload it first (PUT /bundles/{{digest}})"
        )
    plan = compile_bundle(ctx.artifacts, digest, body.file, body.params)
    if plan.pipeline != body.pipeline:
        raise DefinitionError(
            f"{body.file} in bundle {digest} defines pipeline {plan.pipeline!r}, not "
            f"{body.pipeline!r}; name its file as FILE.py:ATTR"
        )
    return plan


@router.get("/runs/{run_id}", response_model=RunDetail, responses=problems(404), tags=["runs"])
def get_run(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> RunDetail:
    ctx = context_of(request)
    run = visible_run(ctx, principal, run_id)
    return run_detail(
        run, ctx.metadata.get_steps(run_id), step_reasons(ctx.metadata.list_events(run_id))
    )


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunDetail,
    responses=problems(403, 404),
    tags=["runs"],
)
def cancel_run(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> RunDetail:
    """Ask a run to stop; the replica driving it kills its attempts on its next pass."""
    ctx = context_of(request)
    run = visible_run(ctx, principal, run_id)
    require(ctx, principal, run.project, Role.EDITOR, action="run.cancel", target=run_id)
    run = ctx.engine.cancel(run_id)
    ctx.changed(run_id)
    audit(ctx, principal, "run.cancel", run.project, run_id)
    return run_detail(
        run, ctx.metadata.get_steps(run_id), step_reasons(ctx.metadata.list_events(run_id))
    )


@router.post(
    "/runs/{run_id}/resume",
    response_model=RunDetail,
    responses=problems(400, 403, 404, 409),
    tags=["runs"],
)
def resume_run(
    request: Request,
    principal: CurrentPrincipal,
    run_id: RunIdPath,
    body: ResumeRequest | None = None,
) -> RunDetail:
    """Continue a finished run: its failed, skipped and cancelled steps run again, with the
    pipeline's current code when this server has the pipeline, and so does every step whose
    cache key changed since it succeeded, each step named in ``rerun``, and what depends on
    them; the other steps keep their outputs. A succeeded run where nothing changed and nothing
    is named is left as it is (the answer is the run, still succeeded). Each step that runs
    again says why in its ``why``."""
    ctx = context_of(request)
    run = visible_run(ctx, principal, run_id)
    require(ctx, principal, run.project, Role.EDITOR, action="run.resume", target=run_id)
    if not run.state.finished:
        raise StateError(f"run {run_id} is {run.state.value}; only a finished run is resumed")
    rerun = list(dict.fromkeys(body.rerun)) if body is not None else []
    names = {n["id"] for n in run.plan.get("nodes", [])}
    unknown = [name for name in rerun if name not in names]
    if unknown:
        raise DefinitionError(
            f"run {run_id} has no step {', '.join(map(repr, unknown))}; "
            f"its steps are: {', '.join(sorted(names))}"
        )
    # A run of an uploaded bundle resumes with its own code, never a registered namesake's.
    source = run.plan.get("source")
    from_bundle = isinstance(source, str) and pinned_bundle(source) is not None
    reg = None if from_bundle else ctx.pipelines.find(run.pipeline)
    plan = reg.compile(run.params) if reg is not None else None
    run = ctx.engine.resume(run_id, plan, rerun=rerun)
    ctx.changed(run_id)
    code = plan is not None
    audit(ctx, principal, "run.resume", run.project, run_id, current_code=code, rerun=rerun)
    return run_detail(
        run, ctx.metadata.get_steps(run_id), step_reasons(ctx.metadata.list_events(run_id))
    )


@router.get(
    "/runs/{run_id}/attempts",
    response_model=list[AttemptOut],
    responses=problems(404),
    tags=["runs"],
)
def list_attempts(
    request: Request,
    principal: CurrentPrincipal,
    run_id: RunIdPath,
    step: Annotated[str | None, Query(max_length=200)] = None,
) -> list[AttemptOut]:
    """Every attempt of the run's steps, with the failure class, evidence and advice."""
    ctx = context_of(request)
    visible_run(ctx, principal, run_id)
    return [attempt_out(a) for a in ctx.metadata.get_attempts(run_id, step)]


@router.get(
    "/runs/{run_id}/events",
    response_model=list[EventOut],
    responses=problems(404),
    tags=["runs"],
)
def list_events(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> list[EventOut]:
    ctx = context_of(request)
    visible_run(ctx, principal, run_id)
    return [event_out(e) for e in ctx.metadata.list_events(run_id)]


@router.get(
    "/runs/{run_id}/lineage",
    response_model=list[LineageItem],
    responses=problems(404),
    tags=["artifacts"],
)
def run_lineage(
    request: Request, principal: CurrentPrincipal, run_id: RunIdPath
) -> list[LineageItem]:
    """Each artifact the run's steps produced: its metadata, the step and output that made
    it, the steps that read it, and whether its bytes are still stored."""
    ctx = context_of(request)
    run = visible_run(ctx, principal, run_id)
    consumers: dict[tuple[str, int], list[LineageConsumer]] = {}
    for node in run.plan.get("nodes", []):
        for name, spec in node.get("inputs", {}).items():
            if "ref" in spec:
                source, index = spec["ref"]
                consumers.setdefault((source, int(index)), []).append(
                    LineageConsumer(node=node["id"], input=name)
                )
            for position, (source, index) in enumerate(spec.get("refs") or ()):
                # A fan-in: one input that is a list (or dict) of upstream outputs.
                keys = spec.get("keys")
                consumers.setdefault((source, int(index)), []).append(
                    LineageConsumer(
                        node=node["id"], input=name, key=keys[position] if keys else position
                    )
                )
    items = []
    for step in ctx.metadata.get_steps(run_id):
        for index, ref in enumerate(step.outputs):
            items.append(
                LineageItem(
                    artifact=artifact_out(ref),
                    producer=LineageProducer(run_id=run_id, node=step.node, output=index),
                    consumers=consumers.get((step.node, index), []),
                    stored=ctx.artifacts.exists(ref.digest),
                )
            )
    return items
