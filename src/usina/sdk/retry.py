"""Failure classes and the retry policy a step declares for each of them.

The engine applies the policy (``usina.engine.policy``); this module only describes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import assert_never

from usina.i18n import N_


class FailureClass(enum.StrEnum):
    """Why an attempt did not produce its step's result (see DESIGN.md, "Attempts")."""

    USER_ERROR = "user_error"  # the step's code raised or exited non-zero
    OOM = "oom"  # killed for using more memory than its limit
    PREEMPTED = "preempted"  # evicted to make room for other work; not the step's fault
    NODE_LOST = "node_lost"  # the machine or process host went away
    INFRA = "infra"  # the platform could not start it (image pull, config, admission)
    UNSCHEDULABLE = "unschedulable"  # no node can ever take it as asked
    TIMEOUT = "timeout"  # ran past its deadline
    CANCELLED = "cancelled"  # a user asked to stop

    @property
    def is_disruption(self) -> bool:
        """Disruptions do not use the user's retry budget."""
        return self in (FailureClass.PREEMPTED, FailureClass.NODE_LOST)


@dataclass(frozen=True, slots=True)
class Retry:
    """How many times to retry a step after each kind of failure, and how long to wait.

    user: retries after ``user_error`` (default 0: a bug fails fast).
    oom: retries after ``oom``; each multiplies the memory by ``oom_grow``, up to ``max_memory``.
    infra: retries after ``infra`` failures (image pull, admission), with backoff.
    timeout: retries after ``timeout`` (default 0).
    max_disruptions: ``preempted`` + ``node_lost`` attempts tolerated; not charged to ``user``.
    backoff: seconds before the first retry of a class; each further one multiplies it by
        ``backoff_factor``, capped at ``backoff_max``. Disruptions retry after ``backoff`` flat.
    """

    user: int = 0
    oom: int = 2
    oom_grow: float = 1.5
    max_memory: str | None = None
    infra: int = 3
    timeout: int = 0
    max_disruptions: int = 20
    backoff: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 300.0

    def problems(self) -> list[str]:
        found: list[str] = []
        for name in ("user", "oom", "infra", "timeout", "max_disruptions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                said = N_("retry {name}={value!r} must be a whole number >= 0")
                found.append(said.format(name=name, value=value))
        if self.oom_grow < 1.0:
            found.append(N_("retry oom_grow={value!r} must be >= 1.0").format(value=self.oom_grow))
        if self.backoff < 0 or self.backoff_factor < 1 or self.backoff_max < 0:
            found.append(N_("retry backoff must be >= 0 and backoff_factor >= 1"))
        return found

    def budget(self, failure: FailureClass) -> int:
        """How many retries the policy allows after failures of this class."""
        match failure:
            case FailureClass.USER_ERROR:
                return self.user
            case FailureClass.OOM:
                return self.oom
            case FailureClass.INFRA:
                return self.infra
            case FailureClass.TIMEOUT:
                return self.timeout
            case FailureClass.PREEMPTED | FailureClass.NODE_LOST:
                return self.max_disruptions
            case FailureClass.UNSCHEDULABLE | FailureClass.CANCELLED:
                return 0
            case _:
                assert_never(failure)

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Retry:
        return cls(**data)  # type: ignore[arg-type]
