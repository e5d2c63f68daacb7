"""Driving a run in this process with its progress on screen (``usina run``, ``runs resume``);
Ctrl-C cancels it cleanly, a second Ctrl-C leaves at once."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

from usina.cli.common import EXIT_FAILED, EXIT_OK, Output, err, out
from usina.cli.display import Progress, print_json, run_json, summary_line
from usina.engine.records import RunState
from usina.i18n import _

if TYPE_CHECKING:
    from usina.compose.settings import Settings
    from usina.engine.records import RunRecord
    from usina.sdk.pipeline import Pipeline


def tracker(settings: Settings, pipe: Pipeline | None, tracking: bool | None) -> Any:
    """The MLflow tracker when the run is tracked (``--tracking`` or the pipeline says so)."""
    from usina.compose.components import make_tracker

    wanted = tracking if tracking is not None else bool(pipe is not None and pipe.tracking)
    if not wanted:
        return None
    return make_tracker(settings.tracking_uri, pipe.experiment if pipe is not None else "usina")


def drive(engine: Any, run: RunRecord, output: Output) -> int:
    """Drive a run to its end with progress on screen; its exit code."""
    from usina.monitoring.logs import log_context

    with log_context(run_id=run.id, pipeline=run.pipeline):
        return _drive_run(engine, run, output)


def _drive_run(engine: Any, run: RunRecord, output: Output) -> int:
    console = out if output is Output.text else err
    interrupted = {"count": 0}

    def on_signal(signum: int, _frame: object) -> None:
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            said = _(
                "interrupted again: leaving now; 'usina runs resume' adopts the steps still running"
            )
            err.print(f"[red]{said}[/]")
            os._exit(130)
        said = _(
            "stopping run {run}: cancelling its running steps (Ctrl-C again to leave now)"
        ).format(run=run.id)
        err.print(f"[yellow]{said}[/]")
        engine.cancel(run.id)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    live = console.is_terminal and output is Output.text
    if output is Output.text:
        console.print(
            _("run {run} of pipeline {pipeline}").format(
                run=f"[bold]{run.id}[/]", pipeline=f"[bold]{run.pipeline}[/]"
            )
        )
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
        # Off a terminal the progress lines have already said how each step ended: a table
        # would repeat them (and cost a 50-step run ~60 ms to lay out).
        colour = "green" if final.state is RunState.SUCCEEDED else "red"
        out.print(f"[{colour}]{summary_line(final, steps)}[/]")
        if final.state is RunState.FAILED:
            out.print(
                _("see why: usina runs why {run}   then: usina runs resume {run}").format(
                    run=final.id
                )
            )
    return EXIT_OK if final.state is RunState.SUCCEEDED else EXIT_FAILED
