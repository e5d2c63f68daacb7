"""Building the ``Task`` of an attempt: the one builder the engine and ``usina k8s render`` use.

What the engine submits to a backend is exactly ``build_task(...)``: the step's node, its
typed resources (the first attempt's are the node's own; a retry after an ``oom`` passes the
grown ones), its inputs, the run's parameters, the environment (``task_env``) and the labels
that name the run, step, pipeline and attempt plus the run's own labels. Ids are deterministic
(``attempt_id``), so a re-launch after a crash finds the attempt instead of starting another.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import TYPE_CHECKING, Any

from usina.engine.ports import Task
from usina.engine.records import AttemptId, RunId
from usina.sdk.resources import Resources

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.engine.records import StepRecord
    from usina.sdk.pipeline import Plan, PlanNode

LABEL_PREFIX = "usina.dev/"


def new_run_id(pipeline: str, now: float) -> RunId:
    """``<pipeline>-<yyyymmdd-hhmmss>-<6 hex>``: sortable, readable, DNS-safe."""
    stem = "".join(c if c.isalnum() else "-" for c in pipeline.lower()).strip("-")[:30] or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return RunId(f"{stem}-{stamp}-{secrets.token_hex(3)}")


def attempt_id(run_id: str, node: str, number: int) -> AttemptId:
    """``<run>-<node>-<n>``: the same attempt always has the same id."""
    return AttemptId(f"{run_id}-{node}-{number}")


def task_labels(
    run_id: str, pipeline: str, node: str, number: int, run_labels: Mapping[str, str]
) -> dict[str, str]:
    """The attempt's labels: run, step, pipeline and attempt number, then the run's labels."""
    return {
        LABEL_PREFIX + "run": run_id,
        LABEL_PREFIX + "step": node,
        LABEL_PREFIX + "pipeline": pipeline,
        LABEL_PREFIX + "attempt": str(number),
        **{LABEL_PREFIX + k: v for k, v in run_labels.items()},
    }


def task_env(
    node: PlanNode,
    *,
    base: Mapping[str, str] | None = None,
    tracking: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The attempt's environment: ``base`` (``EngineSettings.env``), then the tracker's
    variables, then the variables the step names in ``@step(env=[...])`` that are set in
    ``environ`` (default: this process's environment)."""
    source = os.environ if environ is None else environ
    env = {**(base or {}), **(tracking or {})}
    for name in node.env:
        value = source.get(name)
        if value is not None:
            env[name] = value
    return env


def build_task(
    plan: Plan,
    node: PlanNode,
    *,
    run_id: str,
    artifacts_url: str,
    number: int = 1,
    resources: Resources | None = None,
    inputs: Mapping[str, dict[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
    run_labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Task:
    """The task of attempt ``number`` of ``node`` in run ``run_id`` of ``plan``.

    resources: of this attempt (default: the node's own, as the first attempt has them).
    inputs: name -> ``{"artifact": ref json}`` or ``{"const": value}``; only known at run time
        (upstream outputs), so ``usina k8s render`` passes none.
    params: the run's parameters (default: the plan's).
    run_labels: the run's own labels (``usina run --label k=v``), prefixed ``usina.dev/``.
    env: the attempt's environment, from ``task_env``.
    """
    return Task(
        attempt_id=attempt_id(run_id, node.id, number),
        run_id=run_id,
        pipeline=plan.pipeline,
        # the code dependency map explains cache misses; the worker does not need it
        node={k: v for k, v in node.to_json().items() if k != "code_deps"},
        number=number,
        resources=resources if resources is not None else Resources.from_json(node.resources),
        inputs=dict(inputs or {}),
        artifacts_url=artifacts_url,
        params=dict(plan.params if params is None else params),
        sys_path=plan.sys_path,
        source=plan.source,
        env=dict(env or {}),
        timeout=node.timeout,
        labels=task_labels(run_id, plan.pipeline, node.id, number, run_labels or {}),
    )


def task_inputs(node: PlanNode, steps: Mapping[str, StepRecord]) -> dict[str, dict[str, Any]]:
    """The attempt's inputs: each upstream output as ``{"artifact": ref json}`` (with ``item``
    for a map branch), a fan-in as ``{"artifacts": [ref json, ...] | {key: ref json}}``, each
    constant as ``{"const": value}`` (upstream steps must have succeeded)."""
    inputs: dict[str, dict[str, Any]] = {}
    for name, spec in node.inputs.items():
        if "ref" in spec:
            source, index = spec["ref"]
            inputs[name] = {"artifact": steps[source].outputs[index].to_json()}
            if "item" in spec:  # a branch of a map over a run-time list: its item
                inputs[name]["item"] = spec["item"]
        elif "refs" in spec:  # fan-in: a list or dict of outputs
            refs: list[dict[str, Any]] = []
            keys: list[str] = []
            for position, (source, index) in enumerate(spec["refs"]):
                outputs = steps[source].outputs
                if spec.get("optional") and not outputs:
                    continue  # a map branch past the end of its list
                refs.append(outputs[index].to_json())
                if spec.get("keys"):
                    keys.append(spec["keys"][position])
            inputs[name] = {"artifacts": dict(zip(keys, refs, strict=True)) if keys else refs}
        else:
            inputs[name] = {"const": spec["const"]}
    return inputs


__all__ = ["attempt_id", "build_task", "new_run_id", "task_env", "task_inputs", "task_labels"]
