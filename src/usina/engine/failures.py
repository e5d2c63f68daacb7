"""Failure vocabulary: why an attempt failed, as one typed record and one classifier.

Every part of usina speaks ``FailureClass`` (``usina.sdk.retry``) and nothing else:

- ``ErrorRecord``: what the step runtime writes (``error.json``, one per failed attempt, and
  one per failed rank of a gang) and what the engine and every backend read back.
- ``exit_failure``: the ONE mapping from a process's end (exit code, signal, memory evidence)
  to a class, a reason and a message; the runtime's gang launcher, the local backend and the
  Kubernetes classifier all call it. ``exit_code_for`` is its inverse for the runtime.
- ``root_cause``: the ONE ranking that picks, among the failed members of a gang (local ranks,
  Kubernetes pods), the one that caused the gang to fail.

Adding a failure class touches three files: the enum and its retry budget
(``usina/sdk/retry.py``), its policy and advice (``usina/engine/policy.py``, exhaustive
``match`` statements that mypy checks), and, when a process end can signal it, the mapping
below (``exit_failure`` / ``exit_code_for``). ``tests/unit/test_policy.py`` fails for a class
without advice or policy.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from usina.engine.ports import EXIT_INFRA, EXIT_OK, EXIT_OOM, EXIT_RANK_LOST, EXIT_USER_ERROR
from usina.i18n import N_
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

T = TypeVar("T")

#: Signals that mean "killed from outside" (not the process's own doing).
LOST_SIGNALS = frozenset({_signal.SIGKILL, _signal.SIGTERM, _signal.SIGHUP})
#: A container's exit code for "killed by SIGKILL" (128 + 9).
EXIT_SIGKILL = 128 + _signal.SIGKILL

# Error records written before this vocabulary used short names; they stay readable.
_LEGACY_KINDS = {"user": FailureClass.USER_ERROR}
_TRACEBACK_LIMIT = 16000


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """Why an attempt (or one rank of it) failed, as the step runtime saw it.

    kind: the failure class the runtime gives it (the backend's observation may be more
        specific: a kill for memory, a deadline).
    type: the exception's type name ("ValueError"), or "RankLost"/"Signal" for a rank's end.
    message: one line, ``"<type>: <text>"``, prefixed with where (rank, pod) for a gang.
    traceback: the formatted traceback, its tail only.
    rank: the rank it is about, for a distributed step.
    at: when it happened (seconds since the epoch); orders the ranks of a gang.
    """

    kind: FailureClass
    type: str
    message: str
    traceback: str = ""
    rank: int | None = None
    at: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind.value,
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback[-_TRACEBACK_LIMIT:],
        }
        if self.rank is not None:
            data["rank"] = self.rank
        if self.at is not None:
            data["at"] = self.at
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ErrorRecord:
        """Read a stored record (older ones too); an unknown kind reads as a user error."""
        rank = data.get("rank")
        at = data.get("at")
        return cls(
            kind=parse_kind(data.get("kind")),
            type=str(data.get("type") or ""),
            message=str(data.get("message") or ""),
            traceback=str(data.get("traceback") or ""),
            rank=int(rank) if rank is not None else None,
            at=float(at) if at is not None else None,
        )


def parse_kind(value: object) -> FailureClass:
    """A stored ``kind`` as a class: today's names, or the short ones older records used."""
    text = str(value or "")
    legacy = _LEGACY_KINDS.get(text)
    if legacy is not None:
        return legacy
    try:
        return FailureClass(text)
    except ValueError:
        return FailureClass.USER_ERROR


@dataclass(frozen=True, slots=True)
class ExitFailure:
    """What a process's end says about its attempt."""

    failure: FailureClass
    reason: str  # short, CamelCase: "UserError", "MemoryError", "OOMKilled", "Signal", ...
    message: str  # what happened, in words


def exit_code_for(failure: FailureClass) -> int:
    """The step runtime's exit code for a failure it detected itself."""
    if failure is FailureClass.OOM:
        return EXIT_OOM
    if failure is FailureClass.INFRA:
        return EXIT_INFRA
    if failure is FailureClass.NODE_LOST:
        return EXIT_RANK_LOST
    return EXIT_USER_ERROR


def exit_failure(
    code: int | None,
    *,
    signal: int | None = None,
    memory_near_limit: bool | None = None,
    outside_kill: bool = False,
    fallback_reason: str = "Error",
) -> ExitFailure | None:
    """Classify how a process ended; ``None`` when it succeeded.

    code: its exit code (the runtime's reserved codes, ``usina.engine.ports.EXIT_*``, or any
        other); a container killed by a signal reports ``128 + signal``.
    signal: the signal that ended it, when known directly (a local process).
    memory_near_limit: whether it was near its memory limit when it died: ``True``/``False``
        where it was measured, ``None`` where nobody knows (a container's 137 then reads as the
        kernel's OOM killer, its most likely cause).
    outside_kill: it is a rank of a gang and its launcher did not send the signal: a
        SIGKILL/SIGTERM/SIGHUP then means the rank (its host) was lost.
    fallback_reason: the reason for an exit code that means nothing to usina (a container's own
        terminated reason, usually "Error").
    """
    if signal is None and code is not None and code == EXIT_SIGKILL:
        signal = _signal.SIGKILL
        code = None
    if signal is not None:
        name = _signal_name(signal)
        if outside_kill and signal in LOST_SIGNALS:
            return ExitFailure(
                FailureClass.NODE_LOST,
                "RankLost",
                N_("was killed by {signal} from outside").format(signal=name),
            )
        if signal == _signal.SIGKILL and memory_near_limit is not False:
            if memory_near_limit:
                return ExitFailure(
                    FailureClass.OOM, "OOMKilled", N_("killed by SIGKILL near its memory limit")
                )
            return ExitFailure(
                FailureClass.OOM,
                "Killed",
                N_(
                    "killed with SIGKILL (exit 137) without a disruption: most likely the memory "
                    "limit (the kernel's OOM killer), else a liveness kill"
                ),
            )
        return ExitFailure(
            FailureClass.USER_ERROR, "Signal", N_("killed by signal {signal}").format(signal=name)
        )
    if code == EXIT_OK:
        return None
    if code == EXIT_USER_ERROR:
        return ExitFailure(
            FailureClass.USER_ERROR,
            "UserError",
            N_(
                "the step raised an exception (exit {code}); the traceback is in the attempt's "
                "error record and log"
            ).format(code=code),
        )
    if code == EXIT_OOM:
        return ExitFailure(
            FailureClass.OOM,
            "MemoryError",
            N_("the step raised MemoryError (exit {code})").format(code=code),
        )
    if code == EXIT_INFRA:
        return ExitFailure(
            FailureClass.INFRA,
            "RuntimeError",
            N_(
                "the usina runtime could not load the task or its inputs, or write its outputs "
                "(exit {code})"
            ).format(code=code),
        )
    if code == EXIT_RANK_LOST:
        return ExitFailure(
            FailureClass.NODE_LOST,
            "RankLost",
            N_(
                "a rank of the gang was killed from outside (exit {code}); the gang was stopped"
            ).format(code=code),
        )
    if code is None:
        return ExitFailure(FailureClass.INFRA, fallback_reason, N_("it ended without an exit code"))
    return ExitFailure(
        FailureClass.USER_ERROR, fallback_reason, N_("exited with code {code}").format(code=code)
    )


def _signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass(frozen=True, slots=True)
class MemberEnd:
    """How one member of a gang (a rank, a pod) ended: the evidence ``root_cause`` ranks.

    failure: its class.
    platform: the platform itself said it stopped it (a Kubernetes ``DisruptionTarget``,
        an eviction): the strongest evidence of a cause from outside the gang.
    stopped_by_gang: it ended because the gang was being stopped (the launcher's SIGTERM,
        the Job controller deleting it): a consequence, never the cause.
    named: the controller's own message names it as the one that failed the gang.
    order: when it was seen to end (lower is earlier; several keys compare in turn).
    index: its rank or node index, the last tie-breaker.
    """

    failure: FailureClass
    platform: bool = False
    stopped_by_gang: bool = False
    named: bool = False
    order: tuple[float, ...] = (float("inf"),)
    index: int = 1 << 30


def cause_rank(end: MemberEnd) -> tuple[int, int, tuple[float, ...], int]:
    """Sort key: lower is more likely the cause. A disruption the platform reports first
    (its peers then crash in their collectives), then a kill (OOM, a rank lost), then a member
    that failed by itself, and last the ones stopped because the gang had failed."""
    if end.platform and end.failure.is_disruption:
        severity = 0
    elif end.stopped_by_gang:
        severity = 3
    elif end.failure is FailureClass.OOM or end.failure.is_disruption:
        severity = 1
    else:
        severity = 2
    return severity, 0 if end.named else 1, end.order, end.index


def root_cause(members: Sequence[T], evidence: Callable[[T], MemberEnd]) -> T:
    """The member of a failed gang that caused its failure (``members`` is not empty)."""
    if not members:
        raise ValueError("root_cause() needs at least one failed member")
    return min(members, key=lambda m: cause_rank(evidence(m)))


__all__ = [
    "EXIT_SIGKILL",
    "LOST_SIGNALS",
    "ErrorRecord",
    "ExitFailure",
    "MemberEnd",
    "cause_rank",
    "exit_code_for",
    "exit_failure",
    "parse_kind",
    "root_cause",
]
