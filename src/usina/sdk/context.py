"""What a running step can ask about itself and report back: ids, metrics, a checkpoint folder.

The runtime fills the context in the worker process; outside a step the functions fail clearly.
"""

from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass, field
from typing import Any

from usina.errors import StateError
from usina.i18n import N_, error


@dataclass(slots=True)
class StepContext:
    """The identity of the attempt being run, and what the step reported during it."""

    run_id: str
    step: str
    attempt: int
    attempt_id: str
    pipeline: str
    params: dict[str, object] = field(default_factory=dict)
    checkpoint_dir: str | None = None  # the durable per-(run, step) folder, as a URL
    checkpointer: Any = None  # a usina.sdk.checkpoint.Checkpointer, set by the runtime
    rank: int = 0  # this process's rank in a distributed step (0 otherwise)
    world_size: int = 1  # ranks in the step's gang
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    tracking: dict[str, str] = field(default_factory=dict)


_current: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "usina_step_context", default=None
)


def current() -> StepContext:
    """The context of the step being run; raises outside a step."""
    ctx = _current.get()
    if ctx is None:
        raise error(StateError, N_("usina.current() is only available inside a running step"))
    return ctx


def set_current(ctx: StepContext | None) -> contextvars.Token[StepContext | None]:
    return _current.set(ctx)


def log_metric(name: str, value: float) -> None:
    """Record a metric of this step; it reaches the tracker (MLflow) as the step's metric."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"metric {name!r} must be a finite number, got {value!r}")
    current().metrics[name] = number


def log_metrics(values: dict[str, float]) -> None:
    for name, value in values.items():
        log_metric(name, value)


def set_tag(name: str, value: str) -> None:
    """Record a tag of this step (free text; shown in the tracker)."""
    current().tags[name] = str(value)
