"""Run a compiled pipeline in this process, step by step, reporting to a ``Tracker``.

A stand-in for the engine where a test needs real step code and a real tracker but not
processes, stores or caching: every step runs once, in plan order, with its outputs kept in
memory. Output digests are hashes of the values, so lineage tags are stable for equal data.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import time
from dataclasses import replace
from typing import Any

from usina.engine.ports import Tracker
from usina.engine.records import (
    ArtifactRef,
    AttemptId,
    AttemptRecord,
    AttemptState,
    RunId,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
)
from usina.sdk.context import StepContext, set_current
from usina.sdk.pipeline import Pipeline


def _digest(value: Any) -> str:
    try:
        import polars as pl

        if isinstance(value, pl.DataFrame):
            buf = io.BytesIO()
            value.write_ipc(buf)
            return "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
    except ImportError:  # pragma: no cover
        pass
    data = value if isinstance(value, bytes) else repr(value).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_inline(
    pipe: Pipeline, params: dict[str, Any], tracker: Tracker, run_id: str
) -> tuple[RunRecord, dict[str, tuple[Any, ...]]]:
    plan = pipe.compile(params)
    now = time.time()
    run = RunRecord(
        id=RunId(run_id),
        pipeline=plan.pipeline,
        plan=plan.to_json(),
        params=plan.params,
        state=RunState.RUNNING,
        created_at=now,
        started_at=now,
    )
    tracker.run_started(run)
    outputs: dict[str, tuple[Any, ...]] = {}
    for node in plan.nodes:
        env = dict(tracker.step_started(run, node.id))
        kwargs = {
            name: outputs[spec["ref"][0]][spec["ref"][1]] if "ref" in spec else spec["const"]
            for name, spec in node.inputs.items()
        }
        attempt_id = f"{run_id}-{node.id}-1"
        ctx = StepContext(
            run_id=run_id,
            step=node.id,
            attempt=1,
            attempt_id=attempt_id,
            pipeline=plan.pipeline,
            params=plan.params,
            tracking=env,
        )
        fn = getattr(importlib.import_module(node.module), node.qualname).fn
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        token = set_current(ctx)
        started = time.time()
        try:
            result = fn(**kwargs)
        finally:
            set_current(None)
            del token
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
        finished = time.time()
        values = tuple(result) if node.outputs > 1 else (result,)
        outputs[node.id] = values
        refs = tuple(ArtifactRef(_digest(v), "memory", type(v).__name__, 0) for v in values)
        attempt = AttemptRecord(
            id=AttemptId(attempt_id),
            run_id=run.id,
            node=node.id,
            number=1,
            state=AttemptState.SUCCEEDED,
            resources=node.resources,
            started_at=started,
            finished_at=finished,
            exit_code=0,
        )
        step = StepRecord(
            run_id=run.id,
            node=node.id,
            state=StepState.SUCCEEDED,
            resources=node.resources,
            outputs=refs,
            attempts=1,
            started_at=started,
            finished_at=finished,
            metrics=dict(ctx.metrics),
        )
        tracker.step_finished(run, step, attempt)
    run = replace(run, state=RunState.SUCCEEDED, finished_at=time.time())
    tracker.run_finished(run)
    return run, outputs
