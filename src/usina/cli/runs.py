"""``usina runs``: list and inspect runs; resume, cancel, explain failures. Reads go through
one ``RunsSource`` (local state folder or ``--server``) and print the same either way."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from usina.cli import remote
from usina.cli.common import (
    EXIT_FAILED,
    Output,
    OutputOpt,
    err,
    existing_settings,
    out,
    server,
)
from usina.cli.display import (
    print_json,
    print_why,
    run_json,
    run_summary,
    run_table,
    runs_table,
    state_name,
    terminal_log,
)
from usina.cli.drive import drive, tracker
from usina.cli.source import runs_source
from usina.engine.records import RunState, StepState
from usina.errors import NotFoundError, StateError
from usina.i18n import N_, _, error
from usina.sdk.pipeline import Pipeline, Plan

runs_app = typer.Typer(
    help="List and inspect runs; resume, cancel, explain failures.", no_args_is_help=True
)


@runs_app.command("ls")
def runs_ls(
    limit: Annotated[int, typer.Option(help="how many runs")] = 20,
    state: Annotated[str | None, typer.Option(help="only runs in this state")] = None,
    pipeline: Annotated[str | None, typer.Option(help="only runs of this pipeline")] = None,
    output: OutputOpt = Output.text,
) -> None:
    """List runs, newest first."""
    source = runs_source()
    try:
        items = source.list_runs(limit=limit, state=state, pipeline=pipeline)
    finally:
        source.close()
    if output is Output.json:
        print_json(out, items)
    else:
        out.print(runs_table(items))


@runs_app.command("show")
def runs_show(run_id: str, output: OutputOpt = Output.text) -> None:
    """A run's steps, states, attempts and timings."""
    source = runs_source()
    try:
        shown = source.show(run_id)
    finally:
        source.close()
    if output is Output.json:
        if server() is None:
            shown["profiles"] = _usage_json(run_id)
        print_json(out, shown)
        return
    out.print(run_table(shown))
    labels = shown.get("labels") or {}
    if labels.get("trigger"):  # why it ran (the run's run_triggered event says the same)
        said = _("triggered by {trigger}: {cause}")
        out.print(said.format(trigger=labels["trigger"], cause=labels.get("trigger-cause", "")),
                  markup=False)  # fmt: skip
    if server() is None:  # what each attempt used: peak / p95 / requested (local state only)
        _print_usage(run_id)
    finished = RunState(shown["state"]).finished
    out.print(run_summary(shown) if finished else _run_state(shown["id"], shown["state"]))


def _run_state(run_id: str, state: str) -> str:
    return _("run {run} {state}").format(run=run_id, state=state_name(state))


def _nothing_to_run(run_id: str) -> str:
    return _("run {run} succeeded and nothing changed: nothing to run").format(run=run_id)


def _runs_again(step: str, reason: str) -> str:
    return "  " + _("{step}: runs again ({reason})").format(step=step, reason=reason)


def _usage_json(run_id: str) -> list[Any]:
    from usina.cli.profile_cmds import profiles_json
    from usina.compose.components import open_stores

    comps = open_stores(existing_settings(run_id))
    try:
        return profiles_json(comps.artifacts, comps.metadata.get_attempts(run_id))
    finally:
        comps.close()


def _print_usage(run_id: str) -> None:
    from usina.cli.profile_cmds import profile_table
    from usina.compose.components import open_stores

    comps = open_stores(existing_settings(run_id))
    try:
        used = profile_table(comps.artifacts, comps.metadata.get_attempts(run_id))
    finally:
        comps.close()
    if used is not None:
        out.print(used)


@runs_app.command("logs")
def runs_logs(
    run_id: str,
    step: str,
    attempt: Annotated[
        int | None, typer.Option(help="attempt number (default: the latest)")
    ] = None,
) -> None:
    """The output (stdout and stderr) of a step's attempt."""
    source = runs_source()
    try:
        sys.stdout.write(terminal_log(source.logs(run_id, step, attempt)))
    finally:
        source.close()


@runs_app.command("why")
def runs_why(run_id: str, output: OutputOpt = Output.text) -> None:
    """Why a run failed (or what its retries cost): class, evidence and what to do."""
    source = runs_source()
    try:
        report = source.why(run_id)
    finally:
        source.close()
    _print_why(report, output)


def _print_why(report: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(out, report)
        return
    print_why(out, report)
    if report["state"] == RunState.FAILED.value:
        raise typer.Exit(EXIT_FAILED)


@runs_app.command("resume")
def runs_resume(
    run_id: str,
    tracking: Annotated[bool | None, typer.Option("--tracking/--no-tracking")] = None,
    rerun: Annotated[
        list[str] | None,
        typer.Option("--rerun", help="run this step and its dependents again (repeatable)"),
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Continue a run: failed, skipped and cancelled steps run again with the current code, and
    so does every step whose code, parameters or inputs changed since it succeeded (and what
    depends on it); the others are kept."""
    from usina.compose.components import make_engine, open_stores
    from usina.runtime.loader import load_file

    remote_server = server()
    if remote_server is not None:
        raise typer.Exit(_resume_remote(remote_server, run_id, rerun or [], output))
    current = existing_settings(run_id)
    comps = open_stores(current)
    try:
        try:
            record = comps.metadata.get_run(run_id)
        except NotFoundError as exc:
            raise error(
                NotFoundError, N_("{error} (store: {where})"), error=exc, where=current.where()
            ) from exc
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
            said = _(
                "cannot load pipeline {pipeline!r} from {source}; resuming with the code "
                "recorded at submission"
            ).format(pipeline=record.pipeline, source=old.source)
            err.print(f"[yellow]{escape(said)}[/]")
        engine = make_engine(
            comps,
            preload=[old.source] if old.source else [],
            tracker=tracker(current, pipe, tracking),
        )
        if record.state.finished or record.state is RunState.RUNNING or plan is not None:
            why = engine.reruns(run_id, plan, rerun or ())
            if record.state is RunState.SUCCEEDED and not why:
                if output is Output.json:
                    print_json(out, {**source_show(comps, run_id), "reran": {}})
                else:
                    out.print(_nothing_to_run(run_id))
                raise typer.Exit(0)
            if output is Output.text:
                for node, reason in why.items():
                    out.print(_runs_again(node, reason))
            record = engine.resume(run_id, plan, rerun=rerun or ())
        raise typer.Exit(drive(engine, record, output))
    finally:
        comps.close()


def _resume_remote(
    remote_server: remote.Remote, run_id: str, rerun: list[str], output: Output
) -> int:
    """``runs resume`` through a server: the same messages as locally, then follow the run."""
    resumed = remote.resume(remote_server, run_id, rerun)
    if resumed["state"] == RunState.SUCCEEDED.value:
        # The server left a succeeded run where nothing changed as it was.
        if output is Output.json:
            print_json(out, {**remote.show(remote_server, run_id), "reran": {}})
        else:
            out.print(_nothing_to_run(run_id))
        return 0
    if output is Output.text:
        for step in resumed["steps"]:
            if step["state"] in (StepState.PENDING.value, StepState.BACKOFF.value):
                reason = (step.get("why") or "").removeprefix("resume: ")
                out.print(_runs_again(step["node"], reason))
    return remote.follow(remote_server, resumed, out, as_json=output is Output.json)


@runs_app.command("cancel")
def runs_cancel(run_id: str, output: OutputOpt = Output.text) -> None:
    """Stop a run: its running steps are killed and it ends as cancelled."""
    remote_server = server()
    done = (
        remote_server.call("POST", f"/api/v1/runs/{quote(run_id)}/cancel")
        if remote_server is not None
        else _cancel_here(run_id)
    )
    if output is Output.json:
        print_json(out, {k: done[k] for k in ("id", "state", "cancel_requested")})
        return
    finished = RunState(done["state"]).finished
    said = _("run {run}: {state}").format(run=done["id"], state=state_name(done["state"]))
    out.print(said + ("" if finished else " " + _("(cancel requested)")))


def source_show(comps: Any, run_id: str) -> dict[str, Any]:
    md = comps.metadata
    return run_json(md.get_run(run_id), md.get_steps(run_id), md.get_attempts(run_id))


def _cancel_here(run_id: str) -> dict[str, Any]:
    from usina.compose.components import make_engine, open_stores

    current = existing_settings(run_id)
    comps = open_stores(current)
    try:
        try:
            comps.metadata.get_run(run_id)
        except NotFoundError as exc:
            raise error(
                NotFoundError, N_("{error} (store: {where})"), error=exc, where=current.where()
            ) from exc
        engine = make_engine(comps)
        record = engine.cancel(run_id)
        if not record.state.finished:
            try:
                engine.drive(run_id)  # nobody drives it: finish the cancel here
            except StateError:
                pass  # its driver is alive and will see the request on its next pass
            finally:
                engine.backend.close()
        record = comps.metadata.get_run(run_id)
        return {
            "id": record.id,
            "state": record.state.value,
            "cancel_requested": record.cancel_requested,
        }
    finally:
        comps.close()
