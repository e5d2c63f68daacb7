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

from usina.server.denials import DenialLog, client_of, token_id_of
from usina.stores.platform import Principal, Role, TokenCheck, TokenVerdict

if TYPE_CHECKING:
    from usina.server.context import ServerContext

COOKIE = "usina_token"
CACHE_SECONDS = 5.0
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(auto_error=False, description="an API token: `usina token create`")


class TokenCache:
    """sha256(token) -> (the check's outcome, when checked); a few seconds at most."""

    def __init__(self, seconds: float = CACHE_SECONDS, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[TokenCheck, float]] = {}

    def check(self, ctx: ServerContext, token: str) -> TokenCheck:
        """The token's ``TokenCheck`` (verdict, id, principal), from the cache when fresh."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and now - hit[1] < self.seconds:
            return hit[0]
        found = ctx.platform.check_token(token)
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = (found, now)
        return found

    def get(self, ctx: ServerContext, token: str) -> Principal | None:
        return self.check(ctx, token).principal

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
        cookie = request.cookies.get(COOKIE)
        if cookie and request.method not in _SAFE_METHODS:
            _denied(request).record(
                ctx,
                "cookie_write",
                client=client_of(request),
                token_id=token_id_of(cookie),
                target=request.url.path,
                method=request.method,
            )
            raise HTTPException(
                401,
                f"{request.method} needs 'Authorization: Bearer <token>'; the UI's cookie is "
                "accepted for reads only",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise HTTPException(
            401,
            "no API token: send 'Authorization: Bearer <token>' (create one with "
            "'usina token create --project P --role R')",
            headers={"WWW-Authenticate": "Bearer"},
        )
    checked = ctx.tokens.check(ctx, token)
    if checked.principal is None:
        _denied(request).record(
            ctx,
            f"token_{checked.verdict.value}",
            client=client_of(request),
            token_id=checked.token_id,
            target=request.url.path,
            method=request.method,
        )
        raise HTTPException(401, _REFUSED[checked.verdict], headers={"WWW-Authenticate": "Bearer"})
    return checked.principal


_REFUSED = {
    TokenVerdict.MALFORMED: "the API token is not a usina token (they look like usn_<id>_...)",
    TokenVerdict.UNKNOWN: "the API token is unknown or revoked",
    TokenVerdict.WRONG_SECRET: "the API token is unknown or revoked",
    TokenVerdict.REVOKED: "the API token is unknown or revoked",
    TokenVerdict.EXPIRED: "the API token has expired: ask an admin for a new one "
    "('usina token create --expires 30d ...')",
    TokenVerdict.OK: "",
}


def _denied(request: Request) -> DenialLog:
    found = getattr(request.app.state, "denials", None)
    if isinstance(found, DenialLog):
        return found
    made = DenialLog(30)
    request.app.state.denials = made
    return made


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
