"""The route of a step attempt's output (``/runs/{id}/steps/{step}/logs``), read through the
``Backend`` port (and the artifact store's copy once the attempt ended), optionally followed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from usina.compose.components import read_attempt_log
from usina.engine.ports import log_key
from usina.engine.records import AttemptRecord, AttemptState
from usina.errors import NotFoundError
from usina.server.auth import CurrentPrincipal  # noqa: TC001 - FastAPI reads it at run time
from usina.server.routes.common import (
    NamePath,
    RunIdPath,
    context_of,
    visible_run,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from usina.server.context import ServerContext

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
    ctx = context_of(request)
    visible_run(ctx, principal, run_id)
    chosen = _attempt_for(ctx, run_id, step, attempt)
    if follow and chosen.state is AttemptState.RUNNING:
        return StreamingResponse(_follow(ctx, chosen, 3600.0), media_type="text/plain")
    text = attempt_log(ctx, chosen)
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:])
    return PlainTextResponse(text)
