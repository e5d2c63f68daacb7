"""The route of a step's output bytes (``/runs/{id}/steps/{step}/outputs/{index}``): what
``usina.Client`` loads as a Python value against a server. The bytes are read through the
artifact store, which checks them against their sha256; the serializer and the Python type to
read them back as come in headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from usina.errors import NotFoundError
from usina.server.auth import CurrentPrincipal  # noqa: TC001 - FastAPI reads it at run time
from usina.server.routes.common import NamePath, RunIdPath, context_of, visible_run

router = APIRouter()

#: Headers that say how to read the bytes back (``usina.stores.serializers.load``).
SERIALIZER_HEADER = "X-Usina-Serializer"
TYPE_HEADER = "X-Usina-Type"
DIGEST_HEADER = "X-Usina-Digest"


@router.get(
    "/runs/{run_id}/steps/{step}/outputs/{index}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
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
def step_output(
    request: Request,
    principal: CurrentPrincipal,
    run_id: RunIdPath,
    step: NamePath,
    index: Annotated[int, Path(ge=0, le=1000)],
) -> Response:
    """Output ``index`` of a step that succeeded, as stored (parquet, npy, json, ...)."""
    ctx = context_of(request)
    visible_run(ctx, principal, run_id)
    record = next((s for s in ctx.metadata.get_steps(run_id) if s.node == step), None)
    if record is None:
        raise NotFoundError(f"run {run_id} has no step {step!r}")
    if index >= len(record.outputs):
        raise NotFoundError(
            f"step {step!r} of run {run_id} has {len(record.outputs)} outputs "
            f"({record.state.value}); there is no output {index}"
        )
    ref = record.outputs[index]
    data = ctx.artifacts.get_bytes(ref.digest)
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={
            SERIALIZER_HEADER: ref.serializer,
            TYPE_HEADER: ref.type_name,
            DIGEST_HEADER: ref.digest,
        },
    )
