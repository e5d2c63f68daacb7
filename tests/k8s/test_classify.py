"""Classification rules on raw status shapes (no server): the cases where the order of the
checks decides the class."""

from __future__ import annotations

import random

from usina.backends.kubernetes.classify import classify, pod_failure, unschedulable_hint
from usina.backends.kubernetes.informer import Backoff
from usina.engine.ports import TaskState
from usina.sdk.retry import FailureClass

T0 = "2026-01-01T00:00:00Z"
NOW = 1767225600.0  # T0


def _pod(phase: str, *, state: dict, conditions: list | None = None, **status: object) -> dict:
    return {
        "metadata": {"name": "p-1", "creationTimestamp": T0, "resourceVersion": "5"},
        "status": {
            "phase": phase,
            "conditions": conditions or [],
            "containerStatuses": [{"name": "main", "state": state}],
            **status,
        },
    }


def _failed_job(reason: str, message: str = "") -> dict:
    return {
        "metadata": {"name": "j"},
        "spec": {"activeDeadlineSeconds": 60},
        "status": {
            "startTime": T0,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": T0,
                }
            ],
        },
    }


def test_137_with_disruption_is_preemption_not_oom() -> None:
    pod = _pod(
        "Failed",
        state={"terminated": {"exitCode": 137, "reason": "Error"}},
        conditions=[
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": "preempting",
            }
        ],
    )
    cls, code, reason, _ = pod_failure(pod)
    assert (cls, code, reason) == (FailureClass.PREEMPTED, 137, "PreemptionByScheduler")


def test_pod_gc_node_loss_with_stale_running_state() -> None:
    pod = _pod(
        "Failed",
        state={"running": {"startedAt": T0}},
        conditions=[
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists",
            }
        ],
    )
    assert pod_failure(pod)[0] is FailureClass.NODE_LOST


def test_deadline_kill_is_timeout_not_oom() -> None:
    pod = _pod(
        "Failed", state={"terminated": {"exitCode": 137, "reason": "Error", "startedAt": T0}}
    )
    obs = classify(_failed_job("DeadlineExceeded"), [pod], now=NOW, queue_timeout=600).observation
    assert obs.failure_class is FailureClass.TIMEOUT


def test_failed_job_without_pods_reads_the_exit_code_from_the_message() -> None:
    job = _failed_job(
        "PodFailurePolicy",
        "Container main for pod ml/p-1 failed with exit code 43 matching FailJob rule at index 1",
    )
    obs = classify(job, [], now=NOW, queue_timeout=600).observation
    assert (obs.failure_class, obs.exit_code) == (FailureClass.OOM, 43)


def test_err_image_pull_alone_is_still_pending() -> None:
    job = {"metadata": {"name": "j"}, "spec": {}, "status": {"startTime": T0, "active": 1}}
    pod = _pod("Pending", state={"waiting": {"reason": "ErrImagePull", "message": "timeout"}})
    verdict = classify(job, [pod], now=NOW, queue_timeout=600)
    assert verdict.observation.state is TaskState.PENDING
    assert not verdict.stop_job


def test_suspended_job_is_queued() -> None:
    job = {"metadata": {"name": "j"}, "spec": {"suspend": True}, "status": {}}
    obs = classify(job, [], now=NOW, queue_timeout=600).observation
    assert (obs.state, obs.reason) == (TaskState.PENDING, "Suspended")


def test_unschedulable_hint_names_the_resource() -> None:
    message = (
        "0/5 nodes are available: 2 Insufficient nvidia.com/gpu, 3 node(s) didn't match "
        "Pod's node affinity/selector."
    )
    hint = unschedulable_hint(message)
    assert "nvidia.com/gpu" in hint
    assert "node affinity" in hint


def test_backoff_is_capped_full_jitter() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    delays = [backoff.next() for _ in range(10)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert backoff.next(at_least=3.0) >= 3.0
    backoff.reset()
    assert backoff.next() <= 0.5
