"""The ASGI application: API, web UI and static files, with the reconciler started and stopped
by the application's lifespan."""

from __future__ import annotations

import importlib.util
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
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
from usina.i18n import message_json
from usina.server import api, profiles, ui
from usina.server.body_limit import BodyLimit
from usina.server.denials import DenialLog, HiddenRunError, client_of
from usina.server.follow import FollowSlots
from usina.server.guards import GuardSettings
from usina.server.metrics_access import metrics_endpoint, metrics_registry
from usina.server.routes.bundles import BUNDLES_PATH, MAX_UPLOAD_BYTES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from usina.server.context import ServerContext

STATIC = Path(__file__).with_name("static")
DOCS_ASSETS = "/docs/assets"


def guards_of(ctx: ServerContext) -> GuardSettings:
    """The server's limits: ``ServerSettings.guards`` when the settings carry them, else the
    defaults."""
    found = getattr(ctx.settings, "guards", None)
    return found if isinstance(found, GuardSettings) else GuardSettings()


def create_app(
    ctx: ServerContext, *, manage: bool = True, guards: GuardSettings | None = None
) -> FastAPI:
    """The application over ``ctx``. With ``manage`` the lifespan starts the reconciler and
    closes ``ctx`` at shutdown. ``guards`` (default: ``guards_of(ctx)``) bounds request sizes,
    log streams, probes and ``/metrics``."""
    guards = guards or guards_of(ctx)

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
        docs_url=None,  # served by _api_docs from the package's assets, never from a CDN
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.state.guards = guards
    app.state.denials = DenialLog(guards.audit_denials_per_minute)
    app.state.follow_slots = FollowSlots(guards.follow_per_token, guards.follow_total)
    app.add_middleware(
        BodyLimit,
        max_bytes=guards.max_body_bytes,
        larger={BUNDLES_PATH: max(MAX_UPLOAD_BYTES, guards.max_body_bytes)},
    )

    def problem(status: int, exc: Exception) -> JSONResponse:
        # The English text, and its message id for a client to show in its reader's language.
        return JSONResponse({"detail": str(exc), **message_json(exc)}, status_code=status)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        if isinstance(exc, HiddenRunError):
            await anyio.to_thread.run_sync(
                partial(
                    app.state.denials.record,
                    ctx,
                    "other_project",
                    client=client_of(request),
                    token_id=exc.token_id,
                    project=exc.project,
                    target=exc.run_id,
                    method=request.method,
                    path=request.url.path,
                )
            )
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
    @app.get("/ui", include_in_schema=False)  # the address `usina server` prints
    @app.get("/ui/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=303)

    _api_docs(app)

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
    # Pipeline and compute metrics for Prometheus: open like the probes unless a metrics token
    # is set, or served on a port of their own instead. Every replica computes them from the
    # shared store: scrape one, or aggregate without instance.
    app.state.metrics_registry = metrics_registry(ctx, guards)
    if guards.metrics_port is None:
        app.mount("/metrics", metrics_endpoint(app.state.metrics_registry, guards))
    return app


def _api_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI over ``/openapi.json``, its script and style served from the
    ``fastapi-offline`` package (the server extra; Swagger UI 5, which reads OpenAPI 3.1), so
    the page works offline. The package is only located, never imported."""
    spec = importlib.util.find_spec("fastapi_offline")
    found = [Path(p) / "static" for p in (spec.submodule_search_locations or [])] if spec else []
    assets = next((p for p in found if (p / "swagger-ui-bundle.js").is_file()), None)
    if assets is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if assets is None:
            raise MissingExtraError("fastapi-offline", "server")
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # Swagger UI would otherwise ask validator.swagger.io about the schema.
            swagger_ui_parameters={"validatorUrl": None},
        )
