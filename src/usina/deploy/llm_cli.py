"""``usina deploy-llm``: render (or apply) a vLLM endpoint for GPUs (:mod:`usina.deploy.llm`).

The lead registers it next to ``usina deploy``: ``app.command("deploy-llm")(deploy_llm)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from usina.deploy.llm import USINA_IMAGE, VLLM_IMAGE, VllmEndpoint, render_vllm
from usina.i18n import _


def deploy_llm(
    model: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS (fetched from MLflow) or a Hugging Face id")
    ],
    name: Annotated[str, typer.Option("--name", help="endpoint and served model name")],
    gpus: Annotated[int, typer.Option(min=1, help="GPUs per pod = tensor-parallel size")] = 1,
    gpu_type: Annotated[
        str | None, typer.Option(help="nvidia.com/gpu.product node label to schedule on")
    ] = None,
    namespace: Annotated[str, typer.Option(help="namespace of the endpoint")] = "default",
    replicas: Annotated[int, typer.Option(min=1, help="pods")] = 1,
    image: Annotated[str, typer.Option(help="vLLM OpenAI server image")] = VLLM_IMAGE,
    fetch_image: Annotated[str, typer.Option(help="usina image of the fetch step")] = USINA_IMAGE,
    max_model_len: Annotated[int | None, typer.Option(min=1, help="vLLM --max-model-len")] = None,
    max_num_seqs: Annotated[int, typer.Option(min=1, help="vLLM --max-num-seqs")] = 256,
    tracking_uri: Annotated[
        str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow URI for the fetch")
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="server-side apply them")] = False,
    context: Annotated[str | None, typer.Option(help="kubeconfig context for --apply")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig file for --apply")] = None,
) -> None:
    """Render (or --apply) an LLM endpoint on GPUs with vLLM: Deployment and Service."""
    objects = render_vllm(
        VllmEndpoint(
            name=name, model=model, gpus=gpus, gpu_type=gpu_type, replicas=replicas,
            image=image, fetch_image=fetch_image, max_model_len=max_model_len,
            max_num_seqs=max_num_seqs, tracking_uri=tracking_uri,
        ),
        namespace=namespace,
    )  # fmt: skip
    if not apply:
        import yaml

        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
        return
    from usina.deploy.apply import apply_objects
    from usina.deploy.cli import _api_client

    api = _api_client(context, kubeconfig)
    try:
        for what in apply_objects(objects, api):
            typer.echo(
                _("{object} applied (namespace {namespace})").format(
                    object=what, namespace=namespace
                ),
                err=True,
            )
    finally:
        api.close()
