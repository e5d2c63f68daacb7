"""Routes of the pipelines a server accepts (``/pipelines``) and their metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request

from usina.server.auth import CurrentPrincipal  # noqa: TC001 - FastAPI reads it at run time
from usina.server.routes.common import (
    NamePath,
    context_of,
    problems,
)
from usina.server.schemas import (
    MetricPoint,
    ParamOut,
    PipelineOut,
    metric,
)

if TYPE_CHECKING:
    from usina.server.registry import Registered

router = APIRouter()


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


@router.get("/pipelines", response_model=list[PipelineOut], responses=problems(), tags=["runs"])
def list_pipelines(request: Request, principal: CurrentPrincipal) -> list[PipelineOut]:
    """The pipelines this server accepts (from ``usina server --pipelines FILE``)."""
    return [_pipeline_out(r) for r in context_of(request).pipelines.all()]


@router.get("/pipelines/{name}", response_model=PipelineOut, responses=problems(404), tags=["runs"])
def get_pipeline(request: Request, principal: CurrentPrincipal, name: NamePath) -> PipelineOut:
    return _pipeline_out(context_of(request).pipelines.get(name))


@router.get(
    "/pipelines/{name}/metrics",
    response_model=list[MetricPoint],
    responses=problems(),
    tags=["runs"],
)
def pipeline_metrics(
    request: Request,
    principal: CurrentPrincipal,
    name: NamePath,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[MetricPoint]:
    """Step metrics of the pipeline's newest runs, oldest first: metrics over time."""
    rows = context_of(request).platform.step_metrics(
        name, projects_=principal.visible_projects(), limit=limit
    )
    return [
        MetricPoint(run_id=r, created_at=at, step=s, metrics={k: metric(v) for k, v in m.items()})
        for r, at, s, m in rows
    ]
