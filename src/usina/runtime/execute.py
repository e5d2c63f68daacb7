"""Run one attempt of a step: load inputs, call the function, write outputs and a result."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from typing import Any

from usina.engine.failures import ErrorRecord, exit_code_for
from usina.engine.ports import (
    EXIT_OK,
    ArtifactStore,
    Task,
    error_key,
    rank_error_key,
    result_key,
    task_key,
)
from usina.engine.records import ArtifactRef
from usina.errors import SerializationError, UsinaError
from usina.runtime.checkpoints import StoreCheckpointer, checkpoint_url
from usina.runtime.loader import resolve_callable
from usina.runtime.profile import Sampler, profiled
from usina.sdk.context import StepContext, set_current
from usina.sdk.retry import FailureClass
from usina.sdk.step import Step
from usina.stores import serializers

log = logging.getLogger(__name__)


__all__ = ["execute", "load_task", "rank_error_key"]

_RANK: int | None = None  # this process's rank when it runs one rank of a distributed step


def _fail(store: ArtifactStore, attempt_id: str, kind: FailureClass, exc: BaseException) -> int:
    """Write the attempt's (or this rank's) error record; returns the exit code for ``kind``."""
    record = ErrorRecord(
        kind=kind,
        type=type(exc).__name__,
        message=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
        rank=_RANK,
        at=time.time() if _RANK is not None else None,
    )
    key = error_key(attempt_id) if _RANK is None else rank_error_key(attempt_id, _RANK)
    try:
        store.write_record(key, json.dumps(record.to_json()).encode())
    except Exception:  # the store itself is broken: the exit code still tells the class
        traceback.print_exc()
    return exit_code_for(kind)


def load_task(store: ArtifactStore, attempt_id: str) -> Task:
    raw = store.read_record(task_key(attempt_id))
    if raw is None:
        raise UsinaError(f"no task record for attempt {attempt_id} in {store.url}")
    return Task.from_json(json.loads(raw))


def _load_input(store: ArtifactStore, ref: ArtifactRef) -> Any:
    path = store.local_path(ref.digest)
    if path is not None:
        return serializers.load(path, ref.serializer, ref.type_name)
    return serializers.load(store.get_bytes(ref.digest), ref.serializer, ref.type_name)


def execute(store: ArtifactStore, task: Task) -> int:
    # the attempt's CPU/memory/GPU profile (usina.runtime.profile)
    with profiled(store, task) as sampler:
        return _execute(store, task, sampler)


def _execute(store: ArtifactStore, task: Task, sampler: Sampler | None = None) -> int:
    """Run ``task`` in this process and return the exit code for it.

    A distributed step (``task.distributed``) run where no rank is set yet (the local
    backend's worker) becomes the launcher of its gang (``usina.runtime.gang``); with ``RANK``
    set (by that launcher, or by ``torchrun`` in a pod) it runs that one rank: every rank calls
    the function, and only rank 0 writes the outputs and the result record.
    """
    global _RANK
    node = task.node
    if task.distributed is not None:
        if "RANK" not in os.environ:
            from usina.runtime.gang import launch_gang

            return launch_gang(store, task)
        _RANK = int(os.environ["RANK"])
    rank = _RANK or 0
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if _RANK is not None else 1
    started = time.time()
    # 1. The function and its inputs. Failing here is the platform's problem (infra) unless the
    #    user's module itself raises on import.
    for entry in reversed(task.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        target = resolve_callable(node["module"], node["qualname"], node.get("file"))
    except Exception as exc:
        print(f"usina: cannot import step {node['step']!r}: {exc}", file=sys.stderr)
        return _fail(store, task.attempt_id, FailureClass.USER_ERROR, exc)
    fn = target.fn if isinstance(target, Step) else target
    try:
        kwargs: dict[str, Any] = {}
        for name, spec in task.inputs.items():
            if "artifacts" in spec:  # fan-in: a list or a dict of upstream outputs
                many = spec["artifacts"]
                if isinstance(many, dict):
                    kwargs[name] = {
                        k: _load_input(store, ArtifactRef.from_json(v)) for k, v in many.items()
                    }
                else:
                    kwargs[name] = [_load_input(store, ArtifactRef.from_json(v)) for v in many]
            elif "artifact" in spec:
                kwargs[name] = _load_input(store, ArtifactRef.from_json(spec["artifact"]))
                if "item" in spec:  # a branch of a map: its item of the list
                    kwargs[name] = kwargs[name][spec["item"]]
            else:
                kwargs[name] = spec["const"]
    except MemoryError as exc:
        return _fail(store, task.attempt_id, FailureClass.OOM, exc)
    except Exception as exc:
        print(f"usina: cannot load the inputs of {node['step']!r}: {exc}", file=sys.stderr)
        return _fail(store, task.attempt_id, FailureClass.INFRA, exc)

    # 2. The user's code.
    ctx = StepContext(
        run_id=task.run_id,
        step=node["id"],
        attempt=task.number,
        attempt_id=task.attempt_id,
        pipeline=task.pipeline,
        params=dict(task.params),
        tracking={k: v for k, v in task.env.items() if k.startswith("MLFLOW_")},
        checkpoint_dir=checkpoint_url(store.url, task.run_id, node["id"]),
        rank=rank,
        world_size=world_size,
    )
    ctx.checkpointer = StoreCheckpointer(
        ctx.checkpoint_dir or "", rank=rank, attempt=task.attempt_id
    )
    token = set_current(ctx)
    try:
        value = fn(**kwargs)
    except MemoryError as exc:
        code = _fail(store, task.attempt_id, FailureClass.OOM, exc)
        traceback.print_exc()
        return code
    except BaseException as exc:  # SystemExit too: a step must return, not exit
        code = _fail(store, task.attempt_id, FailureClass.USER_ERROR, exc)
        traceback.print_exc()
        return code
    finally:
        set_current(None)
        del token

    # 3. Its outputs: rank 0's alone in a distributed step.
    if rank != 0:
        return EXIT_OK
    count = int(node["outputs"])
    if count == 0:
        values: list[Any] = []
    elif count == 1 and not _declares_tuple(fn):
        values = [value]
    else:
        if not isinstance(value, tuple | list) or len(value) != count:
            got = (
                f"{len(value)} values" if isinstance(value, tuple | list) else type(value).__name__
            )
            problem = SerializationError(
                f"step {node['step']!r} is annotated to return {count} values but returned {got}"
            )
            code = _fail(store, task.attempt_id, FailureClass.USER_ERROR, problem)
            print(f"usina: {problem}", file=sys.stderr)
            return code
        values = list(value)
    outputs: list[dict[str, Any]] = []
    try:
        for item in values:
            data, serializer, type_name = serializers.dump(item, allow_pickle=bool(node["pickle"]))
            digest = store.put_bytes(data)
            outputs.append(ArtifactRef(digest, serializer, type_name, len(data)).to_json())
    except MemoryError as exc:
        return _fail(store, task.attempt_id, FailureClass.OOM, exc)
    except SerializationError as exc:
        code = _fail(store, task.attempt_id, FailureClass.USER_ERROR, exc)
        print(f"usina: step {node['step']!r}: {exc}", file=sys.stderr)
        return code
    except Exception as exc:
        code = _fail(store, task.attempt_id, FailureClass.INFRA, exc)
        traceback.print_exc()
        return code
    result = {
        "outputs": outputs,
        "metrics": ctx.metrics,
        "tags": ctx.tags,
        "duration": time.time() - started,
        "pid": os.getpid(),
    }
    if sampler is not None and _RANK is None:
        # a short step's final profile rides in its result record (one file fewer to write);
        # ``usina.engine.profiles.load_profile`` looks there first
        inline = sampler.finish_inline()
        if inline is not None:
            result["profile"] = inline
    try:
        store.write_record(result_key(task.attempt_id), json.dumps(result).encode())
    except Exception as exc:
        traceback.print_exc()
        return _fail(store, task.attempt_id, FailureClass.INFRA, exc)
    return EXIT_OK


def _declares_tuple(fn: Any) -> bool:
    import typing

    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return False
    return typing.get_origin(hint) is tuple
