"""The rollout state machine on a fake clock: canary steps, sticky keys, gates, shadow."""

from __future__ import annotations

import random

import pytest

from usina.serving.rollout import Arm, Gates, Mode, Rollout, RolloutPolicy, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(mode: Mode = Mode.CANARY, **gates: float) -> tuple[Rollout, Clock]:
    clock = Clock()
    policy = RolloutPolicy(mode=mode, steps=(5, 25, 50, 100), step_s=60.0, gates=Gates(**gates))
    return Rollout(policy, champion_version="1", challenger_version="2", clock=clock), clock


def traffic(rollout: Rollout, n: int, challenger_error: float = 0.0, seed: int = 0) -> int:
    """n keyed requests; the challenger fails a share of its own. Returns challenger answers."""
    rng = random.Random(seed)
    served = 0
    for i in range(n):
        arm = rollout.arm_for(f"merchant-{seed}-{i}")
        ok = not (arm is Arm.CHALLENGER and rng.random() < challenger_error)
        served += arm is Arm.CHALLENGER
        rollout.record(arm, ok=ok, latency_s=0.002, score=0.1)
        if rollout.shadowing:
            rollout.record(Arm.CHALLENGER, ok=ok, latency_s=0.002, score=0.1)
    return served


def test_a_good_challenger_steps_up_and_is_promoted():
    rollout, clock = make()
    seen = []
    for step in range(4):
        seen.append(rollout.percent)
        traffic(rollout, 6000, seed=step)
        assert rollout.evaluate() is None  # the step is not over yet
        clock.now += 60
        decision = rollout.evaluate()
        assert decision is not None
        assert decision.action == ("promote" if step == 3 else "advance")
    assert seen == [5, 25, 50, 100]
    assert rollout.state is State.PROMOTED
    assert rollout.percent == 100
    assert [d.action for d in rollout.decisions] == ["advance"] * 3 + ["promote"]


def test_a_challenger_failing_5_percent_is_rolled_back_without_waiting():
    rollout, clock = make()
    traffic(rollout, 6000, seed=1)
    clock.now += 60
    assert rollout.evaluate().action == "advance"  # 25 % now
    traffic(rollout, 2000, challenger_error=0.05, seed=2)
    clock.now += 5  # well inside the step: a failed gate does not wait for its end
    decision = rollout.evaluate()
    assert decision is not None
    assert decision.action == "rollback"
    assert "error rate" in decision.reason
    assert 0.03 < decision.measurements["challenger_error_rate"] < 0.08
    assert rollout.state is State.ROLLED_BACK
    assert rollout.percent == 0
    assert all(rollout.arm_for(f"k{i}") is Arm.CHAMPION for i in range(200))
    assert rollout.evaluate() is None  # decided once


def test_too_few_samples_is_inconclusive_never_a_pass():
    rollout, clock = make(min_samples=100)
    traffic(rollout, 400, seed=3)  # ~20 challenger requests at 5 %
    clock.now += 60
    decision = rollout.evaluate()
    assert decision is not None
    assert decision.action == "hold"
    assert "inconclusive" in decision.reason
    assert rollout.percent == 5
    assert rollout.state is State.RUNNING


def test_routing_is_sticky_and_a_bigger_share_only_moves_new_keys():
    rollout, clock = make()
    keys = [f"merchant-{i}" for i in range(2000)]
    first = {k: rollout.arm_for(k) for k in keys}
    assert first == {k: rollout.arm_for(k) for k in keys}  # sticky
    share = sum(a is Arm.CHALLENGER for a in first.values()) / len(keys)
    assert 0.02 < share < 0.09
    traffic(rollout, 6000, seed=4)
    clock.now += 60
    rollout.evaluate()
    second = {k: rollout.arm_for(k) for k in keys}
    assert all(second[k] is Arm.CHALLENGER for k in keys if first[k] is Arm.CHALLENGER)
    assert 0.18 < sum(a is Arm.CHALLENGER for a in second.values()) / len(keys) < 0.32


def test_latency_and_score_drift_gates():
    rollout, _ = make(max_p99_ms=50.0)
    for i in range(300):
        rollout.record(Arm.CHAMPION, ok=True, latency_s=0.002, score=0.1)
        rollout.record(Arm.CHALLENGER, ok=True, latency_s=0.2 if i % 10 == 0 else 0.002, score=0.1)
    assert "p99 latency" in rollout.evaluate().reason
    rollout, _ = make(max_score_drift=0.05)
    for _ in range(300):
        rollout.record(Arm.CHAMPION, ok=True, latency_s=0.002, score=0.1)
        rollout.record(Arm.CHALLENGER, ok=True, latency_s=0.002, score=0.3)
    decision = rollout.evaluate()
    assert decision.action == "rollback"
    assert "score drift" in decision.reason


def test_shadow_never_answers_and_is_still_judged():
    rollout, clock = make(mode=Mode.SHADOW)
    assert all(rollout.arm_for(f"k{i}") is Arm.CHAMPION for i in range(500))
    assert rollout.percent == 0
    traffic(rollout, 500, seed=5)  # every request is shadowed
    clock.now += 60
    assert rollout.evaluate().action == "advance"


def test_bad_policies_are_refused():
    with pytest.raises(ValueError, match="increase"):
        RolloutPolicy(steps=(50, 10))
    with pytest.raises(ValueError, match="percentages"):
        RolloutPolicy(steps=(0, 10))
