"""``usina deploy``: a model-serving endpoint from the Helm chart's serving template.

Prints the endpoint's manifests (YAML, ``kubectl apply -f -`` ready), or applies them to the
cluster of the current kubeconfig context (or the in-cluster service account) with ``--apply``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from usina.deploy.apply import apply_objects
from usina.deploy.chart import Endpoint, render_endpoint
from usina.errors import DefinitionError, MissingExtraError


def deploy(
    model: Annotated[str, typer.Argument(help="model URI, e.g. models:/fraud@champion")],
    name: Annotated[str, typer.Option("--name", help="endpoint name (a DNS label)")],
    namespace: Annotated[str, typer.Option(help="namespace of the endpoint")] = "default",
    image: Annotated[
        str | None, typer.Option(help="image of usina serve (default: the chart's)")
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, help="pods; with autoscaling on, the minimum (default: the chart's)"),
    ] = None,
    release: Annotated[
        str, typer.Option(help="the usina Helm release whose Secrets the endpoint reads")
    ] = "usina",
    values: Annotated[
        list[Path], typer.Option("--values", "-f", help="chart values file; repeatable")
    ] = [],  # noqa: B006
    set_: Annotated[
        list[str], typer.Option("--set", help="chart value, as helm --set KEY=VALUE; repeatable")
    ] = [],  # noqa: B006
    chart: Annotated[
        Path | None, typer.Option(help="chart folder (default: the one shipped with usina)")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="server-side apply them instead of printing")
    ] = False,
    context: Annotated[str | None, typer.Option(help="kubeconfig context for --apply")] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig file for --apply (default: $KUBECONFIG)")
    ] = None,
) -> None:
    """Render (or --apply) a serving endpoint: Deployment, Service, HPA and PDB."""
    chart_values = _values(values, set_)
    objects = render_endpoint(
        Endpoint(name=name, model=model, replicas=replicas, image=image),
        namespace=namespace,
        release=release,
        values=chart_values,
        chart=chart,
    )
    if not apply:
        import yaml

        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
        return
    api = _api_client(context, kubeconfig)
    try:
        for what in apply_objects(objects, api):
            typer.echo(f"{what} applied (namespace {namespace})", err=True)
    finally:
        api.close()


def _values(files: list[Path], sets: list[str]) -> dict[str, Any]:
    """Values files merged in order, then ``--set`` expressions, as helm does."""
    import yaml

    from usina.deploy.chart import load_helm

    merged: dict[str, Any] = {}
    for path in files:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DefinitionError(f"cannot read values file {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise DefinitionError(f"values file {path} must hold a mapping of chart values")
        _merge(merged, loaded)
    helm = load_helm()
    for expression in sets:
        try:
            _merge(merged, helm.parse_set_string(expression))
        except helm.HelmError as exc:
            raise DefinitionError(f"--set {expression!r}: {exc}") from exc
    return merged


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _api_client(context: str | None, kubeconfig: Path | None) -> Any:
    try:
        from usina.backends.kubernetes.client import api_client
    except ImportError as exc:
        raise MissingExtraError("kubernetes", "deploy") from exc
    return api_client(context, kubeconfig)
