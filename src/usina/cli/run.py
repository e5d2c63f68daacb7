"""``usina run``: run a pipeline to its end, here (on a backend chosen by name) or on a server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from usina.cli import k8s as k8s_flags
from usina.cli.common import (
    Output,
    OutputOpt,
    ParamOpt,
    compile_target,
    err,
    out,
    parse_params,
    server,
    settings,
)
from usina.cli.drive import drive, tracker
from usina.i18n import N_, _, error

if TYPE_CHECKING:  # a local run does without the server's client
    from usina.cli import remote


def kubernetes_options(
    namespace: str | None,
    queue: str | None,
    image: str | None,
    context: str | None,
    **cluster: Any,
) -> dict[str, Any]:
    """The ``kubernetes`` backend's options that were given on the command line (``cluster``:
    the flags of ``usina.cli.k8s.cluster_options``)."""
    from usina.cli.k8s import cluster_options

    given = {"namespace": namespace, "queue": queue, "image": image, "context": context}
    return {k: v for k, v in given.items() if v is not None} | cluster_options(**cluster)


def run(
    target: Annotated[str, typer.Argument(help="FILE.py[:PIPELINE]")],
    param: ParamOpt = [],  # noqa: B006
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="run every step, ignore the cache")
    ] = False,
    max_parallel: Annotated[int | None, typer.Option(help="steps running at once")] = None,
    tracking: Annotated[
        bool | None,
        typer.Option(
            "--tracking/--no-tracking", help="log to MLflow (default: as the pipeline says)"
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="where steps run: local, kubernetes, or an installed usina.backends name"
        ),
    ] = "local",
    namespace: Annotated[str | None, typer.Option(help="kubernetes: namespace of the Jobs")] = None,
    queue: Annotated[str | None, typer.Option(help="kubernetes: Kueue LocalQueue")] = None,
    image: Annotated[str | None, typer.Option(help="kubernetes: image with usina and code")] = None,
    context: Annotated[str | None, typer.Option(help="kubernetes: kubeconfig context")] = None,
    service_account: k8s_flags.ServiceAccountOpt = None,
    priority_class: k8s_flags.PriorityClassOpt = None,
    image_pull_secret: k8s_flags.PullSecretOpt = [],  # noqa: B006
    env: k8s_flags.EnvOpt = [],  # noqa: B006
    secret_env: k8s_flags.SecretEnvOpt = [],  # noqa: B006
    env_from_secret: k8s_flags.EnvFromSecretOpt = [],  # noqa: B006
    env_from_configmap: k8s_flags.EnvFromConfigMapOpt = [],  # noqa: B006
    node_selector: k8s_flags.NodeSelectorOpt = [],  # noqa: B006
    toleration: k8s_flags.TolerationOpt = [],  # noqa: B006
    allow_local_artifacts: k8s_flags.AllowLocalOpt = False,
    bundle: k8s_flags.BundleOpt = True,
    project: Annotated[str, typer.Option(help="project of the run (with --server)")] = "default",
    label: Annotated[
        list[str],
        typer.Option("--label", "-l", help="KEY=VALUE on the run, repeatable (team=... for costs)"),
    ] = [],  # noqa: B006
    metrics_port: Annotated[
        int | None,
        typer.Option(help="serve Prometheus metrics at http://ADDR:PORT/metrics while it runs"),
    ] = None,
    metrics_addr: Annotated[str, typer.Option(help="address for --metrics-port")] = "127.0.0.1",
    output: OutputOpt = Output.text,
) -> None:
    """Run a pipeline to its end and show its steps as they go."""
    from usina.compose.backends import backend_factory
    from usina.runtime.loader import load_pipeline

    remote_server = server()
    if remote_server is not None:
        from usina.cli import remote

        given = [flag for flag, value in _cluster_flags(locals()).items() if value]
        if given:
            said = _(
                "{flags}: with --server the server's project settings say where and how steps "
                "run (ask its operator); drop the flag"
            ).format(flags=", ".join(given))
            err.print(f"[red]{escape(said)}[/]")
            raise typer.Exit(2)
        labels = parse_params(label, "--label")
        if target.partition(":")[0].endswith(".py") and bundle:
            # The project's code travels with the run: packed, uploaded once per content,
            # and planned by the server from the bundle (in a child process).
            submitted = _submit_bundle(remote_server, target, param, project, labels)
        else:
            # A pipeline the server was started with; a local file names one (and its
            # parameters are checked here first).
            name = target
            if target.partition(":")[0].endswith(".py"):
                local = load_pipeline(target)
                local.resolve(parse_params(param))
                name = local.name
            submitted = remote.submit(remote_server, name, parse_params(param), project)
        as_json = output is Output.json
        raise typer.Exit(remote.follow(remote_server, submitted, out, as_json=as_json))
    backend_factory(backend)  # an unknown name fails before anything is loaded
    cluster = kubernetes_options(
        namespace,
        queue,
        image,
        context,
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
    )
    pipe, plan = compile_target(target, param)
    current = settings()
    if backend == "local" and (no_cache or not current.store_exists()):
        # A step will run (nothing can come from a cache): the local backend's worker (zygote)
        # starts its interpreter and imports now, while SQLAlchemy loads and the stores open
        # (~0.5 s of CPU on a new store), rather than after them. Not when the cache may serve
        # every step: then it would cost a process and its memory for nothing.
        from usina.backends.local import prestart_zygote
        from usina.stores.artifacts import FsspecArtifactStore

        prestart_zygote(
            FsspecArtifactStore(current.artifacts_url).url, [plan.source] if plan.source else []
        )
    from usina.compose.components import BackendChoice, make_engine, open_stores

    comps = open_stores(current)
    try:
        preload = [plan.source] if plan.source else []
        if backend == "kubernetes" and bundle:
            # The pods get the project's code as a bundle in the artifact store.
            plan, cluster = k8s_flags.with_bundle(plan, comps.artifacts, cluster)
            preload = []
        choice = BackendChoice(backend, cluster)
        engine = make_engine(
            comps,
            preload=preload,
            tracker=tracker(current, pipe, tracking),
            max_parallel=max_parallel,
            use_cache=not no_cache,
            backend=choice,
        )
        labels = parse_params(label, "--label")
        stop_metrics = _metrics_server(comps.metadata, metrics_port, metrics_addr)
        try:
            record = engine.submit(plan, labels=labels)
            raise typer.Exit(drive(engine, record, output))
        finally:
            stop_metrics()
    finally:
        comps.close()


def _cluster_flags(given: dict[str, Any]) -> dict[str, Any]:
    """The ``--backend kubernetes`` flags among ``usina run``'s arguments (by flag)."""
    names = [
        "namespace",
        "queue",
        "image",
        "context",
        "service_account",
        "priority_class",
        "image_pull_secret",
        "env",
        "secret_env",
        "env_from_secret",
        "env_from_configmap",
        "node_selector",
        "toleration",
    ]
    found = {"--" + n.replace("_", "-"): given.get(n) for n in names}
    found["--backend"] = given.get("backend") != "local"
    found["--allow-local-artifacts"] = given.get("allow_local_artifacts")
    return found


def _submit_bundle(
    remote_server: remote.Remote,
    target: str,
    param: list[str],
    project: str,
    labels: dict[str, str],
) -> dict[str, Any]:
    """Pack ``target``'s project, upload it unless the server has it, submit a run of it."""
    from pathlib import Path

    from usina.bundles import find_root, human_size, pack
    from usina.cli import remote
    from usina.errors import DefinitionError

    pipe, plan = compile_target(target, param)  # the file loads and the parameters fit
    if plan.source is None:
        raise error(
            DefinitionError,
            N_("{target}: the pipeline has no source file to bundle"),
            target=target,
        )
    top = find_root(plan.source)
    made = pack(top)
    uploaded = remote.upload_bundle(remote_server, made.digest, made.data, project)
    said = (
        _("code bundle {digest} ({files} files, {size}) uploaded")
        if uploaded
        else _("code bundle {digest} ({files} files, {size}) already on the server")
    )
    err.print(
        said.format(
            digest=made.digest[:19],
            files=len(made.manifest.files),
            size=human_size(len(made.data)),
        )
    )
    file = Path(plan.source).resolve().relative_to(top).as_posix()
    attr = target.partition(":")[2]
    return remote.submit_bundle(
        remote_server,
        pipe.name,
        bundle=made.digest,
        file=file + (f":{attr}" if attr else ""),
        params=parse_params(param),
        project=project,
        labels=labels,
    )


def _metrics_server(metadata: Any, port: int | None, addr: str) -> Any:
    """Serve the pipeline metrics of ``metadata`` on ``port`` (a no-op without one)."""
    if port is None:
        return lambda: None
    from usina.monitoring.pipeline_metrics import pipeline_registry, start_metrics_server

    metrics = start_metrics_server(pipeline_registry(metadata), port, addr)
    err.print(_("metrics: {url}").format(url=f"http://{addr}:{metrics.port}/metrics"))
    return metrics.stop
