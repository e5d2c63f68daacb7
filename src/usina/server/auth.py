"""Who is calling: API tokens (``Authorization: Bearer usn_...``), checked on every route.

The web UI keeps the token in an HttpOnly cookie; the cookie is accepted for reads only, so a
page on another site cannot make a browser change anything (mutations need the header).
Checked tokens are remembered for a few seconds, so a revoked token stops working within
``CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from usina.stores.platform import Principal, Role

if TYPE_CHECKING:
    from usina.server.context import ServerContext

COOKIE = "usina_token"
CACHE_SECONDS = 5.0
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(auto_error=False, description="an API token: `usina token create`")


class TokenCache:
    """sha256(token) -> (principal or None, when checked); a few seconds at most."""

    def __init__(self, seconds: float = CACHE_SECONDS, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Principal | None, float]] = {}

    def get(self, ctx: ServerContext, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and now - hit[1] < self.seconds:
            return hit[0]
        found = ctx.platform.authenticate(token)
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = (found, now)
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def token_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    if request.method in _SAFE_METHODS:
        return request.cookies.get(COOKIE) or None
    return None


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    ctx: ServerContext = request.app.state.ctx
    token = token_of(request, credentials)
    if token is None:
        raise HTTPException(
            401,
            "no API token: send 'Authorization: Bearer <token>' (create one with "
            "'usina token create --project P --role R')",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = ctx.tokens.get(ctx, token)
    if principal is None:
        raise HTTPException(
            401, "the API token is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(
    ctx: ServerContext,
    principal: Principal,
    project: str,
    role: Role,
    *,
    action: str,
    target: str | None = None,
) -> None:
    """403 (and an audit entry) unless ``principal`` has ``role`` in ``project``."""
    if principal.can(project, role):
        return
    if role > Role.VIEWER:
        ctx.platform.audit(
            principal.actor,
            action,
            project=project,
            target=target,
            outcome="denied",
            detail={"needs": role.label},
        )
    held = principal.role_in(project)
    raise HTTPException(
        403,
        f"{action} in project {project!r} needs the {role.label} role; this token has "
        f"{held.label if held else 'no role'} there",
    )
