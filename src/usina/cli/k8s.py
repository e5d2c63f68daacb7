"""``usina k8s render``: the exact manifests a run on Kubernetes would create, with no cluster.

Each step's first attempt is built with the engine's own Task builder (through the composition
root, ``usina.compose.components.plan_tasks``) and rendered by the Kubernetes backend's own
``render_task_manifests``, so what it prints is what ``usina run --backend kubernetes`` submits
(bar the run id, which a run picks when it starts).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from usina.cli.common import ParamOpt, compile_target, out, parse_params, settings
from usina.cli.display import print_json
from usina.errors import MissingExtraError

k8s_app = typer.Typer(
    help="Kubernetes: render the Jobs a pipeline would create, and the teams' queues.",
    no_args_is_help=True,
)


def _add_queues() -> None:
    """``usina k8s queues`` (it reads YAML: the k8s extra); without it, the pip line."""
    try:
        from usina.cli.queues import queues_app
    except ImportError as exc:
        missing = exc.name or "yaml"

        @k8s_app.command(
            "queues",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            add_help_option=False,
        )
        def queues(ctx: typer.Context) -> None:
            """(needs: pip install 'usina[k8s]')"""
            raise MissingExtraError(missing, "k8s")

    else:
        k8s_app.add_typer(queues_app, name="queues")


_add_queues()


def render_manifests(
    target: str,
    params: list[str],
    options: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
    run_id: str | None = None,
    tracking: bool | None = None,
) -> list[dict[str, Any]]:
    """The manifests of every step's first attempt of a run of ``target``."""
    from usina.backends.kubernetes import render_task_manifests
    from usina.backends.kubernetes.factory import kubernetes_settings
    from usina.compose.components import plan_tasks, tracked_env
    from usina.stores.artifacts import FsspecArtifactStore

    pipe, plan = compile_target(target, params)
    current = settings()
    tracked = tracking if tracking is not None else bool(pipe.tracking)
    tasks = plan_tasks(
        plan,
        artifacts_url=FsspecArtifactStore(current.artifacts_url).url,  # as the engine sees it
        run_id=run_id,
        labels=labels,
        env=tracked_env(current.tracking_uri if tracked else None),
    )
    k8s = kubernetes_settings(options)
    objects: list[dict[str, Any]] = []
    for task in tasks:
        objects += render_task_manifests(task, k8s)
    return objects


@k8s_app.command("render")
def k8s_render(
    target: Annotated[str, typer.Argument(help="FILE.py[:PIPELINE]")],
    param: ParamOpt = [],  # noqa: B006
    label: Annotated[
        list[str], typer.Option("--label", "-l", help="KEY=VALUE on the run, repeatable")
    ] = [],  # noqa: B006
    namespace: Annotated[str, typer.Option(help="namespace of the Jobs")] = "default",
    queue: Annotated[str | None, typer.Option(help="Kueue LocalQueue")] = None,
    image: Annotated[str, typer.Option(help="image with usina and code")] = "usina-runtime:latest",
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="the run id to render (default: a new one)")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json")] = "yaml",
) -> None:
    """Print the exact manifests each step's first attempt would create (no cluster needed)."""
    options = {"namespace": namespace, "queue": queue, "image": image}
    objects = render_manifests(
        target, param, options, labels=parse_params(label, "--label"), run_id=run_id
    )
    if output == "json":
        print_json(out, objects)
        return
    try:
        import yaml
    except ImportError:
        print_json(out, objects)
        return
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
