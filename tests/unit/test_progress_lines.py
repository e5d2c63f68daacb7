"""``usina run``'s progress lines off a terminal: one line per step each time its state or
attempt changes, in the plan's order, none for a pass that changed nothing."""

from __future__ import annotations

import io
from dataclasses import replace

from rich.console import Console

from usina.cli.display import Progress
from usina.engine.records import RunId, RunRecord, RunState, StepRecord, StepState


def _run() -> RunRecord:
    plan = {"nodes": [{"id": "load"}, {"id": "train"}]}
    return RunRecord(
        id=RunId("r1"), pipeline="p", plan=plan, params={}, state=RunState.RUNNING, created_at=1.0
    )


def test_lines_only_for_steps_that_changed() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, color_system=None)
    run = _run()
    load = StepRecord(run_id=run.id, node="load", state=StepState.PENDING, resources={})
    train = StepRecord(run_id=run.id, node="train", state=StepState.PENDING, resources={})
    with Progress(console, live=False) as progress:
        progress.update(run, [train, load])  # pending: nothing to say
        load = replace(load, state=StepState.RUNNING, attempts=1)
        progress.update(run, [train, load])
        progress.update(run, [train, load])  # nothing changed
        load = replace(load, state=StepState.SUCCEEDED, started_at=10.0, finished_at=12.5)
        train = replace(train, state=StepState.RUNNING, attempts=1)
        progress.update(run, [train, load])
        train = replace(train, state=StepState.RUNNING, attempts=2)  # a retry is news
        progress.update(run, [train, load])
    lines = [line.strip() for line in buffer.getvalue().splitlines()]
    assert lines == [
        "load: running",
        "load: succeeded 2.5s",
        "train: running",
        "train: running attempt 2",
    ]
