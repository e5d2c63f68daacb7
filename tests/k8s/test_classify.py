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


# ---- gangs: which failed pod of an Indexed Job caused its failure -------------------------------


def _rank_pod(index: int, code: int, *, reason: str = "Error", **extra: object) -> dict:
    pod = _pod(
        "Failed",
        state={
            "terminated": {"exitCode": code, "reason": reason, "startedAt": T0, "finishedAt": T0}
        },
        conditions=list(extra.pop("conditions", [])),  # type: ignore[call-overload]
    )
    pod["metadata"] = {
        "name": f"j-{index}-abcde",
        "creationTimestamp": T0,
        "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        **extra,
    }
    return pod


def _failed_gang(reason: str = "BackoffLimitExceeded", message: str = "") -> dict:
    job = _failed_job(reason, message)
    job["spec"]["completionMode"] = "Indexed"
    return job


STOPPED = {"deletionTimestamp": T0}  # deleted by the Job controller after the gang failed
DISRUPTED = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]


def _cause(job: dict, pods: list[dict], seen: dict[str, int] | None = None) -> tuple[str, object]:
    verdict = classify(job, pods, now=NOW, queue_timeout=60, seen=seen)
    return str(verdict.pod), verdict.observation.failure_class


def test_gang_cause_is_not_a_pod_the_job_controller_stopped() -> None:
    pods = [_rank_pod(0, 143, **STOPPED), _rank_pod(1, 1), _rank_pod(2, 143, **STOPPED)]
    assert _cause(_failed_gang(), pods) == ("j-1-abcde", FailureClass.USER_ERROR)


def test_gang_cause_is_the_disruption_even_if_a_peer_crashed_first() -> None:
    # The preempted pod's peers crash in their collectives (exit 1), maybe seen first.
    pods = [_rank_pod(0, 1), _rank_pod(1, 143, conditions=DISRUPTED, **STOPPED)]
    seen = {"j-0-abcde": 0, "j-1-abcde": 1}
    assert _cause(_failed_gang(), pods, seen) == ("j-1-abcde", FailureClass.PREEMPTED)


def test_gang_cause_oom_kill_before_crash_and_first_seen_among_equals() -> None:
    pods = [_rank_pod(0, 1), _rank_pod(1, 137, reason="OOMKilled")]
    assert _cause(_failed_gang(), pods) == ("j-1-abcde", FailureClass.OOM)
    pods = [_rank_pod(0, 1), _rank_pod(1, 1)]
    assert _cause(_failed_gang(), pods, {"j-1-abcde": 0, "j-0-abcde": 1})[0] == "j-1-abcde"
    assert _cause(_failed_gang(), pods)[0] == "j-0-abcde"  # else the lowest index


def test_gang_cause_named_by_the_failjob_rule() -> None:
    message = "Container main for pod ml/j-2-abcde failed with exit code 42 matching FailJob rule"
    pods = [_rank_pod(0, 1), _rank_pod(2, 42)]
    job = _failed_gang("PodFailurePolicy", message)
    assert _cause(job, pods) == ("j-2-abcde", FailureClass.USER_ERROR)


def test_rank_lost_exit_code_is_node_lost() -> None:
    cls, code, reason, _ = pod_failure(_rank_pod(0, 45))
    assert (cls, code, reason) == (FailureClass.NODE_LOST, 45, "RankLost")
