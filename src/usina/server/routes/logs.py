"""The route of a step attempt's output (``/runs/{id}/steps/{step}/logs``), read through the
``Backend`` port (and the artifact store's copy once the attempt ended), optionally followed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from usina.compose.components import read_attempt_log
from usina.engine.records import AttemptRecord, AttemptState
from usina.errors import NotFoundError
from usina.logtext import terminal_safe
from usina.server.auth import CurrentPrincipal  # noqa: TC001 - FastAPI reads it at run time
from usina.server.follow import FollowResponse, FollowSlots, follow_log
from usina.server.routes.common import (
    NamePath,
    RunIdPath,
    context_of,
    visible_run,
)

if TYPE_CHECKING:
    from usina.server.context import ServerContext
    from usina.server.guards import GuardSettings

router = APIRouter()


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
    backend has now (through the ``Backend`` port), without terminal control sequences but
    colour; a cut-off start is marked "… N bytes not shown"."""
    return terminal_safe(read_attempt_log(ctx.artifacts, ctx.engine.backend, attempt.id))


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
            for code in (401, 404, 429)
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
    ``follow=true`` streams the output while the attempt runs and ends when it does (429 when
    this token already follows ``GuardSettings.follow_per_token`` logs).

    Terminal control sequences other than colour are removed; output whose start was cut off
    begins with "… N bytes not shown"."""
    ctx = context_of(request)
    visible_run(ctx, principal, run_id)
    chosen = _attempt_for(ctx, run_id, step, attempt)
    if follow and chosen.state is AttemptState.RUNNING:
        guards: GuardSettings = request.app.state.guards
        slots: FollowSlots = request.app.state.follow_slots
        slots.take(principal.token_id)
        stream = follow_log(
            ctx, chosen, slots, seconds=guards.follow_seconds, poll=guards.follow_poll
        )
        return FollowResponse(stream, slots, principal.token_id)
    text = attempt_log(ctx, chosen)
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:])
    return PlainTextResponse(text)
