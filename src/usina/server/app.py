"""The ASGI application: API, web UI and static files, with the reconciler started and stopped
by the application's lifespan."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

import usina
from usina.errors import (
    DefinitionError,
    MissingExtraError,
    NotFoundError,
    StateError,
    StoreError,
    UsinaError,
)
from usina.server import api, profiles, ui

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from usina.server.context import ServerContext

STATIC = Path(__file__).with_name("static")


def create_app(ctx: ServerContext, *, manage: bool = True) -> FastAPI:
    """The application over ``ctx``. With ``manage`` the lifespan starts the reconciler and
    closes ``ctx`` at shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage:
            ctx.start()
        try:
            yield
        finally:
            if manage:
                ctx.close()

    app = FastAPI(
        title="usina",
        version=usina.__version__,
        summary="ML pipelines as a service: runs, steps, attempts, artifacts, models.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx

    def problem(status: int, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(NotFoundError)
    async def _not_found(_r: Request, exc: NotFoundError) -> JSONResponse:
        return problem(404, exc)

    @app.exception_handler(StateError)
    async def _state(_r: Request, exc: StateError) -> JSONResponse:
        return problem(409, exc)

    @app.exception_handler(DefinitionError)
    async def _definition(_r: Request, exc: DefinitionError) -> JSONResponse:
        return problem(400, exc)

    @app.exception_handler(MissingExtraError)
    async def _missing(_r: Request, exc: MissingExtraError) -> JSONResponse:
        return problem(503, exc)

    @app.exception_handler(StoreError)
    async def _store(_r: Request, exc: StoreError) -> JSONResponse:
        return problem(503, exc)

    @app.exception_handler(UsinaError)
    async def _usina(_r: Request, exc: UsinaError) -> JSONResponse:
        return problem(400, exc)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> PlainTextResponse:
        ctx.platform.list_projects()
        return PlainTextResponse("ready")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=303)

    app.include_router(api.router)
    app.include_router(profiles.router)
    app.include_router(ui.router)
    try:  # MCP over streamable HTTP at /mcp/ (the mcp extra): the same tokens and roles
        from usina.mcp.http import mount as mount_mcp
    except ImportError:
        pass
    else:
        mount_mcp(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Pipeline and compute metrics for Prometheus (unauthenticated, like the probes). Every
    # replica computes them from the shared store: scrape one, or aggregate without instance.
    from usina.monitoring.pipeline_metrics import metrics_app, pipeline_registry

    app.mount("/metrics", metrics_app(pipeline_registry(ctx.metadata, ctx.artifacts)))
    return app
