"""What every route module shares: the server context of a request, the run visibility
rule, the audit call, the documented problems and the path parameter types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Path, Request

from usina.i18n import mark
from usina.server.denials import HiddenRunError
from usina.server.schemas import (
    Problem,
)
from usina.stores.platform import Principal, Role
from usina.stores.sql import RUN_NOT_FOUND

if TYPE_CHECKING:
    from usina.engine.records import RunRecord
    from usina.server.context import ServerContext


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in (401, *codes)}


RunIdPath = Annotated[str, Path(min_length=1, max_length=200)]
NamePath = Annotated[str, Path(min_length=1, max_length=200)]


def context_of(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def visible_run(ctx: ServerContext, principal: Principal, run_id: str) -> RunRecord:
    """The run, or 404 when it does not exist or its project is not the token's to read."""
    run = ctx.metadata.get_run(run_id)
    if not principal.can(run.project, Role.VIEWER):
        # Answered like a missing run; the server's handler records it as a denial.
        said = {"run": run_id}  # word for word what a missing run says, in every language
        hidden = HiddenRunError(
            RUN_NOT_FOUND.format(**said),
            token_id=principal.token_id,
            project=run.project,
            run_id=run_id,
        )
        raise mark(hidden, RUN_NOT_FOUND, said)
    return run


def audit(
    ctx: ServerContext,
    principal: Principal,
    action: str,
    project: str | None,
    target: str | None,
    **detail: Any,
) -> None:
    ctx.platform.audit(principal.actor, action, project=project, target=target, detail=detail)
