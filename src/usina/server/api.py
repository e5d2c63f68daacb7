"""The REST API under ``/api/v1``: pipelines, runs, steps, attempts, logs, lineage, metrics,
models, serving endpoints, schedules, triggers, tokens and the audit log.

Every route needs a token (``usina.server.auth``). Reads need the viewer role in the object's
project, and a run of a project the token cannot read answers 404, as if it did not exist;
submit, cancel, resume and promote need editor; tokens, the audit log and endpoints need
admin. Every mutation, and every refused one, is written to the audit log.
"""

from __future__ import annotations

from fastapi import APIRouter

from usina.server.routes import (
    artifacts,
    auth,
    bundles,
    endpoints,
    logs,
    models,
    pipelines,
    runs,
    schedules,
    triggers,
)
from usina.server.routes.common import visible_run
from usina.server.routes.endpoints import list_endpoints
from usina.server.routes.logs import attempt_log

__all__ = ["attempt_log", "list_endpoints", "router", "visible_run"]

router = APIRouter(prefix="/api/v1")
for _routes in (
    auth,
    pipelines,
    bundles,
    runs,
    logs,
    artifacts,
    models,
    endpoints,
    schedules,
    triggers,
):
    router.include_router(_routes.router)
