"""Routes of the calling token, the tokens and the audit log (``/me``, ``/tokens``,
``/audit``): admin-only except ``/me``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from usina.durations import parse_duration
from usina.server.auth import CurrentPrincipal, require
from usina.server.routes.common import (
    audit,
    context_of,
    problems,
)
from usina.server.schemas import (
    AuditOut,
    Me,
    TokenCreate,
    TokenCreated,
    TokenOut,
    audit_out,
    token_out,
)
from usina.stores.platform import ALL_PROJECTS, Principal, Role

if TYPE_CHECKING:
    from usina.server.guards import GuardSettings

router = APIRouter()


def token_expiry(expires: str | None, guards: GuardSettings) -> float | None:
    """When a token asked for with ``expires`` stops working (seconds since the epoch), the
    server's default lifetime when not given; 422 for a malformed duration."""
    if expires is None:
        days = guards.token_default_days
        return time.time() + days * 86400.0 if days > 0 else None
    try:
        seconds = parse_duration(expires)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return time.time() + seconds if seconds is not None else None


# -- who am I ------------------------------------------------------------------------------


@router.get("/me", response_model=Me, responses=problems(), tags=["auth"])
def me(principal: CurrentPrincipal) -> Me:
    """The calling token and its roles."""
    return Me(
        token_id=principal.token_id,
        name=principal.name,
        roles={p: r.label for p, r in principal.roles.items()},
    )


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
    responses=problems(403, 422),
    tags=["auth"],
)
def create_token(request: Request, principal: CurrentPrincipal, body: TokenCreate) -> TokenCreated:
    """A new token with a role in a project (admins of that project only). The token is in
    this answer and nowhere else."""
    ctx = context_of(request)
    require(ctx, principal, body.project, Role.ADMIN, action="token.create", target=body.name)
    expires_at = token_expiry(body.expires, request.app.state.guards)
    token, info = ctx.platform.create_token(
        body.name,
        {body.project: Role.parse(body.role)},
        created_by=principal.actor,
        expires_at=expires_at,
    )
    audit(
        ctx,
        principal,
        "token.create",
        body.project,
        info.id,
        role=body.role,
        name=body.name,
        expires_at=expires_at,
    )
    return TokenCreated(token=token, **token_out(info).model_dump())


@router.get("/tokens", response_model=list[TokenOut], responses=problems(), tags=["auth"])
def list_tokens(request: Request, principal: CurrentPrincipal) -> list[TokenOut]:
    """Tokens with a role in a project this token administers (never the tokens themselves)."""
    projects = _admin_projects(principal)
    if projects is not None and not projects:
        return []
    return [token_out(t) for t in context_of(request).platform.list_tokens(projects)]


@router.delete(
    "/tokens/{token_id}", response_model=TokenOut, responses=problems(403, 404), tags=["auth"]
)
def revoke_token(
    request: Request,
    principal: CurrentPrincipal,
    token_id: Annotated[str, Path(min_length=1, max_length=32)],
) -> TokenOut:
    """Revoke a token; needs admin in every project it has a role in."""
    ctx = context_of(request)
    info = ctx.platform.get_token(token_id)
    for project in info.roles:
        require(ctx, principal, project, Role.ADMIN, action="token.revoke", target=token_id)
    info = ctx.platform.revoke_token(token_id)
    ctx.tokens.clear()
    audit(ctx, principal, "token.revoke", next(iter(info.roles), None), token_id)
    return token_out(info)


@router.get("/audit", response_model=list[AuditOut], responses=problems(403), tags=["auth"])
def list_audit(
    request: Request,
    principal: CurrentPrincipal,
    project: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> list[AuditOut]:
    """The audit log, newest first: who did what, when, to what (admins only)."""
    ctx = context_of(request)
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
