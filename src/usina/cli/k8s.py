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

from usina.cli.common import ParamOpt, compile_target, err, out, parse_params, settings
from usina.cli.display import print_json
from usina.errors import MissingExtraError
from usina.i18n import N_, _, error

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


# The flags of what a cluster needs, shared by ``usina run --backend kubernetes`` and
# ``usina k8s render`` (the same names as the server's per-project settings).
ServiceAccountOpt = Annotated[
    str | None, typer.Option("--service-account", help="kubernetes: the pods' service account")
]
PriorityClassOpt = Annotated[
    str | None, typer.Option("--priority-class", help="kubernetes: pod priorityClassName")
]
PullSecretOpt = Annotated[
    list[str],
    typer.Option("--image-pull-secret", help="kubernetes: Secret to pull the image, repeatable"),
]
EnvOpt = Annotated[
    list[str], typer.Option("--env", help="kubernetes: NAME=VALUE in every step, repeatable")
]
SecretEnvOpt = Annotated[
    list[str],
    typer.Option("--secret-env", help="kubernetes: NAME=SECRET/KEY read from a Secret, repeatable"),
]
EnvFromSecretOpt = Annotated[
    list[str],
    typer.Option("--env-from-secret", help="kubernetes: every key of a Secret as env"),
]
EnvFromConfigMapOpt = Annotated[
    list[str],
    typer.Option("--env-from-configmap", help="kubernetes: every key of a ConfigMap as env"),
]
NodeSelectorOpt = Annotated[
    list[str],
    typer.Option("--node-selector", help="kubernetes: LABEL=VALUE the nodes must have"),
]
TolerationOpt = Annotated[
    list[str],
    typer.Option("--toleration", help="kubernetes: KEY[=VALUE]:EFFECT taint every pod tolerates"),
]
AllowLocalOpt = Annotated[
    bool,
    typer.Option(
        "--allow-local-artifacts",
        help="kubernetes: accept a local artifact path (only when every node mounts it)",
    ),
]

BundleOpt = Annotated[
    bool,
    typer.Option(
        "--bundle/--no-bundle",
        help="kubernetes and --server: ship the project's code as a bundle (--no-bundle: the "
        "image has it, or the server was started with the pipeline)",
    ),
]


def with_bundle(
    plan: Any, artifacts: Any, options: Mapping[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Store ``plan``'s project as a bundle in ``artifacts``; the plan with bundle paths and
    the backend options whose ``env`` names the bundle (``USINA_BUNDLE``)."""
    from usina.compose.bundling import bundle_env, bundle_plan

    bundled, ref = bundle_plan(plan, artifacts)
    said = (
        _("code bundle {digest} ({files} files, {size} bytes) uploaded")
        if ref.uploaded
        else _("code bundle {digest} ({files} files, {size} bytes) already stored")
    )
    err.print(said.format(digest=ref.digest[:19], files=ref.files, size=ref.size))
    env = {**dict(options.get("env") or {}), **bundle_env(ref)}
    return bundled, {**options, "env": env}


def toleration(text: str) -> dict[str, Any]:
    """``KEY[=VALUE]:EFFECT`` (kubectl taint's syntax) as a toleration."""
    from usina.errors import DefinitionError

    head, sep, effect = text.rpartition(":")
    key, eq, value = head.partition("=")
    effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
    if not sep or not key or effect not in effects:
        raise error(
            DefinitionError,
            N_(
                "--toleration {text!r} must look like KEY[=VALUE]:EFFECT with EFFECT one of "
                "{effects}"
            ),
            text=text,
            effects=", ".join(effects),
        )
    if eq:
        return {"key": key, "operator": "Equal", "value": value, "effect": effect}
    return {"key": key, "operator": "Exists", "effect": effect}


def cluster_options(
    *,
    service_account: str | None = None,
    priority_class: str | None = None,
    image_pull_secrets: list[str] | None = None,
    env: list[str] | None = None,
    secret_env: list[str] | None = None,
    env_from_secrets: list[str] | None = None,
    env_from_config_maps: list[str] | None = None,
    node_selector: list[str] | None = None,
    tolerations: list[str] | None = None,
    allow_local_artifacts: bool = False,
) -> dict[str, Any]:
    """The ``kubernetes`` backend options the cluster flags gave (unset ones left out)."""
    found: dict[str, Any] = {
        "service_account": service_account,
        "priority_class": priority_class,
        "image_pull_secrets": tuple(image_pull_secrets or ()) or None,
        "env": parse_params(env or [], "--env") or None,
        "secret_env": parse_params(secret_env or [], "--secret-env") or None,
        "env_from_secrets": tuple(env_from_secrets or ()) or None,
        "env_from_config_maps": tuple(env_from_config_maps or ()) or None,
        "node_selector": parse_params(node_selector or [], "--node-selector") or None,
        "tolerations": tuple(toleration(t) for t in tolerations or ()) or None,
        "allow_local_artifacts": allow_local_artifacts or None,
    }
    return {k: v for k, v in found.items() if v is not None}


def render_manifests(
    target: str,
    params: list[str],
    options: Mapping[str, Any],
    *,
    labels: Mapping[str, str] | None = None,
    run_id: str | None = None,
    tracking: bool | None = None,
    bundle: bool = False,
) -> list[dict[str, Any]]:
    """The manifests of every step's first attempt of a run of ``target`` (with ``bundle``:
    its code shipped as a bundle, as ``usina run --backend kubernetes`` does; nothing is
    uploaded)."""
    from usina.backends.kubernetes import render_task_manifests
    from usina.backends.kubernetes.factory import kubernetes_settings, require_shared_artifacts
    from usina.compose.components import plan_tasks, tracked_env
    from usina.stores.artifacts import FsspecArtifactStore

    k8s = kubernetes_settings(options)  # a bad name fails before anything is loaded
    current = settings()
    artifacts_url = FsspecArtifactStore(current.artifacts_url).url  # as the engine sees it
    require_shared_artifacts(artifacts_url, options)
    pipe, plan = compile_target(target, params)
    if bundle:
        import dataclasses

        from usina.compose.bundling import bundle_digest

        plan, digest = bundle_digest(plan)
        k8s = dataclasses.replace(k8s, env={**k8s.env, "USINA_BUNDLE": digest})
    tracked = tracking if tracking is not None else bool(pipe.tracking)
    tasks = plan_tasks(
        plan,
        artifacts_url=artifacts_url,
        run_id=run_id,
        labels=labels,
        env=tracked_env(current.tracking_uri if tracked else None),
    )
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
        str | None,
        typer.Option(
            "--run-id", help="the run id to render: stable names and bytes for GitOps diffs"
        ),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json")] = "yaml",
    service_account: ServiceAccountOpt = None,
    priority_class: PriorityClassOpt = None,
    image_pull_secret: PullSecretOpt = [],  # noqa: B006
    env: EnvOpt = [],  # noqa: B006
    secret_env: SecretEnvOpt = [],  # noqa: B006
    env_from_secret: EnvFromSecretOpt = [],  # noqa: B006
    env_from_configmap: EnvFromConfigMapOpt = [],  # noqa: B006
    node_selector: NodeSelectorOpt = [],  # noqa: B006
    toleration: TolerationOpt = [],  # noqa: B006
    allow_local_artifacts: AllowLocalOpt = False,
    bundle: BundleOpt = True,
) -> None:
    """Print the exact manifests each step's first attempt would create (no cluster needed).

    The Jobs read and write the artifact store (USINA_ARTIFACTS_URL): it must be one the
    pods can reach (s3://, gs://, ...); a local path is refused unless --allow-local-artifacts.
    """
    options = {
        "namespace": namespace,
        "queue": queue,
        "image": image,
        **cluster_options(
            service_account=service_account,
            priority_class=priority_class,
            image_pull_secrets=image_pull_secret,
            env=env,
            secret_env=secret_env,
            env_from_secrets=env_from_secret,
            env_from_config_maps=env_from_configmap,
            node_selector=node_selector,
            tolerations=toleration,
            allow_local_artifacts=allow_local_artifacts,
        ),
    }
    objects = render_manifests(
        target,
        param,
        options,
        labels=parse_params(label, "--label"),
        run_id=run_id,
        bundle=bundle,
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
