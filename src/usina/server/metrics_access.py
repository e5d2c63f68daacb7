"""Who may scrape the platform server's ``/metrics``: anyone (the default, like the probes),
only a caller sending ``GuardSettings.metrics_token``, or only callers of a separate port
(``GuardSettings.metrics_port``), e.g. one only the cluster's Prometheus can reach.

The metrics name every project's pipelines and teams, so a shared server should set one of
the two; team label values are bounded either way (``PipelineMetricsSettings.teams``).
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from usina.monitoring.pipeline_metrics import PipelineMetricsSettings, pipeline_registry

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from usina.server.context import ServerContext
    from usina.server.guards import GuardSettings


class TokenGate:
    """An ASGI wrapper answering 401 unless ``Authorization: Bearer <token>`` matches."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            sent = dict(scope.get("headers", ())).get(b"authorization", b"")
            if not hmac.compare_digest(sent, self._expected):
                body = json.dumps(
                    {"detail": "/metrics needs 'Authorization: Bearer <the metrics token>'"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def metrics_registry(ctx: ServerContext, guards: GuardSettings) -> Any:
    """The pipeline metrics of ``ctx``'s store, with the team label bounded by ``guards``."""
    return pipeline_registry(
        ctx.metadata,
        ctx.artifacts,
        settings=PipelineMetricsSettings(
            teams=guards.metrics_teams, max_teams=guards.metrics_max_teams
        ),
    )


def metrics_endpoint(registry: Any, guards: GuardSettings) -> Any:
    """The ASGI app answering scrapes of ``registry``, behind the token when one is set."""
    from usina.monitoring.pipeline_metrics import metrics_app

    app = metrics_app(registry)
    return TokenGate(app, guards.metrics_token) if guards.metrics_token else app
