"""The retry policy in action: given a step's failed attempts, retry or stop, when, and how.

Pure functions of the attempt history, so retry schedules can be asserted exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

from usina.i18n import N_
from usina.sdk.resources import Resources, memory_bytes
from usina.sdk.retry import FailureClass, Retry

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def _as_is(text: str) -> str:
    return text


def advice(failure: FailureClass, run_id: str, translate: Callable[[str], str] = _as_is) -> str:
    """What a user should do next about a failure of this class (every class has one: the
    ``match`` is exhaustive, so mypy rejects a new class that is missing here). In English
    unless ``translate`` (``usina.i18n.translate``) puts it in the reader's language."""
    match failure:
        case FailureClass.USER_ERROR:
            text = N_(
                "fix the step's code or data (see the traceback), then 'usina runs resume {run}'"
            )
        case FailureClass.OOM:
            text = N_("raise the step's memory (Resources(memory=...)) or Retry(max_memory=...)")
        case FailureClass.TIMEOUT:
            text = N_("raise the step's timeout, or make it faster")
        case FailureClass.INFRA:
            text = N_("check the image, secrets and config the step needs, then resume")
        case FailureClass.UNSCHEDULABLE:
            text = N_("ask for resources some node has, or add capacity to the queue")
        case FailureClass.PREEMPTED:
            text = N_("resume the run; preemptions do not use the retry budget")
        case FailureClass.NODE_LOST:
            text = N_("resume the run; lost nodes do not use the retry budget")
        case FailureClass.CANCELLED:
            text = N_("resume the run to continue it")
        case _:
            assert_never(failure)
    return translate(text).format(run=run_id)


def advice_for(
    failure_class: str | None, run_id: str, translate: Callable[[str], str] = _as_is
) -> str | None:
    """``advice`` for a failure class given by its value (an attempt's JSON, where a failed
    attempt without one is a ``user_error``); None for a value usina does not know."""
    try:
        failure = FailureClass(failure_class or FailureClass.USER_ERROR.value)
    except ValueError:
        return None
    return advice(failure, run_id, translate)


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    delay: float  # seconds before the next attempt
    resources: Resources  # resources of the next attempt
    reason: str  # why, in words


def decide(policy: Retry, failures: Sequence[FailureClass], resources: Resources) -> Decision:
    """Decide what follows the last of ``failures`` (the step's counted failed attempts)."""
    if not failures:
        raise ValueError("decide() needs at least one failure")
    last = failures[-1]
    if last is FailureClass.CANCELLED:
        return Decision(False, 0.0, resources, N_("cancelled by a user"))
    if last is FailureClass.UNSCHEDULABLE:
        return Decision(False, 0.0, resources, N_("no node can run it as asked"))
    if last.is_disruption:
        count = sum(1 for f in failures if f.is_disruption)
    else:
        count = sum(1 for f in failures if f is last)
    budget = policy.budget(last)
    if count > budget:
        gave_up = (
            N_("gave up after {count} disruptions (retry budget {budget})")
            if last.is_disruption
            else N_("gave up after {count} {failure} failures (retry budget {budget})")
        )
        return Decision(
            False,
            0.0,
            resources,
            gave_up.format(count=count, failure=last.value, budget=budget),
        )
    if last.is_disruption:
        delay = policy.backoff
    else:
        delay = min(policy.backoff_max, policy.backoff * policy.backoff_factor ** (count - 1))
    if last is FailureClass.OOM:
        current = resources
        now_bytes = current.memory_bytes
        grown = math.ceil(now_bytes * policy.oom_grow)
        if policy.max_memory is not None:
            cap = memory_bytes(policy.max_memory)
            if now_bytes >= cap:
                return Decision(
                    False,
                    0.0,
                    resources,
                    N_("out of memory at the cap max_memory={cap}").format(cap=policy.max_memory),
                )
            grown = min(grown, cap)
        bigger = current.with_memory(grown)
        return Decision(
            True,
            delay,
            bigger,
            N_("retry {count}/{budget} with memory {before} -> {after}").format(
                count=count, budget=budget, before=current.memory, after=bigger.memory
            ),
        )
    reason = N_("retry {count}/{budget} after {failure}")
    return Decision(
        True, delay, resources, reason.format(count=count, budget=budget, failure=last.value)
    )
