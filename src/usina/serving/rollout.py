"""Rollouts: a challenger version beside the champion, judged on live traffic, then promoted or
rolled back automatically.

Two modes. ``shadow``: every request is answered by the champion; the challenger scores a copy
and its answers are only measured and compared. ``canary``: a share of requests is answered by
the challenger; the share steps up (``steps``, one step per ``step_s`` seconds). Requests that
carry a route key (a header such as the merchant id) are sticky: the key is hashed into one of
100 buckets, and a bucket below the share goes to the challenger, so raising the share only
moves new buckets. At the end of each step the challenger is judged against the gates (error
rate, p99 latency, score drift from the champion over the same window): a failed gate rolls it
back at once; too few samples is *inconclusive* (hold, never pass); passing every step promotes
it. This module is the pure state machine on an injected clock; ``usina.serving.catalog`` wires
it to traffic and the registry.
"""

from __future__ import annotations

import enum
import math
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

BUCKETS = 100


class Mode(enum.StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"


class Arm(enum.StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"


class State(enum.StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Gates:
    """What a challenger must keep to pass a step (None: that gate is off).

    max_error_rate: failed requests / requests of the challenger (default 1 %).
    max_p99_ms: absolute ceiling of the challenger's p99 latency, in milliseconds.
    max_p99_ratio: the challenger's p99 may be at most this times the champion's, same window.
    max_score_drift: largest allowed |mean challenger score - mean champion score|.
    min_samples: challenger requests needed before a step is judged; fewer is inconclusive.
    """

    max_error_rate: float | None = 0.01
    max_p99_ms: float | None = None
    max_p99_ratio: float | None = 3.0
    max_score_drift: float | None = None
    min_samples: int = 100


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    """How a challenger is rolled out. steps: the canary's shares in percent, in order (shadow
    mode judges one window per step); step_s: seconds per step; route_header: the request
    header whose value makes routing sticky."""

    mode: Mode = Mode.CANARY
    steps: tuple[int, ...] = (5, 25, 50, 100)
    step_s: float = 60.0
    gates: Gates = field(default_factory=Gates)
    route_header: str = "x-usina-route-key"

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"rollout steps {self.steps} must be percentages in (0, 100]")
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"rollout steps {self.steps} must increase")


@dataclass(frozen=True, slots=True)
class Decision:
    """One judgement of a step: what was measured and what was done."""

    at: float
    action: str  # "advance", "promote", "rollback" or "hold" (inconclusive)
    step: int
    percent: int
    reason: str
    measurements: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "action": self.action,
            "step": self.step,
            "percent": self.percent,
            "reason": self.reason,
            "measurements": dict(self.measurements),
        }


@dataclass(slots=True)
class _Window:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    score_sum: float = 0.0
    scores: int = 0

    def add(self, ok: bool, latency_s: float, score: float | None) -> None:
        self.requests += 1
        self.errors += 0 if ok else 1
        if len(self.latencies) < 100_000:
            self.latencies.append(latency_s)
        if score is not None and math.isfinite(score):
            self.score_sum += score
            self.scores += 1

    def p99_ms(self) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def mean_score(self) -> float:
        return self.score_sum / self.scores if self.scores else math.nan


def bucket(key: str) -> int:
    """The sticky bucket (0-99) of a route key: stable across processes and restarts."""
    return zlib.crc32(key.encode()) % BUCKETS


class Rollout:
    """The state of one rollout. clock: seconds (monotonic); tests pass a fake one."""

    def __init__(
        self,
        policy: RolloutPolicy,
        *,
        champion_version: str,
        challenger_version: str,
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self.champion_version = champion_version
        self.challenger_version = challenger_version
        self.clock = clock
        self.state = State.RUNNING
        self.step = 0
        self.step_started = clock()
        self.decisions: list[Decision] = []
        self._windows = {Arm.CHAMPION: _Window(), Arm.CHALLENGER: _Window()}
        self._unkeyed = 0

    @property
    def percent(self) -> int:
        """The challenger's share of answers now (0 in shadow mode or once decided)."""
        if self.state is not State.RUNNING or self.policy.mode is Mode.SHADOW:
            return 100 if self.state is State.PROMOTED else 0
        return self.policy.steps[self.step]

    @property
    def shadowing(self) -> bool:
        return self.state is State.RUNNING and self.policy.mode is Mode.SHADOW

    def arm_for(self, key: str | None) -> Arm:
        """Which version answers a request with route key ``key`` (None: not sticky)."""
        percent = self.percent
        if percent <= 0:
            return Arm.CHAMPION
        if percent >= BUCKETS:
            return Arm.CHALLENGER
        if key is None:
            self._unkeyed += 1
            slot = (self._unkeyed * 37) % BUCKETS  # spreads evenly over the buckets
        else:
            slot = bucket(key)
        return Arm.CHALLENGER if slot < percent else Arm.CHAMPION

    def record(self, arm: Arm, *, ok: bool, latency_s: float, score: float | None) -> None:
        if self.state is State.RUNNING:
            self._windows[arm].add(ok, latency_s, score)

    def evaluate(self) -> Decision | None:
        """Judge the step if it is over (or failing already); None while there is nothing to
        decide. A failed gate rolls back at once, without waiting for the step's end."""
        if self.state is not State.RUNNING:
            return None
        now = self.clock()
        gates = self.policy.gates
        challenger, champion = self._windows[Arm.CHALLENGER], self._windows[Arm.CHAMPION]
        measured = {
            "challenger_requests": float(challenger.requests),
            "challenger_error_rate": (
                challenger.errors / challenger.requests if challenger.requests else math.nan
            ),
            "challenger_p99_ms": challenger.p99_ms(),
            "champion_p99_ms": champion.p99_ms(),
            "score_drift": abs(challenger.mean_score() - champion.mean_score()),
        }
        enough = challenger.requests >= gates.min_samples
        failure = self._failure(measured) if enough else None
        if failure is not None:
            return self._decide(now, "rollback", failure, measured)
        if now - self.step_started < self.policy.step_s:
            return None
        if not enough:
            reason = (
                f"inconclusive: {challenger.requests} challenger requests in the step, "
                f"{gates.min_samples} needed; holding at {self.percent}%"
            )
            self.step_started = now  # judge again after another step
            return self._decide(now, "hold", reason, measured)
        if self.step + 1 >= len(self.policy.steps):
            return self._decide(now, "promote", "every step passed its gates", measured)
        return self._decide(now, "advance", f"step {self.step + 1} passed its gates", measured)

    def _failure(self, m: dict[str, float]) -> str | None:
        gates = self.policy.gates
        rate = m["challenger_error_rate"]
        if gates.max_error_rate is not None and rate > gates.max_error_rate:
            return f"error rate {rate:.2%} > {gates.max_error_rate:.2%}"
        p99, base = m["challenger_p99_ms"], m["champion_p99_ms"]
        if gates.max_p99_ms is not None and p99 > gates.max_p99_ms:
            return f"p99 latency {p99:.1f} ms > {gates.max_p99_ms:.1f} ms"
        ceiling = (gates.max_p99_ratio or math.inf) * base if base > 0 else math.inf
        if p99 > ceiling:  # NaN (no data) compares false: never a failure, never a pass
            return f"p99 latency {p99:.1f} ms > {gates.max_p99_ratio} x champion's {base:.1f} ms"
        drift = m["score_drift"]
        if gates.max_score_drift is not None and drift > gates.max_score_drift:
            return f"score drift {drift:.4f} > {gates.max_score_drift}"
        return None

    def _decide(self, now: float, action: str, reason: str, measured: dict[str, float]) -> Decision:
        decision = Decision(now, action, self.step, self.percent, reason, measured)
        self.decisions.append(decision)
        if action == "rollback":
            self.state = State.ROLLED_BACK
        elif action == "promote":
            self.state = State.PROMOTED
        elif action == "advance":
            self.step += 1
            self.step_started = now
            self._windows = {Arm.CHAMPION: _Window(), Arm.CHALLENGER: _Window()}
        return decision
