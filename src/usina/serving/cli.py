"""``usina serve``: the Typer command; the lead registers :func:`serve` in ``usina.cli``.

Settings are read here, at the edge, and passed on as one frozen :class:`ServeSettings`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from usina.i18n import _
from usina.serving.rollout import Gates, Mode, RolloutPolicy
from usina.serving.settings import BatchSettings, ServeSettings
from usina.tracking.uri import default_tracking_uri

_LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=_LOG_FORMAT)


def worker_main(settings: ServeSettings) -> None:
    """Entry point of one worker process (importable, for multiprocessing's spawn)."""
    from usina.serving.worker import run_worker

    _configure_logging(settings.log_level)
    raise SystemExit(run_worker(settings))


def serve(
    model_uri: Annotated[
        list[str],
        typer.Argument(
            help="models:/NAME@ALIAS (followed), models:/NAME/VERSION or a model dir; several "
            "models are served side by side, each under its own name."
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Serve under this name (default: the model's).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    http_port: Annotated[int, typer.Option("--http-port", help="REST port.")] = 8080,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port.")] = 8081,
    grpc: Annotated[bool, typer.Option("--grpc/--no-grpc", help="Serve gRPC too.")] = True,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Most rows per model call.")
    ] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option("--max-wait-ms", min=0.0, help="Longest wait for a batch to fill, in ms."),
    ] = 2.0,
    max_queue: Annotated[
        int,
        typer.Option("--max-queue", min=1, help="Waiting requests per worker before 503s."),
    ] = 256,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Processes sharing the ports.")
    ] = 1,
    poll_interval: Annotated[
        float,
        typer.Option("--poll-interval", min=0.0, help="Seconds between alias checks (0: off)."),
    ] = 30.0,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest request body accepted.")
    ] = 8 * 1024 * 1024,
    grace_period: Annotated[
        float,
        typer.Option("--grace-period", min=0.0, help="Seconds to drain on SIGTERM."),
    ] = 20.0,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="MLflow tracking/registry URI (default: the one usina run logs to, "
            "sqlite in $USINA_HOME or ./.usina).",
        ),
    ] = None,
    rollout: Annotated[
        str | None,
        typer.Option(
            "--rollout",
            help="Roll out a challenger beside the model: shadow (scores a copy of traffic) "
            "or canary (answers a growing share).",
        ),
    ] = None,
    challenger: Annotated[
        str | None,
        typer.Option("--challenger", help="The challenger (default: models:/NAME@challenger)."),
    ] = None,
    rollout_steps: Annotated[
        str, typer.Option("--rollout-steps", help="Canary shares in percent, comma-separated.")
    ] = "5,25,50,100",
    rollout_step_seconds: Annotated[
        float, typer.Option("--rollout-step-seconds", min=0.1, help="Seconds per step.")
    ] = 60.0,
    max_error_rate: Annotated[
        float, typer.Option("--max-error-rate", help="Gate: challenger error rate ceiling.")
    ] = 0.01,
    max_p99_ms: Annotated[
        float | None, typer.Option("--max-p99-ms", help="Gate: challenger p99 ceiling, ms.")
    ] = None,
    max_p99_ratio: Annotated[
        float,
        typer.Option("--max-p99-ratio", help="Gate: challenger p99 / champion p99 ceiling."),
    ] = 3.0,
    max_score_drift: Annotated[
        float | None,
        typer.Option("--max-score-drift", help="Gate: |mean score change| vs the champion."),
    ] = None,
    min_samples: Annotated[
        int, typer.Option("--min-samples", min=1, help="Gate: requests needed to judge a step.")
    ] = 100,
    repository_api: Annotated[
        bool,
        typer.Option(
            "--repository-api/--no-repository-api",
            help="Serve the repository extension (index, load, unload models at run time).",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Logging level.")] = "info",
) -> None:
    """Serve a model over the Open Inference Protocol (KServe V2), REST and gRPC; a language
    model (transformers checkpoint) over the OpenAI API instead (``usina llm serve`` has its
    scheduler options)."""
    from usina.llm.loader import is_language_model

    if len(model_uri) == 1 and is_language_model(model_uri[0], tracking_uri):
        from usina.llm.cli import serve_llm
        from usina.llm.settings import LLMSettings

        serve_llm(LLMSettings(model_uri[0], name, host, http_port, tracking_uri=tracking_uri))
        return
    policy = None
    if rollout is not None:
        policy = _rollout_policy(
            rollout, rollout_steps, rollout_step_seconds, max_error_rate, max_p99_ms,
            max_p99_ratio, max_score_drift, min_samples,
        )  # fmt: skip
        if workers > 1:
            raise typer.BadParameter(
                _("a rollout is judged inside one process for now; use --workers 1 with --rollout")
            )
    if repository_api and workers > 1:
        raise typer.BadParameter(
            _(
                "the repository API loads and unloads in one process for now; use --workers 1 "
                "with --repository-api"
            )
        )
    settings = ServeSettings(
        model_uri=model_uri[0],
        more_models=tuple(model_uri[1:]),
        repository_api=repository_api,
        rollout=policy,
        challenger_uri=challenger,
        name=name,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port if grpc else None,
        workers=workers,
        batch=BatchSettings(
            max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue
        ),
        poll_interval_s=poll_interval,
        max_body_bytes=max_body_bytes,
        grace_period_s=grace_period,
        tracking_uri=tracking_uri or default_tracking_uri(),
        log_level=log_level,
    )
    _configure_logging(log_level)
    from usina.serving.worker import run_worker, supervise

    code = run_worker(settings) if workers == 1 else supervise(settings, worker_main)
    if code:
        raise typer.Exit(code)


def _rollout_policy(
    mode: str,
    steps: str,
    step_s: float,
    max_error_rate: float,
    max_p99_ms: float | None,
    max_p99_ratio: float,
    max_score_drift: float | None,
    min_samples: int,
) -> RolloutPolicy:
    try:
        return RolloutPolicy(
            mode=Mode(mode),
            steps=tuple(int(s) for s in steps.split(",") if s.strip()),
            step_s=step_s,
            gates=Gates(
                max_error_rate=max_error_rate,
                max_p99_ms=max_p99_ms,
                max_p99_ratio=max_p99_ratio,
                max_score_drift=max_score_drift,
                min_samples=min_samples,
            ),
        )
    except ValueError as exc:
        raise typer.BadParameter(
            _("{error} (--rollout is shadow or canary; --rollout-steps like 5,25,50,100)").format(
                error=exc
            )
        ) from exc


def app() -> typer.Typer:
    """A one-command Typer app, for ``python -m usina.serving``."""
    application = typer.Typer(add_completion=False)
    application.command()(serve)
    return application
