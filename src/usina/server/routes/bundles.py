"""Routes of code bundles (``/bundles``): a laptop's ``usina run --server URL FILE.py`` uploads
its project's code here, then submits a run of it (``POST /runs`` with ``bundle``).

A bundle is content-addressed: its id is the sha256 of its bytes, so the upload is refused
unless the bytes hash to the id in the path, and a bundle already stored is not uploaded again
(``GET`` first; ``PUT`` of a stored one answers 200 without storing). Before storing, the
server checks the archive holds regular files at safe paths with a usina manifest, and unpacks
to at most ``BUNDLE_LIMITS.max_bytes``; the request body itself is bounded by
``MAX_UPLOAD_BYTES`` (the one route whose body may pass ``GuardSettings.max_body_bytes``).
Reading and uploading need the editor role in the project the run is for, as submitting does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from usina.bundles import (
    BundleError,
    BundleLimits,
    BundleTooLargeError,
    check_archive,
)
from usina.i18n import message_json
from usina.server.auth import CurrentPrincipal, require
from usina.server.routes.common import audit, context_of, problems
from usina.stores.platform import Role

router = APIRouter()

#: What an uploaded bundle may unpack to (the same limit ``usina run`` packs under).
BUNDLE_LIMITS = BundleLimits()
#: The largest upload, in compressed bytes: a bundle compresses, so this never binds before
#: ``BUNDLE_LIMITS`` does for a real project.
MAX_UPLOAD_BYTES = BUNDLE_LIMITS.max_bytes
BUNDLES_PATH = "/api/v1/bundles/"

DigestPath = Annotated[
    str, Path(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256:<hex> of the bundle's bytes")
]
ProjectQuery = Annotated[
    str, Query(min_length=1, max_length=200, description="the project the runs are for")
]


class BundleOut(BaseModel):
    digest: str
    stored: bool  # True: the store has it (now, or had it already)
    uploaded: bool  # True: this request stored it
    size: int | None = None  # compressed bytes, when this request stored it
    uncompressed: int | None = None


@router.get(
    "/bundles/{digest}",
    response_model=BundleOut,
    responses=problems(403, 404),
    tags=["runs"],
)
def get_bundle(
    request: Request, principal: CurrentPrincipal, digest: DigestPath, project: ProjectQuery
) -> BundleOut:
    """Whether the server's artifact store holds bundle ``digest`` (404 when it does not)."""
    ctx = context_of(request)
    require(ctx, principal, project, Role.EDITOR, action="bundle.read", target=digest)
    if not ctx.artifacts.exists(digest):
        raise HTTPException(404, f"bundle {digest} is not stored; upload it (PUT)")
    return BundleOut(digest=digest, stored=True, uploaded=False)


@router.put(
    "/bundles/{digest}",
    response_model=BundleOut,
    status_code=201,
    responses=problems(400, 403, 413),
    tags=["runs"],
)
def put_bundle(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    digest: DigestPath,
    project: ProjectQuery,
    data: Annotated[bytes, Body(media_type="application/octet-stream")] = b"",
) -> BundleOut | JSONResponse:
    """Store a code bundle (a tar.gz made by ``usina run``) under its sha256; 200 without
    storing anything when it is there already."""
    ctx = context_of(request)
    require(ctx, principal, project, Role.EDITOR, action="bundle.upload", target=digest)
    if ctx.artifacts.exists(digest):
        response.status_code = 200
        return BundleOut(digest=digest, stored=True, uploaded=False)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(
            413, f"the bundle is {len(data)} bytes, over the limit of {MAX_UPLOAD_BYTES}"
        )
    try:
        unpacked = check_archive(data, digest, BUNDLE_LIMITS)
    except BundleError as exc:  # not its hash, not a tar.gz, an unsafe path, no manifest
        # The English text, and its message id for the client to show in its reader's language.
        status = 413 if isinstance(exc, BundleTooLargeError) else 400
        return JSONResponse({"detail": str(exc), **message_json(exc)}, status_code=status)
    stored = ctx.artifacts.put_bytes(data)
    if stored != digest:  # pragma: no cover - check_archive hashed the same bytes
        raise HTTPException(500, f"the store saved bundle {digest} as {stored}")
    audit(ctx, principal, "bundle.upload", project, digest, size=len(data), unpacked=unpacked)
    return BundleOut(
        digest=digest, stored=True, uploaded=True, size=len(data), uncompressed=unpacked
    )
