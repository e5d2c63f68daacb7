"""``usina llm serve``: the OpenAI-compatible server on uvicorn; also what ``usina serve`` runs
for a language model (:func:`serve_llm`)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from usina.i18n import _
from usina.llm.settings import LLMSettings, SchedulerSettings

app = typer.Typer(add_completion=False, help="Serve language models (OpenAI-compatible API).")


def serve_llm(settings: LLMSettings) -> None:
    """Load the model and serve until SIGINT/SIGTERM."""
    import uvicorn

    from usina.llm.api import build

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asgi = build(settings)
    uvicorn.run(
        asgi, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on"
    )


@app.command("serve")
def serve(
    model_uri: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION or a checkpoint dir.")
    ],
    name: Annotated[str | None, typer.Option(help="Model id in the API.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    max_num_seqs: Annotated[
        int, typer.Option(min=1, help="Sequences decoded together (the running batch).")
    ] = 32,
    max_queued_tokens: Annotated[
        int, typer.Option(min=1, help="Prompt tokens allowed to wait before 429s.")
    ] = 32_768,
    max_prefill_tokens: Annotated[
        int, typer.Option(min=1, help="Prompt tokens prefilled per step.")
    ] = 2048,
    max_model_len: Annotated[
        int | None, typer.Option(min=1, help="Longest prompt + completion (default: model's).")
    ] = None,
    default_max_tokens: Annotated[
        int, typer.Option(min=1, help="Completion length when a request sets none.")
    ] = 128,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="USINA_LLM_API_KEY", help="Bearer key every /v1 call must send."),
    ] = None,
    torch_threads: Annotated[int, typer.Option(min=1, help="Intra-op threads.")] = 1,
    poll_interval: Annotated[
        float, typer.Option(min=0.0, help="Seconds between alias checks (0: off).")
    ] = 30.0,
    tracking_uri: Annotated[
        str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow registry URI.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
) -> None:
    """Serve a causal LM over the OpenAI API with continuous batching."""
    serve_llm(
        LLMSettings(
            model_uri=model_uri,
            name=name,
            host=host,
            port=port,
            scheduler=SchedulerSettings(
                max_num_seqs=max_num_seqs,
                max_queued_tokens=max_queued_tokens,
                max_prefill_tokens=max_prefill_tokens,
                max_model_len=max_model_len,
                default_max_tokens=default_max_tokens,
            ),
            api_key=api_key,
            torch_threads=torch_threads,
            tracking_uri=tracking_uri,
            poll_interval_s=poll_interval,
            log_level=log_level,
        )
    )


@app.command("fetch")
def fetch(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME@ALIAS or models:/NAME/VERSION.")],
    destination: Annotated[str, typer.Argument(help="Directory to write the checkpoint to.")],
    tracking_uri: Annotated[
        str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow registry URI.")
    ] = None,
) -> None:
    """Copy a registered model's transformers checkpoint to a directory (the init container of
    a vLLM endpoint: vLLM reads a plain checkpoint directory)."""
    import shutil

    from usina.llm.loader import resolve

    found = resolve(model_uri, tracking_uri)
    shutil.copytree(found.checkpoint, destination, dirs_exist_ok=True)
    typer.echo(
        _("{model} (version {version}) -> {destination}").format(
            model=model_uri, version=found.version, destination=destination
        )
    )
