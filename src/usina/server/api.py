"""The REST API under ``/api/v1``: pipelines, runs, steps, attempts, logs, lineage, metrics,
models, serving endpoints, tokens and the audit log.

Every route needs a token (``usina.server.auth``). Reads need the viewer role in the object's
project, and a run of a project the token cannot read answers 404, as if it did not exist;
submit, cancel, resume and promote need editor; tokens, the audit log and endpoints need
admin. Every mutation, and every refused one, is written to the audit log.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any
from urllib.error import URLError
from urllib.request import Request as UrlRequest
from urllib.request import urlopen

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from usina.compose.components import read_attempt_log
from usina.engine.ports import log_key
from usina.engine.records import AttemptRecord, AttemptState, RunRecord, RunState
from usina.errors import NotFoundError, StateError
from usina.server.auth import CurrentPrincipal, require
from usina.server.schemas import (
    AliasRequest,
    AttemptOut,
    AuditOut,
    EndpointIn,
    EndpointOut,
    EventOut,
    LineageConsumer,
    LineageItem,
    LineageProducer,
    Me,
    MetricPoint,
    ModelOut,
    ParamOut,
    PipelineOut,
    Problem,
    RunDetail,
    RunPage,
    RunStateName,
    SubmitRequest,
    TokenCreate,
    TokenCreated,
    TokenOut,
    artifact_out,
    attempt_out,
    audit_out,
    event_out,
    metric,
    run_detail,
    summary_from_row,
    token_out,
)
from usina.stores.platform import ALL_PROJECTS, Principal, Role, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from collections.abc import Iterator

    from usina.server.context import ServerContext
    from usina.server.registry import Registered


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in (401, *codes)}


router = APIRouter(prefix="/api/v1")

RunIdPath = Annotated[str, Path(min_length=1, max_length=200)]
NamePath = Annotated[str, Path(min_length=1, max_length=200)]


def _ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def visible_run(ctx: ServerContext, principal: Principal, run_id: str) -> RunRecord:
    """The run, or 404 when it does not exist or its project is not the token's to read."""
    run = ctx.metadata.get_run(run_id)
    if not principal.can(run.project, Role.VIEWER):
        raise NotFoundError(f"run {run_id!r} does not exist")
    return run


def _audit(
    ctx: ServerContext,
    principal: Principal,
    action: str,
    project: str | None,
    target: str | None,
    **detail: Any,
) -> None:
    ctx.platform.audit(principal.actor, action, project=project, target=target, detail=detail)


# -- who am I ------------------------------------------------------------------------------


@router.get("/me", response_model=Me, responses=_problems(), tags=["auth"])
def me(principal: CurrentPrincipal) -> Me:
    """The calling token and its roles."""
    return Me(
        token_id=principal.token_id,
        name=principal.name,
        roles={p: r.label for p, r in principal.roles.items()},
    )


# -- pipelines -----------------------------------------------------------------------------


def _pipeline_out(reg: Registered) -> PipelineOut:
    pipe = reg.pipeline
    try:
        steps = [n.id for n in reg.compile({}).nodes]
    except Exception:  # needs parameters without defaults: the steps show once submitted
        steps = []
    return PipelineOut(
        name=pipe.name,
        file=reg.file,
        params=[
            ParamOut(
                name=p.name,
                type=p.type_name,
                default=metric(p.default) if isinstance(p.default, float) else p.default,
                required=p.required,
            )
            for p in pipe.params.values()
        ],
        steps=steps,
    )


@router.get("/pipelines", response_model=list[PipelineOut], responses=_problems(), tags=["runs"])
def list_pipelines(request: Request, principal: CurrentPrincipal) -> list[PipelineOut]:
    """The pipelines this server accepts (from ``usina server --pipelines FILE``)."""
    return [_pipeline_out(r) for r in _ctx(request).pipelines.all()]


@router.get(
    "/pipelines/{name}", response_model=PipelineOut, responses=_problems(404), tags=["runs"]
)
def get_pipeline(request: Request, principal: CurrentPrincipal, name: NamePath) -> PipelineOut:
    return _pipeline_out(_ctx(request).pipelines.get(name))


@router.get(
    "/pipelines/{name}/metrics",
    response_model=list[MetricPoint],
    responses=_problems(),
    tags=["runs"],
)
def pipeline_metrics(
    request: Request,
    principal: CurrentPrincipal,
    name: NamePath,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[MetricPoint]:
    """Step metrics of the pipeline's newest runs, oldest first: metrics over time."""
    rows = _ctx(request).platform.step_metrics(
        name, projects_=principal.visible_projects(), limit=limit
    )
    return [
        MetricPoint(run_id=r, created_at=at, step=s, metrics={k: metric(v) for k, v in m.items()})
        for r, at, s, m in rows
    ]


# -- runs ----------------------------------------------------------------------------------


@router.get("/runs", response_model=RunPage, responses=_problems(400), tags=["runs"])
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
    ctx = _ctx(request)
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
    responses=_problems(400, 403, 404),
    tags=["runs"],
)
def submit_run(request: Request, principal: CurrentPrincipal, body: SubmitRequest) -> RunDetail:
    """Submit a run of a pipeline this server has; the reconciler picks it up at once."""
    ctx = _ctx(request)
    require(ctx, principal, body.project, Role.EDITOR, action="run.submit", target=body.pipeline)
    plan = ctx.pipelines.get(body.pipeline).compile(body.params)
    for tries_left in (2, 1, 0):
        try:
            run = ctx.engine.submit(plan, labels=body.labels, project=body.project)
            break
        except StateError:
            # Run ids carry 16 random bits per second: busy servers do collide. Draw again.
            if not tries_left:
                raise
    _audit(ctx, principal, "run.submit", body.project, run.id, pipeline=run.pipeline)
    return run_detail(run, ctx.metadata.get_steps(run.id))


@router.get("/runs/{run_id}", response_model=RunDetail, responses=_problems(404), tags=["runs"])
def get_run(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> RunDetail:
    ctx = _ctx(request)
    run = visible_run(ctx, principal, run_id)
    return run_detail(run, ctx.metadata.get_steps(run_id))


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunDetail,
    responses=_problems(403, 404),
    tags=["runs"],
)
def cancel_run(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> RunDetail:
    """Ask a run to stop; the replica driving it kills its attempts on its next pass."""
    ctx = _ctx(request)
    run = visible_run(ctx, principal, run_id)
    require(ctx, principal, run.project, Role.EDITOR, action="run.cancel", target=run_id)
    run = ctx.engine.cancel(run_id)
    _audit(ctx, principal, "run.cancel", run.project, run_id)
    return run_detail(run, ctx.metadata.get_steps(run_id))


@router.post(
    "/runs/{run_id}/resume",
    response_model=RunDetail,
    responses=_problems(403, 404, 409),
    tags=["runs"],
)
def resume_run(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> RunDetail:
    """Run a finished run's failed, skipped and cancelled steps again, with the pipeline's
    current code when this server has the pipeline; succeeded steps keep their outputs."""
    ctx = _ctx(request)
    run = visible_run(ctx, principal, run_id)
    require(ctx, principal, run.project, Role.EDITOR, action="run.resume", target=run_id)
    if not run.state.finished:
        raise StateError(f"run {run_id} is {run.state.value}; only a finished run is resumed")
    if run.state is RunState.SUCCEEDED:
        raise StateError(f"run {run_id} succeeded; there is nothing to resume")
    reg = ctx.pipelines.find(run.pipeline)
    plan = reg.compile(run.params) if reg is not None else None
    run = ctx.engine.resume(run_id, plan)
    _audit(ctx, principal, "run.resume", run.project, run_id, current_code=plan is not None)
    return run_detail(run, ctx.metadata.get_steps(run_id))


@router.get(
    "/runs/{run_id}/attempts",
    response_model=list[AttemptOut],
    responses=_problems(404),
    tags=["runs"],
)
def list_attempts(
    request: Request,
    principal: CurrentPrincipal,
    run_id: RunIdPath,
    step: Annotated[str | None, Query(max_length=200)] = None,
) -> list[AttemptOut]:
    """Every attempt of the run's steps, with the failure class, evidence and advice."""
    ctx = _ctx(request)
    visible_run(ctx, principal, run_id)
    return [attempt_out(a) for a in ctx.metadata.get_attempts(run_id, step)]


@router.get(
    "/runs/{run_id}/events",
    response_model=list[EventOut],
    responses=_problems(404),
    tags=["runs"],
)
def list_events(request: Request, principal: CurrentPrincipal, run_id: RunIdPath) -> list[EventOut]:
    ctx = _ctx(request)
    visible_run(ctx, principal, run_id)
    return [event_out(e) for e in ctx.metadata.list_events(run_id)]


def _attempt_for(ctx: ServerContext, run_id: str, node: str, number: int | None) -> AttemptRecord:
    attempts = ctx.metadata.get_attempts(run_id, node)
    if not attempts:
        raise NotFoundError(f"step {node!r} of run {run_id} has no attempt (cached or pending)")
    if number is None:
        return attempts[-1]
    for a in attempts:
        if a.number == number:
            return a
    raise NotFoundError(f"step {node!r} of run {run_id} has no attempt {number}")


def attempt_log(ctx: ServerContext, attempt: AttemptRecord) -> str:
    """The attempt's output: the copy kept in the artifact store once it ended, else what the
    backend has now (through the ``Backend`` port)."""
    return read_attempt_log(ctx.artifacts, ctx.engine.backend, attempt.id)


def _follow(ctx: ServerContext, attempt: AttemptRecord, limit: float) -> Iterator[bytes]:
    backend = ctx.engine.backend
    sent = 0
    deadline = time.monotonic() + limit
    last_check = 0.0
    while time.monotonic() < deadline:
        text = backend.logs(attempt.id).encode()
        if len(text) > sent:
            yield text[sent:]
            sent = len(text)
        if time.monotonic() - last_check > 1.0:
            last_check = time.monotonic()
            current = next(
                (
                    a
                    for a in ctx.metadata.get_attempts(attempt.run_id, attempt.node)
                    if a.id == attempt.id
                ),
                attempt,
            )
            if current.state is not AttemptState.RUNNING:
                break
        time.sleep(0.25)
    raw = ctx.artifacts.read_record(log_key(attempt.id))
    if raw is not None and len(raw) > sent:
        yield raw[sent:]


@router.get(
    "/runs/{run_id}/steps/{step}/logs",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **{
            code: {
                "description": "a problem",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
            for code in (401, 404)
        },
    },
    tags=["runs"],
)
def step_logs(
    request: Request,
    principal: CurrentPrincipal,
    run_id: RunIdPath,
    step: NamePath,
    attempt: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    follow: bool = False,
    tail: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    """A step attempt's stdout and stderr (the latest attempt unless ``attempt`` is given).
    ``follow=true`` streams the output while the attempt runs and ends when it does."""
    ctx = _ctx(request)
    visible_run(ctx, principal, run_id)
    chosen = _attempt_for(ctx, run_id, step, attempt)
    if follow and chosen.state is AttemptState.RUNNING:
        return StreamingResponse(_follow(ctx, chosen, 3600.0), media_type="text/plain")
    text = attempt_log(ctx, chosen)
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:])
    return PlainTextResponse(text)


@router.get(
    "/runs/{run_id}/lineage",
    response_model=list[LineageItem],
    responses=_problems(404),
    tags=["artifacts"],
)
def run_lineage(
    request: Request, principal: CurrentPrincipal, run_id: RunIdPath
) -> list[LineageItem]:
    """Each artifact the run's steps produced: its metadata, the step and output that made
    it, the steps that read it, and whether its bytes are still stored."""
    ctx = _ctx(request)
    run = visible_run(ctx, principal, run_id)
    consumers: dict[tuple[str, int], list[LineageConsumer]] = {}
    for node in run.plan.get("nodes", []):
        for name, spec in node.get("inputs", {}).items():
            if "ref" in spec:
                source, index = spec["ref"]
                consumers.setdefault((source, int(index)), []).append(
                    LineageConsumer(node=node["id"], input=name)
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


# -- models --------------------------------------------------------------------------------


def _models(ctx: ServerContext) -> Any:
    if ctx.models is None:
        raise NotFoundError(
            "this server has no model registry, so no models; start it with --registry-uri URI"
        )
    return ctx.models


@router.get("/models", response_model=list[ModelOut], responses=_problems(503), tags=["models"])
def list_models(request: Request, principal: CurrentPrincipal) -> list[ModelOut]:
    """Registered models (MLflow) of the projects the token can read, with versions and
    aliases."""
    ctx = _ctx(request)
    if ctx.models is None:
        return []
    return ctx.models.list_models(principal.visible_projects())


@router.get(
    "/models/{name}", response_model=ModelOut, responses=_problems(404, 503), tags=["models"]
)
def get_model(request: Request, principal: CurrentPrincipal, name: NamePath) -> ModelOut:
    registry = _models(_ctx(request))
    if not principal.can(registry.project_of(name), Role.VIEWER):
        raise NotFoundError(f"model {name!r} does not exist")
    found: ModelOut = registry.get_model(name)
    return found


@router.put(
    "/models/{name}/aliases/{alias}",
    response_model=ModelOut,
    responses=_problems(403, 404, 503),
    tags=["models"],
)
def set_model_alias(
    request: Request,
    principal: CurrentPrincipal,
    name: NamePath,
    alias: Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")],
    body: AliasRequest,
) -> ModelOut:
    """Promote: point ``alias`` (``champion``, ``challenger``) at a version of the model."""
    ctx = _ctx(request)
    registry = _models(ctx)
    project = registry.project_of(name)
    if not principal.can(project, Role.VIEWER):
        raise NotFoundError(f"model {name!r} does not exist")
    require(ctx, principal, project, Role.EDITOR, action="model.promote", target=name)
    model: ModelOut = registry.set_alias(name, alias, body.version)
    _audit(ctx, principal, "model.promote", project, name, alias=alias, version=body.version)
    return model


# -- serving endpoints ---------------------------------------------------------------------


def check_ready(url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """Whether a V2 inference server answers ``GET <url>/v2/health/ready`` with 200."""
    target = url.rstrip("/") + "/v2/health/ready"
    try:
        with urlopen(UrlRequest(target, method="GET"), timeout=timeout) as reply:
            return reply.status == 200, f"HTTP {reply.status}"
    except URLError as exc:
        return False, str(getattr(exc, "reason", exc))
    except (OSError, ValueError) as exc:
        return False, str(exc)


@router.get("/endpoints", response_model=list[EndpointOut], responses=_problems(), tags=["serving"])
def list_endpoints(
    request: Request, principal: CurrentPrincipal, check: bool = True
) -> list[EndpointOut]:
    """Registered serving endpoints and whether each is ready (checked now, 1 s at most)."""
    found = _ctx(request).platform.list_endpoints(principal.visible_projects())
    results: list[tuple[bool, str] | None] = [None] * len(found)
    if check and found:
        with ThreadPoolExecutor(max_workers=min(16, len(found))) as pool:
            results = list(pool.map(lambda e: check_ready(e.url), found))
    return [
        EndpointOut(
            name=e.name,
            project=e.project,
            url=e.url,
            ready=r[0] if r else None,
            detail=r[1] if r else None,
        )
        for e, r in zip(found, results, strict=True)
    ]


@router.put(
    "/endpoints/{name}",
    response_model=EndpointOut,
    responses=_problems(403),
    tags=["serving"],
)
def put_endpoint(
    request: Request, principal: CurrentPrincipal, name: NamePath, body: EndpointIn
) -> EndpointOut:
    """Register (or move) a serving endpoint by name."""
    ctx = _ctx(request)
    require(ctx, principal, body.project, Role.ADMIN, action="endpoint.put", target=name)
    existing = {e.name: e for e in ctx.platform.list_endpoints()}.get(name)
    if existing is not None:
        require(ctx, principal, existing.project, Role.ADMIN, action="endpoint.put", target=name)
    e = ctx.platform.put_endpoint(name, body.project, body.url)
    _audit(ctx, principal, "endpoint.put", body.project, name, url=body.url)
    return EndpointOut(name=e.name, project=e.project, url=e.url, ready=None, detail=None)


@router.delete(
    "/endpoints/{name}", status_code=204, responses=_problems(403, 404), tags=["serving"]
)
def delete_endpoint(request: Request, principal: CurrentPrincipal, name: NamePath) -> Response:
    ctx = _ctx(request)
    existing = {e.name: e for e in ctx.platform.list_endpoints()}.get(name)
    if existing is None or not principal.can(existing.project, Role.VIEWER):
        raise NotFoundError(f"endpoint {name!r} does not exist")
    require(ctx, principal, existing.project, Role.ADMIN, action="endpoint.delete", target=name)
    ctx.platform.delete_endpoint(name)
    _audit(ctx, principal, "endpoint.delete", existing.project, name)
    return Response(status_code=204)


# -- tokens and audit ----------------------------------------------------------------------


def _admin_projects(principal: Principal) -> frozenset[str] | None:
    """Projects the principal administers; None for all of them."""
    if principal.can(ALL_PROJECTS, Role.ADMIN):
        return None
    return frozenset(p for p, r in principal.roles.items() if r >= Role.ADMIN)


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses=_problems(403),
    tags=["auth"],
)
def create_token(request: Request, principal: CurrentPrincipal, body: TokenCreate) -> TokenCreated:
    """A new token with a role in a project (admins of that project only). The token is in
    this answer and nowhere else."""
    ctx = _ctx(request)
    require(ctx, principal, body.project, Role.ADMIN, action="token.create", target=body.name)
    token, info = ctx.platform.create_token(
        body.name, {body.project: Role.parse(body.role)}, created_by=principal.actor
    )
    _audit(ctx, principal, "token.create", body.project, info.id, role=body.role, name=body.name)
    return TokenCreated(token=token, **token_out(info).model_dump())


@router.get("/tokens", response_model=list[TokenOut], responses=_problems(), tags=["auth"])
def list_tokens(request: Request, principal: CurrentPrincipal) -> list[TokenOut]:
    """Tokens with a role in a project this token administers (never the tokens themselves)."""
    projects = _admin_projects(principal)
    if projects is not None and not projects:
        return []
    return [token_out(t) for t in _ctx(request).platform.list_tokens(projects)]


@router.delete(
    "/tokens/{token_id}", response_model=TokenOut, responses=_problems(403, 404), tags=["auth"]
)
def revoke_token(
    request: Request,
    principal: CurrentPrincipal,
    token_id: Annotated[str, Path(min_length=1, max_length=32)],
) -> TokenOut:
    """Revoke a token; needs admin in every project it has a role in."""
    ctx = _ctx(request)
    info = ctx.platform.get_token(token_id)
    for project in info.roles:
        require(ctx, principal, project, Role.ADMIN, action="token.revoke", target=token_id)
    info = ctx.platform.revoke_token(token_id)
    ctx.tokens.clear()
    _audit(ctx, principal, "token.revoke", next(iter(info.roles), None), token_id)
    return token_out(info)


@router.get("/audit", response_model=list[AuditOut], responses=_problems(403), tags=["auth"])
def list_audit(
    request: Request,
    principal: CurrentPrincipal,
    project: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> list[AuditOut]:
    """The audit log, newest first: who did what, when, to what (admins only)."""
    ctx = _ctx(request)
    scope: frozenset[str] | None
    if project is not None:
        require(ctx, principal, project, Role.ADMIN, action="audit.read", target=project)
        scope = frozenset({project})
    else:
        scope = _admin_projects(principal)
        if scope is not None and not scope:
            raise HTTPException(403, "reading the audit log needs the admin role in a project")
    entries = ctx.platform.list_audit(projects_=scope, limit=limit, before=before)
    return [audit_out(e) for e in entries]
