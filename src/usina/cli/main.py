"""``usina``: run pipelines and inspect their runs. Exit codes: 0 ok, 1 run failed, 2 usage."""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
import time
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console

from usina.cli import remote
from usina.cli.display import (
    Progress,
    attempt_json,
    kpi_table,
    print_json,
    run_json,
    steps_table,
    summary_line,
)
from usina.cli.remote import Remote
from usina.cli.settings import Settings
from usina.cli.tokens import tokens_app
from usina.engine.policy import advice
from usina.engine.ports import log_key
from usina.engine.records import AttemptState, RunRecord, RunState
from usina.errors import DefinitionError, NotFoundError, StateError, UsinaError
from usina.sdk.pipeline import Pipeline, Plan
from usina.sdk.retry import FailureClass

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="usina",
    help="Run ML pipelines locally or on Kubernetes, and inspect their runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(
    help="List and inspect runs; resume, cancel, explain failures.", no_args_is_help=True
)
app.add_typer(runs_app, name="runs")
k8s_app = typer.Typer(
    help="Kubernetes: render the Jobs a pipeline would create.", no_args_is_help=True
)
app.add_typer(k8s_app, name="k8s")
app.add_typer(tokens_app, name="token")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class Output(enum.StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for tools")
]


_remote: dict[str, Remote | None] = {"server": None}


class LogFormat(enum.StrEnum):
    plain = "plain"
    json = "json"


def _configure_logging(log_format: str | None) -> None:
    """Logging is the CLI's to configure (never the library's): plain lines, or JSON lines with
    run/step/attempt ids (``--log-format json`` or ``USINA_LOG_FORMAT=json``), on stderr."""
    handler = logging.StreamHandler()
    if (log_format or "plain").lower() == LogFormat.json.value:
        from usina.monitoring.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=os.environ.get("USINA_LOG_LEVEL", "WARNING"), handlers=[handler], force=True
    )


@app.callback()
def _root(
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="USINA_SERVER",
            help="talk to a usina server at this URL instead of running locally",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="USINA_TOKEN", help="API token for --server"),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            envvar="USINA_LOG_FORMAT",
            help="log lines on stderr: plain, or json (with run, step and attempt ids)",
        ),
    ] = None,
) -> None:
    """Run ML pipelines locally or on Kubernetes, and inspect their runs."""
    _remote["server"] = Remote(server, token) if server else None
    if log_format is not None:
        _configure_logging(log_format.value)


def _server() -> Remote | None:
    return _remote["server"]


def _settings() -> Settings:
    return Settings.from_env()


def _parse_params(values: list[str], option: str = "--param") -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DefinitionError(f"{option} {item!r} must look like NAME=VALUE")
        params[key.strip()] = value
    return params


def _tracker(settings: Settings, pipe: Pipeline | None, tracking: bool | None) -> Any:
    from usina.cli.components import make_tracker

    wanted = tracking if tracking is not None else bool(pipe is not None and pipe.tracking)
    if not wanted:
        return None
    return make_tracker(settings, pipe.experiment if pipe is not None else "usina")


def _drive(engine: Any, run: RunRecord, output: Output) -> int:
    """Drive a run to its end with progress on screen; Ctrl-C cancels it cleanly."""
    from usina.monitoring.logs import log_context

    with log_context(run_id=run.id, pipeline=run.pipeline):
        return _drive_run(engine, run, output)


def _drive_run(engine: Any, run: RunRecord, output: Output) -> int:
    console = out if output is Output.text else err
    interrupted = {"count": 0}

    def on_signal(signum: int, _frame: object) -> None:
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            err.print(
                "[red]interrupted again: leaving now; 'usina runs resume' adopts "
                "the steps still running[/]"
            )
            os._exit(130)
        err.print(
            f"[yellow]stopping run {run.id}: cancelling its running steps "
            "(Ctrl-C again to leave now)[/]"
        )
        engine.cancel(run.id)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    live = console.is_terminal and output is Output.text
    if output is Output.text:
        console.print(f"run [bold]{run.id}[/] of pipeline [bold]{run.pipeline}[/]")
    try:
        with Progress(console, live=live) as progress:
            final = engine.drive(
                run.id, on_pass=lambda r: progress.update(r, engine.steps_of(r.id))
            )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        engine.backend.close()
    steps = engine.metadata.get_steps(final.id)
    if output is Output.json:
        print_json(out, run_json(final, steps))
    else:
        if not live:
            out.print(steps_table(final, steps))
        colour = "green" if final.state is RunState.SUCCEEDED else "red"
        out.print(f"[{colour}]{summary_line(final, steps)}[/]")
        if final.state is RunState.FAILED:
            out.print(f"see why: usina runs why {final.id}   then: usina runs resume {final.id}")
    return EXIT_OK if final.state is RunState.SUCCEEDED else EXIT_FAILED


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="FILE.py[:PIPELINE]")],
    param: Annotated[list[str], typer.Option("--param", "-p", help="NAME=VALUE, repeatable")] = [],  # noqa: B006
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
    backend: Annotated[str, typer.Option(help="where steps run: local or kubernetes")] = "local",
    namespace: Annotated[str | None, typer.Option(help="kubernetes: namespace of the Jobs")] = None,
    queue: Annotated[str | None, typer.Option(help="kubernetes: Kueue LocalQueue")] = None,
    image: Annotated[str | None, typer.Option(help="kubernetes: image with usina and code")] = None,
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
    from usina.cli.components import KubernetesOptions, make_engine, open_stores
    from usina.runtime.loader import load_pipeline

    server = _server()
    if server is not None:
        # The server runs the pipelines it was started with; a local file names one (and its
        # parameters are checked here first).
        name = target
        if target.partition(":")[0].endswith(".py"):
            local = load_pipeline(target)
            local.resolve(_parse_params(param))
            name = local.name
        submitted = remote.submit(server, name, _parse_params(param), project)
        as_json = output is Output.json
        raise typer.Exit(remote.follow(server, submitted, out, as_json=as_json))
    if backend not in ("local", "kubernetes"):
        raise DefinitionError(f"unknown backend {backend!r}; use local or kubernetes")
    k8s = None
    if backend == "kubernetes":
        k8s = KubernetesOptions(namespace=namespace, queue=queue, image=image)
    pipe = load_pipeline(target)
    plan = pipe.compile(_parse_params(param))
    plan = Plan(plan.pipeline, plan.params, plan.nodes, plan.source, tuple(sys.path[:1]))
    settings = _settings()
    comps = open_stores(settings)
    try:
        engine = make_engine(
            comps,
            preload=[plan.source] if plan.source else [],
            tracker=_tracker(settings, pipe, tracking),
            max_parallel=max_parallel,
            use_cache=not no_cache,
            kubernetes=k8s,
        )
        labels = _parse_params(label, "--label")
        stop_metrics = _metrics_server(comps.metadata, metrics_port, metrics_addr)
        try:
            record = engine.submit(plan, labels=labels)
            raise typer.Exit(_drive(engine, record, output))
        finally:
            stop_metrics()
    finally:
        comps.close()


def _metrics_server(metadata: Any, port: int | None, addr: str) -> Any:
    """Serve the pipeline metrics of ``metadata`` on ``port`` (a no-op without one)."""
    if port is None:
        return lambda: None
    from usina.monitoring.pipeline_metrics import pipeline_registry, start_metrics_server

    server = start_metrics_server(pipeline_registry(metadata), port, addr)
    err.print(f"metrics: http://{addr}:{server.port}/metrics")
    return server.stop


@runs_app.command("ls")
def runs_ls(
    limit: Annotated[int, typer.Option(help="how many runs")] = 20,
    state: Annotated[str | None, typer.Option(help="only runs in this state")] = None,
    pipeline: Annotated[str | None, typer.Option(help="only runs of this pipeline")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """List runs, newest first."""
    from usina.cli.components import open_stores

    server = _server()
    if server is not None:
        items = remote.list_runs(server, limit=limit, state=state, pipeline=pipeline)
        if output is Output.json:
            print_json(out, items)
        else:
            out.print(remote.runs_table(items))
        return
    comps = open_stores(_settings())
    try:
        wanted = RunState(state) if state else None
        runs = comps.metadata.list_runs(limit=limit, state=wanted, pipeline=pipeline)
        if output is Output.json:
            print_json(
                out, [{k: v for k, v in run_json(r, []).items() if k != "steps"} for r in runs]
            )
            return
        from rich.table import Table

        table = Table()
        for col in ("run", "pipeline", "state", "created", "duration"):
            table.add_column(col)
        for r in runs:
            took = (
                f"{(r.finished_at - r.started_at):.1f}s" if r.finished_at and r.started_at else ""
            )
            table.add_row(
                r.id,
                r.pipeline,
                r.state.value,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)),
                took,
            )
        out.print(table)
    finally:
        comps.close()


@runs_app.command("show")
def runs_show(run_id: str, output: OutputOpt = Output.text) -> None:
    """A run's steps, states, attempts and timings."""
    from usina.cli.components import open_stores

    server = _server()
    if server is not None:
        shown = remote.show(server, run_id)
        if output is Output.json:
            print_json(out, shown)
        else:
            out.print(remote.steps_table(shown))
            finished = shown["state"] in ("succeeded", "failed", "cancelled")
            out.print(remote.summary(shown) if finished else f"run {run_id} {shown['state']}")
        return
    comps = open_stores(_settings())
    try:
        record = comps.metadata.get_run(run_id)
        steps = comps.metadata.get_steps(run_id)
        if output is Output.json:
            print_json(out, run_json(record, steps, comps.metadata.get_attempts(run_id)))
            return
        out.print(steps_table(record, steps))
        out.print(
            summary_line(record, steps)
            if record.state.finished
            else f"run {record.id} {record.state.value}"
        )
    finally:
        comps.close()


@runs_app.command("logs")
def runs_logs(
    run_id: str,
    step: str,
    attempt: Annotated[
        int | None, typer.Option(help="attempt number (default: the latest)")
    ] = None,
) -> None:
    """The output (stdout and stderr) of a step's attempt."""
    from usina.backends.local import read_log
    from usina.cli.components import open_stores

    server = _server()
    if server is not None:
        sys.stdout.write(remote.logs(server, run_id, step, attempt))
        return
    settings = _settings()
    comps = open_stores(settings)
    try:
        comps.metadata.get_run(run_id)
        attempts = comps.metadata.get_attempts(run_id, step)
        if not attempts:
            names = [s.node for s in comps.metadata.get_steps(run_id)]
            if step not in names:
                raise NotFoundError(f"run {run_id} has no step {step!r}; steps: {', '.join(names)}")
            raise NotFoundError(f"step {step!r} of run {run_id} has not run (cached or pending)")
        chosen = (
            attempts[-1]
            if attempt is None
            else next((a for a in attempts if a.number == attempt), None)
        )
        if chosen is None:
            raise NotFoundError(f"step {step!r} has no attempt {attempt}; it has {len(attempts)}")
        raw = comps.artifacts.read_record(log_key(chosen.id))
        text = (
            raw.decode(errors="replace")
            if raw is not None
            else read_log(settings.attempts_dir, chosen.id)
        )
        sys.stdout.write(text)
    finally:
        comps.close()


@runs_app.command("why")
def runs_why(run_id: str, output: OutputOpt = Output.text) -> None:
    """Why a run failed (or what its retries cost): class, evidence and what to do."""
    from usina.cli.components import open_stores

    server = _server()
    if server is not None:
        shown = remote.show(server, run_id)
        state, error = RunState(shown["state"]), shown["error"]
        report = []
        for item in shown["attempts"]:
            if item["state"] != "failed":
                continue
            tail = remote.logs(server, run_id, item["node"], item["number"]).splitlines()[-15:]
            report.append({**item, "log_tail": tail})
        _print_why(run_id, state, error, report, output)
        return
    settings = _settings()
    comps = open_stores(settings)
    try:
        record = comps.metadata.get_run(run_id)
        attempts = comps.metadata.get_attempts(run_id)
        failed = [a for a in attempts if a.state is AttemptState.FAILED]
        report = []
        for a in failed:
            raw = comps.artifacts.read_record(log_key(a.id))
            tail = (raw.decode(errors="replace") if raw else "").splitlines()[-15:]
            klass = a.failure_class or FailureClass.USER_ERROR
            report.append({**attempt_json(a), "log_tail": tail, "advice": advice(klass, run_id)})
        _print_why(record.id, record.state, record.error, report, output)
    finally:
        comps.close()


def _print_why(
    run_id: str, state: RunState, error: str | None, report: list[dict[str, Any]], output: Output
) -> None:
    if output is Output.json:
        print_json(
            out,
            {
                "run": run_id,
                "state": state.value,
                "error": error,
                "failed_attempts": report,
            },
        )
        return
    out.print(f"run {run_id}: {state.value}" + (f" — {error}" if error else ""))
    if not report:
        out.print("no attempt failed")
        return
    for item in report:
        out.print(
            f"\n[bold]{item['node']}[/] attempt {item['number']}: "
            f"[red]{item['failure_class']}[/] (exit {item['exit_code']}, {item['reason']})"
        )
        if item["message"]:
            out.print(item["message"].rstrip()[-3000:], markup=False)
        if item["log_tail"]:
            out.print("last log lines:", style="dim")
            for line in item["log_tail"]:
                out.print(f"  {line}", markup=False)
        out.print(f"what to do: {item['advice']}")
    if state is RunState.FAILED:
        raise typer.Exit(EXIT_FAILED)


@runs_app.command("resume")
def runs_resume(
    run_id: str,
    tracking: Annotated[bool | None, typer.Option("--tracking/--no-tracking")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Continue a run: failed steps run again with the current code; finished ones are kept."""
    from usina.cli.components import make_engine, open_stores
    from usina.runtime.loader import load_file

    server = _server()
    if server is not None:
        resumed = server.call("POST", f"/api/v1/runs/{quote(run_id)}/resume")
        as_json = output is Output.json
        raise typer.Exit(remote.follow(server, resumed, out, as_json=as_json))
    settings = _settings()
    comps = open_stores(settings)
    try:
        record = comps.metadata.get_run(run_id)
        old = Plan.from_json(record.plan)
        pipe: Pipeline | None = None
        plan: Plan | None = None
        if old.source and os.path.exists(old.source):
            module = load_file(old.source)
            pipe = next(
                (
                    v
                    for v in vars(module).values()
                    if isinstance(v, Pipeline) and v.name == record.pipeline
                ),
                None,
            )
        if pipe is not None:
            compiled = pipe.compile(record.params)
            plan = Plan(
                compiled.pipeline, compiled.params, compiled.nodes, compiled.source, old.sys_path
            )
        else:
            err.print(
                f"[yellow]cannot load pipeline {record.pipeline!r} from {old.source}; "
                "resuming with the code recorded at submission[/]"
            )
        engine = make_engine(
            comps,
            preload=[old.source] if old.source else [],
            tracker=_tracker(settings, pipe, tracking),
        )
        if record.state.finished or record.state is RunState.RUNNING or plan is not None:
            record = engine.resume(run_id, plan)
        raise typer.Exit(_drive(engine, record, output))
    finally:
        comps.close()


@runs_app.command("cancel")
def runs_cancel(run_id: str, output: OutputOpt = Output.text) -> None:
    """Stop a run: its running steps are killed and it ends as cancelled."""
    from usina.cli.components import make_engine, open_stores

    server = _server()
    if server is not None:
        done = server.call("POST", f"/api/v1/runs/{quote(run_id)}/cancel")
        if output is Output.json:
            print_json(
                out,
                {k: done[k] for k in ("id", "state", "cancel_requested")},
            )
        else:
            finished = done["state"] in ("succeeded", "failed", "cancelled")
            out.print(
                f"run {done['id']}: {done['state']}" + ("" if finished else " (cancel requested)")
            )
        return
    settings = _settings()
    comps = open_stores(settings)
    try:
        engine = make_engine(comps)
        record = engine.cancel(run_id)
        if not record.state.finished:
            try:
                record = engine.drive(run_id)  # nobody drives it: finish the cancel here
            except StateError:
                pass  # its driver is alive and will see the request on its next pass
            finally:
                engine.backend.close()
        record = comps.metadata.get_run(run_id)
        if output is Output.json:
            print_json(
                out,
                {
                    "id": record.id,
                    "state": record.state.value,
                    "cancel_requested": record.cancel_requested,
                },
            )
        else:
            out.print(
                f"run {record.id}: {record.state.value}"
                + ("" if record.state.finished else " (cancel requested)")
            )
    finally:
        comps.close()


@k8s_app.command("render")
def k8s_render(
    target: Annotated[str, typer.Argument(help="FILE.py[:PIPELINE]")],
    param: Annotated[list[str], typer.Option("--param", "-p", help="NAME=VALUE, repeatable")] = [],  # noqa: B006
    namespace: Annotated[str, typer.Option(help="namespace of the Jobs")] = "default",
    queue: Annotated[str | None, typer.Option(help="Kueue LocalQueue")] = None,
    image: Annotated[str, typer.Option(help="image with usina and code")] = "usina-runtime:latest",
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json")] = "yaml",
) -> None:
    """Print the exact manifests each step's first attempt would create (no cluster needed)."""
    from usina.cli.components import KubernetesOptions, render_plan
    from usina.runtime.loader import load_pipeline

    plan = load_pipeline(target).compile(_parse_params(param))
    options = KubernetesOptions(namespace=namespace, queue=queue, image=image)
    objects = render_plan(plan, options, _settings())
    if output == "json":
        print_json(out, objects)
        return
    try:
        import yaml
    except ImportError:
        print_json(out, objects)
        return
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))


@app.command()
def kpi(
    since: Annotated[
        str, typer.Option(help="the period: runs submitted in the last 30m, 12h, 7d")
    ] = "7d",
    models: Annotated[
        bool, typer.Option("--models/--no-models", help="add the models' KPIs from MLflow")
    ] = True,
    output: OutputOpt = Output.text,
) -> None:
    """Platform KPIs of a period: success rate, time to recovery, GPU-hours used and wasted,
    queue wait; and the registered models' versions and champions (MLflow, when reachable)."""
    from usina.cli.components import open_stores
    from usina.monitoring.kpi import compute_kpis, parse_period

    try:
        period = parse_period(since)
    except ValueError as exc:
        raise DefinitionError(f"--since: {exc}") from None
    settings = _settings()
    comps = open_stores(settings)
    try:
        now = time.time()
        report = compute_kpis(comps.metadata, since=now - period, until=now)
    finally:
        comps.close()
    if models:
        report["models"] = _model_kpis(settings, now - period)
    if output is Output.json:
        print_json(out, report)
        return
    out.print(kpi_table(report, since))


def _model_kpis(settings: Settings, since: float) -> dict[str, Any]:
    """The models' KPIs, or why there are none: the registry is optional to a report."""
    try:
        from usina.tracking.mlflow import model_kpis

        return {
            "available": True,
            "models": model_kpis(tracking_uri=settings.tracking_uri, since=since),
        }
    except Exception as exc:  # no mlflow, no store, server down: the platform KPIs still stand
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "models": []}


@app.command()
def version() -> None:
    """Print usina's version."""
    import usina

    out.print(usina.__version__)


def _register_optional() -> None:
    try:
        from usina.serving.cli import serve
    except ImportError:
        pass
    else:
        app.command(name="serve")(serve)
    try:
        from usina.server.cli import server
    except ImportError:  # the server extra is not installed
        pass
    else:
        app.command(name="server")(server)
    try:
        from usina.deploy.cli import deploy
    except ImportError:
        pass
    else:
        app.command(name="deploy")(deploy)


def main(argv: list[str] | None = None) -> int:
    # Logging is the CLI's to configure: MLflow would otherwise install its own INFO handler.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    _configure_logging(os.environ.get("USINA_LOG_FORMAT"))
    _register_optional()
    try:
        result = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:  # click usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    except (DefinitionError, NotFoundError, StateError) as exc:
        err.print(f"[red]error:[/] {exc}", markup=True)
        return EXIT_USAGE
    except UsinaError as exc:
        err.print(f"[red]error:[/] {exc}")
        return EXIT_FAILED
    except Exception as exc:
        # Click's usage errors (typer may vendor its own copy of click): they know how to show
        # themselves and carry their exit code.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return EXIT_USAGE
        if type(exc).__name__ == "Abort":
            return 130
        raise
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
