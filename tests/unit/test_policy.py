"""The retry policy per failure class, as pure decisions."""

from __future__ import annotations

import pytest

from usina import FailureClass, Resources, Retry
from usina.engine.policy import advice, decide

F = FailureClass
RES = Resources(memory="1Gi")


def test_user_errors_fail_fast_by_default():
    d = decide(Retry(), [F.USER_ERROR], RES)
    assert not d.retry
    assert "gave up after 1 user_error" in d.reason


def test_user_retries_back_off_exponentially_and_stop_at_the_budget():
    policy = Retry(user=3, backoff=2.0, backoff_factor=3.0)
    delays = [decide(policy, [F.USER_ERROR] * n, RES).delay for n in (1, 2, 3)]
    assert delays == [2.0, 6.0, 18.0]
    assert not decide(policy, [F.USER_ERROR] * 4, RES).retry


def test_backoff_is_capped():
    policy = Retry(user=10, backoff=10.0, backoff_factor=10.0, backoff_max=60.0)
    assert decide(policy, [F.USER_ERROR] * 3, RES).delay == 60.0


def test_oom_grows_memory_up_to_the_cap():
    policy = Retry(oom=3, oom_grow=1.5, max_memory="2Gi")
    first = decide(policy, [F.OOM], RES)
    assert first.retry
    assert first.resources.memory == "1536Mi"
    second = decide(policy, [F.OOM, F.OOM], first.resources)
    assert second.resources.memory == "2Gi"  # clamped
    third = decide(policy, [F.OOM] * 3, second.resources)
    assert not third.retry
    assert "max_memory=2Gi" in third.reason


def test_disruptions_do_not_use_the_user_budget():
    policy = Retry(user=0, max_disruptions=2)
    history = [F.PREEMPTED, F.NODE_LOST]
    assert decide(policy, history, RES).retry
    assert not decide(policy, [*history, F.PREEMPTED], RES).retry
    # a user error after disruptions still has its own (zero) budget
    assert not decide(policy, [*history, F.USER_ERROR], RES).retry


def test_unschedulable_and_cancelled_never_retry():
    policy = Retry(user=5, infra=5)
    assert not decide(policy, [F.UNSCHEDULABLE], RES).retry
    assert not decide(policy, [F.CANCELLED], RES).retry


def test_infra_and_timeout_budgets():
    assert decide(Retry(), [F.INFRA] * 3, RES).retry
    assert not decide(Retry(), [F.INFRA] * 4, RES).retry
    assert not decide(Retry(), [F.TIMEOUT], RES).retry
    assert decide(Retry(timeout=1), [F.TIMEOUT], RES).retry


@pytest.mark.parametrize("failure", list(FailureClass))
def test_every_failure_class_has_advice_and_a_retry_budget(failure: FailureClass) -> None:
    # advice() and Retry.budget() are exhaustive matches: a class missing from either raises
    # here (and fails mypy's assert_never check).
    assert advice(failure, "r-1").strip()
    assert Retry().budget(failure) >= 0
