"""``usina server``: the platform API, web UI and reconciler in one process (uvicorn).

Settings come from the options, else from the same environment variables as the CLI
(``USINA_HOME``, ``USINA_DATABASE_URL``, ``USINA_ARTIFACTS_URL``, ``MLFLOW_TRACKING_URI``).
Run several replicas against one PostgreSQL database and one artifact store to share the
runs; each replica drives at most ``--max-runs`` of them at once. ``--backend`` (or
``USINA_BACKEND``) names where the steps run, as for ``usina run``: ``local`` by default,
``kubernetes`` (with ``--namespace``, ``--queue``, ``--image``, ``--context``), or any backend
installed in the ``usina.backends`` entry-point group. ``--backend-config FILE``
(``USINA_BACKEND_CONFIG``) gives the default backend and, per project, its own backend and
options (namespace, Kueue queue, image, service account, ...): ``usina.compose.projects``.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer

from usina.i18n import _

log = logging.getLogger(__name__)


def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    database_url: Annotated[
        str | None,
        typer.Option(help="metadata store shared by the replicas (default: USINA_DATABASE_URL)"),
    ] = None,
    artifacts_url: Annotated[
        str | None, typer.Option(help="artifact store (default: USINA_ARTIFACTS_URL)")
    ] = None,
    pipelines: Annotated[
        list[str],
        typer.Option(
            "--pipelines", help="FILE.py[:NAME] whose pipelines may be submitted; repeatable"
        ),
    ] = [],  # noqa: B006
    registry_uri: Annotated[
        str | None,
        typer.Option(help="MLflow registry for the models pages (default: MLFLOW_TRACKING_URI)"),
    ] = None,
    lease_ttl: Annotated[
        float, typer.Option(help="seconds a replica's claim on a run lasts without renewal")
    ] = 15.0,
    poll_interval: Annotated[float, typer.Option(help="longest wait between passes (s)")] = 0.5,
    max_runs: Annotated[int, typer.Option(help="runs this replica drives at once")] = 16,
    max_parallel: Annotated[int, typer.Option(help="attempts running at once per run")] = 4,
    reconcile: Annotated[
        bool, typer.Option("--reconcile/--no-reconcile", help="drive runs in this process")
    ] = True,
    backend: Annotated[
        str,
        typer.Option(
            envvar="USINA_BACKEND",
            help="where steps run: local, kubernetes or an installed usina.backends entry",
        ),
    ] = "local",
    namespace: Annotated[str | None, typer.Option(help="kubernetes: namespace of the Jobs")] = None,
    queue: Annotated[str | None, typer.Option(help="kubernetes: Kueue LocalQueue")] = None,
    image: Annotated[str | None, typer.Option(help="kubernetes: image with usina and code")] = None,
    context: Annotated[str | None, typer.Option(help="kubernetes: kubeconfig context")] = None,
    backend_config: Annotated[
        str | None,
        typer.Option(
            envvar="USINA_BACKEND_CONFIG",
            help="JSON file: the default backend and options, and each project's own "
            "(namespace, queue, image, service account, ...); the Helm chart writes it",
        ),
    ] = None,
    webhook: Annotated[
        list[str],
        typer.Option(
            help="call URL when runs finish: URL[;on=failed,succeeded][;format=json|slack]"
            "[;token-env=VAR][;name=NAME] (repeatable)"
        ),
    ] = [],  # noqa: B006
    external_url: Annotated[
        str | None, typer.Option(help="this server's URL as users reach it (links in webhooks)")
    ] = None,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            envvar="USINA_METRICS_TOKEN",
            help="/metrics answers only 'Authorization: Bearer <this>'",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="serve /metrics on this port only (not on the API's port)"),
    ] = None,
    metrics_team: Annotated[
        list[str],
        typer.Option(
            "--metrics-team",
            help="a labels.team value with its own metric series (others: 'other'); repeatable",
        ),
    ] = [],  # noqa: B006
    probe_allow: Annotated[
        list[str],
        typer.Option(
            "--probe-allow",
            help="host or network (10.0.0.0/8) endpoint probes may reach; repeatable",
        ),
    ] = [],  # noqa: B006
    probe_allow_private: Annotated[
        bool, typer.Option(help="let endpoint probes reach loopback and link-local addresses")
    ] = False,
    token_default_days: Annotated[
        float, typer.Option(help="lifetime of API-created tokens without 'expires' (0: never)")
    ] = 90.0,
    max_body_bytes: Annotated[
        int, typer.Option(help="largest request body on any route (bytes)")
    ] = 1 << 20,
) -> None:
    """Serve the platform: REST API (/docs), web UI (/ui) and the run reconciler."""
    import uvicorn

    from usina.compose.projects import BackendConfig
    from usina.server.app import create_app
    from usina.server.context import ServerContext
    from usina.server.guards import GuardSettings
    from usina.server.settings import ReconcilerSettings, ServerSettings

    flags = {
        k: v
        for k, v in {
            "namespace": namespace,
            "queue": queue,
            "image": image,
            "context": context,
        }.items()
        if v is not None
    }
    config = BackendConfig.load(backend_config) if backend_config else BackendConfig()
    if backend_config is None or backend != "local":  # a --backend flag wins over the file's
        config = BackendConfig(
            default=type(config.default)(backend, {**config.default.options, **flags}),
            projects=config.projects,
        )
    elif flags:
        config = BackendConfig(
            default=type(config.default)(
                config.default.backend, {**config.default.options, **flags}
            ),
            projects=config.projects,
        )
    home = os.path.abspath(os.environ.get("USINA_HOME") or ".usina")
    os.makedirs(home, exist_ok=True)
    settings = ServerSettings(
        database_url=database_url
        or os.environ.get("USINA_DATABASE_URL")
        or f"sqlite:///{home}/usina.db",
        artifacts_url=artifacts_url
        or os.environ.get("USINA_ARTIFACTS_URL")
        or os.path.join(home, "artifacts"),
        attempts_dir=os.path.join(home, "attempts"),
        pipelines=tuple(pipelines),
        registry_uri=registry_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
        reconciler=ReconcilerSettings(
            lease_ttl=lease_ttl,
            poll_interval=poll_interval,
            max_runs=max_runs,
            max_parallel=max_parallel,
            enabled=reconcile,
        ),
        webhooks=tuple(_webhooks(webhook)),
        external_url=external_url,
        backend=config.default.backend,
        backend_options=config.default.options,
        projects=config.projects,
    )
    guards = GuardSettings(
        max_body_bytes=max_body_bytes,
        token_default_days=token_default_days,
        probe_allow=tuple(probe_allow),
        probe_allow_private=probe_allow_private,
        metrics_token=metrics_token or None,
        metrics_port=metrics_port,
        metrics_teams=tuple(metrics_team),
    )
    ctx = ServerContext.open(settings)
    log.info(
        "usina server on http://%s:%s (replica %s, pipelines: %s)",
        host,
        port,
        ctx.engine.owner,
        ", ".join(p.pipeline.name for p in ctx.pipelines.all()) or "none",
    )
    said = _("usina server: {url}/ui  (API docs: /docs)").format(url=f"http://{host}:{port}")
    typer.echo(said, err=True)
    app = create_app(ctx, guards=guards)
    metrics = None
    if metrics_port is not None:
        from usina.monitoring.pipeline_metrics import start_metrics_server

        metrics = start_metrics_server(app.state.metrics_registry, metrics_port, addr=host)
        url = f"http://{host}:{metrics.port}/metrics"
        typer.echo(_("usina server: metrics on {url}").format(url=url), err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        if metrics is not None:
            metrics.stop()


def _webhooks(values: list[str]) -> list[Any]:
    from usina.errors import DefinitionError
    from usina.i18n import N_, error
    from usina.server.notify import Webhook

    try:
        return [Webhook.parse(v, i) for i, v in enumerate(values)]
    except ValueError as exc:
        raise error(DefinitionError, N_("--webhook: {error}"), error=exc) from None
