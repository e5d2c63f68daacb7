"""Routes of the model registry (``/models``): versions, aliases, promotion (MLflow)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request

from usina.errors import NotFoundError
from usina.server.auth import CurrentPrincipal, require
from usina.server.routes.common import (
    NamePath,
    audit,
    context_of,
    problems,
)
from usina.server.schemas import (
    AliasRequest,
    ModelOut,
)
from usina.stores.platform import Role

if TYPE_CHECKING:
    from usina.server.context import ServerContext

router = APIRouter()


# -- models --------------------------------------------------------------------------------


def _models(ctx: ServerContext) -> Any:
    if ctx.models is None:
        raise NotFoundError(
            "this server has no model registry, so no models; start it with --registry-uri URI"
        )
    return ctx.models


@router.get("/models", response_model=list[ModelOut], responses=problems(503), tags=["models"])
def list_models(request: Request, principal: CurrentPrincipal) -> list[ModelOut]:
    """Registered models (MLflow) of the projects the token can read, with versions and
    aliases."""
    ctx = context_of(request)
    if ctx.models is None:
        return []
    return ctx.models.list_models(principal.visible_projects())


@router.get(
    "/models/{name}", response_model=ModelOut, responses=problems(404, 503), tags=["models"]
)
def get_model(request: Request, principal: CurrentPrincipal, name: NamePath) -> ModelOut:
    registry = _models(context_of(request))
    if not principal.can(registry.project_of(name), Role.VIEWER):
        raise NotFoundError(f"model {name!r} does not exist")
    found: ModelOut = registry.get_model(name)
    return found


@router.put(
    "/models/{name}/aliases/{alias}",
    response_model=ModelOut,
    responses=problems(403, 404, 503),
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
    ctx = context_of(request)
    registry = _models(ctx)
    project = registry.project_of(name)
    if not principal.can(project, Role.VIEWER):
        raise NotFoundError(f"model {name!r} does not exist")
    require(ctx, principal, project, Role.EDITOR, action="model.promote", target=name)
    model: ModelOut = registry.set_alias(name, alias, body.version)
    audit(ctx, principal, "model.promote", project, name, alias=alias, version=body.version)
    return model
