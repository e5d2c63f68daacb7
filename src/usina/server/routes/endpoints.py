"""Routes of the serving endpoints (``/endpoints``): admin-only, and their readiness."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request, Response

from usina.errors import NotFoundError
from usina.server.auth import CurrentPrincipal, require
from usina.server.probe_policy import ProbePolicy, check_ready
from usina.server.routes.common import (
    NamePath,
    audit,
    context_of,
    problems,
)
from usina.server.schemas import (
    EndpointIn,
    EndpointOut,
)
from usina.stores.platform import Role

router = APIRouter()


# -- serving endpoints ---------------------------------------------------------------------


@router.get("/endpoints", response_model=list[EndpointOut], responses=problems(), tags=["serving"])
def list_endpoints(
    request: Request, principal: CurrentPrincipal, check: bool = True
) -> list[EndpointOut]:
    """Registered serving endpoints and whether each is ready (checked now, 1 s at most).
    URLs the server's probe policy refuses (loopback, link-local, hosts outside
    ``GuardSettings.probe_allow``) are not requested: ``ready`` is null and ``detail`` says
    why."""
    found = context_of(request).platform.list_endpoints(principal.visible_projects())
    guards = request.app.state.guards
    policy = ProbePolicy(guards.probe_allow, guards.probe_allow_private)
    results: list[tuple[bool | None, str] | None] = [None] * len(found)
    if check and found:
        with ThreadPoolExecutor(max_workers=min(16, len(found))) as pool:
            results = list(pool.map(lambda e: check_ready(e.url, policy), found))
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
    responses=problems(403),
    tags=["serving"],
)
def put_endpoint(
    request: Request, principal: CurrentPrincipal, name: NamePath, body: EndpointIn
) -> EndpointOut:
    """Register (or move) a serving endpoint by name."""
    ctx = context_of(request)
    require(ctx, principal, body.project, Role.ADMIN, action="endpoint.put", target=name)
    existing = {e.name: e for e in ctx.platform.list_endpoints()}.get(name)
    if existing is not None:
        require(ctx, principal, existing.project, Role.ADMIN, action="endpoint.put", target=name)
    e = ctx.platform.put_endpoint(name, body.project, body.url)
    audit(ctx, principal, "endpoint.put", body.project, name, url=body.url)
    return EndpointOut(name=e.name, project=e.project, url=e.url, ready=None, detail=None)


@router.delete("/endpoints/{name}", status_code=204, responses=problems(403, 404), tags=["serving"])
def delete_endpoint(request: Request, principal: CurrentPrincipal, name: NamePath) -> Response:
    ctx = context_of(request)
    existing = {e.name: e for e in ctx.platform.list_endpoints()}.get(name)
    if existing is None or not principal.can(existing.project, Role.VIEWER):
        raise NotFoundError(f"endpoint {name!r} does not exist")
    require(ctx, principal, existing.project, Role.ADMIN, action="endpoint.delete", target=name)
    ctx.platform.delete_endpoint(name)
    audit(ctx, principal, "endpoint.delete", existing.project, name)
    return Response(status_code=204)
