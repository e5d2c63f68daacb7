"""Kueue admission phases: a step waiting for quota, for nodes (ProvisioningRequest), or for
another admission check is reported as such, with how long; each phase has its own timeout;
a step in provisioning is never failed as unschedulable. Status shapes follow Kueue's Workload
(``status.conditions``, ``status.admissionChecks``, ``status.requeueState``) and
cluster-autoscaler's ProvisioningRequest (``autoscaling.x-k8s.io/v1`` conditions)."""

from __future__ import annotations

from typing import Any

from usina.backends.kubernetes.admission import (
    Admission,
    AdmissionPhase,
    PhaseTimeouts,
    admission_of,
    pending_observation,
    request_state,
    workload_job_name,
)
from usina.backends.kubernetes.classify import classify
from usina.engine.ports import TaskState
from usina.sdk.retry import FailureClass

Obj = dict[str, Any]
T0 = 1_790_000_000.0


def ts(offset: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0 + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(ctype: str, status: str, at: float, reason: str = "", message: str = "") -> Obj:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": ts(at),
    }


def workload(*conditions: Obj, checks: list[Obj] | None = None, **extra: Any) -> Obj:
    obj: Obj = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {
            "name": "job-r1-train-1-3f2a1",
            "namespace": "risk-ml",
            "creationTimestamp": ts(0),
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "r1-train-1", "uid": "u1"}
            ],
        },
        "spec": {"active": True, "queueName": "risk", "podSets": []},
        "status": {"conditions": list(conditions)},
    }
    if checks is not None:
        obj["status"]["admissionChecks"] = checks
    obj["status"].update(extra)
    return obj


SHORT_QUOTA = cond(
    "QuotaReserved",
    "False",
    5,
    "Pending",
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu "
    "in flavor h100-on-demand, 4 more needed",
)
RESERVED = cond("QuotaReserved", "True", 60, "QuotaReserved", "Quota reserved in ClusterQueue risk")


def provisioning_check(state: str, at: float, message: str = "") -> Obj:
    return {
        "name": "gpu-provisioning",
        "state": state,
        "lastTransitionTime": ts(at),
        "message": message,
    }


def suspended_job() -> Obj:
    return {
        "metadata": {"name": "r1-train-1", "creationTimestamp": ts(0)},
        "spec": {"suspend": True},
        "status": {"conditions": [cond("Suspended", "True", 0, "JobSuspended", "Job suspended")]},
    }


def test_no_workload_is_queued_and_says_nothing() -> None:
    assert admission_of(None).phase is AdmissionPhase.QUEUED
    assert pending_observation(admission_of(None), now=T0) is None


def test_pending_in_quota_says_why_and_for_how_long() -> None:
    adm = admission_of(workload(SHORT_QUOTA))
    assert adm.phase is AdmissionPhase.PENDING_QUOTA
    assert adm.since == T0 + 5
    obs = pending_observation(adm, now=T0 + 125)
    assert obs is not None
    assert obs.state is TaskState.PENDING
    assert obs.reason == "PendingQuota"
    assert "for 120 s" in (obs.message or "")
    assert "4 more needed" in (obs.message or "")
    # no quota timeout by default; with one, the phase fails as unschedulable, naming the limit
    late = pending_observation(adm, now=T0 + 10_000, timeouts=PhaseTimeouts(quota=600))
    assert late is not None
    assert late.state is TaskState.FAILED
    assert late.failure_class is FailureClass.UNSCHEDULABLE
    assert late.reason == "QuotaTimeout"
    assert "limit 600 s" in (late.message or "")


def test_provisioning_is_its_own_phase_with_the_request_state() -> None:
    wl = workload(
        RESERVED,
        cond("Admitted", "False", 60, "NoReservation"),
        checks=[provisioning_check("Pending", 61, "Waiting for ProvisioningRequest to be ready")],
    )
    adm = admission_of(wl)
    assert adm.phase is AdmissionPhase.PROVISIONING
    assert adm.check == "gpu-provisioning"
    assert adm.request_state is None
    assert adm.since == T0 + 61
    request = {
        "apiVersion": "autoscaling.x-k8s.io/v1",
        "kind": "ProvisioningRequest",
        "status": {
            "conditions": [
                cond("Accepted", "True", 62, "Accepted"),
                cond("Provisioned", "False", 62, "Provisioning", "scaling up 2 nodes"),
            ]
        },
    }
    adm = admission_of(wl, request=request)
    assert adm.request_state == "Accepted"
    obs = pending_observation(adm, now=T0 + 361)
    assert obs is not None
    assert (obs.state, obs.reason) == (TaskState.PENDING, "Provisioning")
    assert "waiting for nodes for 300 s: ProvisioningRequest Accepted" in (obs.message or "")


def test_a_step_in_provisioning_is_not_timed_out_as_unschedulable() -> None:
    wl = workload(RESERVED, checks=[provisioning_check("Pending", 61)])
    now = T0 + 1800  # far past a 600 s queue timeout, inside the 1 h provisioning timeout
    verdict = classify(suspended_job(), [], now=now, queue_timeout=600)
    assert verdict.observation.state is TaskState.PENDING
    obs = pending_observation(admission_of(wl), now=now)
    assert obs is not None
    assert obs.state is TaskState.PENDING
    assert obs.reason == "Provisioning"
    assert obs.failure_class is None
    # its own timeout: an infra failure, not unschedulable
    late = pending_observation(admission_of(wl), now=T0 + 61 + 3600)
    assert late is not None
    assert (late.state, late.failure_class, late.reason) == (
        TaskState.FAILED,
        FailureClass.INFRA,
        "ProvisioningTimeout",
    )


def test_failed_provisioning_retries_then_gives_up() -> None:
    retry = workload(RESERVED, checks=[provisioning_check("Retry", 90, "Failed: out of stock")])
    adm = admission_of(retry)
    assert (adm.phase, adm.request_state) == (AdmissionPhase.PROVISIONING, "Failed")
    obs = pending_observation(adm, now=T0 + 100)
    assert obs is not None
    assert obs.state is TaskState.PENDING
    rejected = workload(
        RESERVED, checks=[provisioning_check("Rejected", 900, "max retries reached")]
    )
    gave_up = pending_observation(admission_of(rejected), now=T0 + 901)
    assert gave_up is not None
    assert (gave_up.state, gave_up.failure_class, gave_up.reason) == (
        TaskState.FAILED,
        FailureClass.INFRA,
        "ProvisioningFailed",
    )
    assert "max retries reached" in (gave_up.message or "")


def test_request_state_is_the_latest_true_condition() -> None:
    request = {
        "status": {
            "conditions": [
                cond("Accepted", "True", 10),
                cond("Provisioned", "True", 100),
                cond("BookingExpired", "True", 700),
                cond("Failed", "False", 5),
            ]
        }
    }
    assert request_state(request) == "BookingExpired"
    assert request_state(None) is None
    assert request_state({"status": {}}) is None


def test_other_admission_checks_and_admitted() -> None:
    other = workload(RESERVED, checks=[{"name": "multikueue", "state": "Pending", "message": "x"}])
    adm = admission_of(other)
    assert (adm.phase, adm.check) == (AdmissionPhase.ADMISSION_CHECK, "multikueue")
    obs = pending_observation(adm, now=T0 + 70)
    assert obs is not None
    assert obs.reason == "AdmissionCheck"
    admitted = workload(RESERVED, cond("Admitted", "True", 200, "Admitted"))
    assert admission_of(admitted).phase is AdmissionPhase.ADMITTED
    assert pending_observation(admission_of(admitted), now=T0 + 300) is None


def test_a_preempted_workload_back_in_the_queue_says_so() -> None:
    wl = workload(
        cond("QuotaReserved", "False", 500, "Pending", "insufficient quota"),
        cond("Evicted", "True", 500, "Preempted", "Preempted to accommodate a workload"),
        cond("Preempted", "True", 500, "InCohortReclamation", "reclaimed by team fraud"),
        requeueState={"count": 2},
    )
    adm = admission_of(wl)
    assert adm == Admission(
        AdmissionPhase.PENDING_QUOTA,
        since=T0 + 500,
        message="insufficient quota",
        evicted="Preempted",
        preempted="InCohortReclamation",
        requeues=2,
    )
    obs = pending_observation(adm, now=T0 + 560)
    assert obs is not None
    assert "evicted earlier (InCohortReclamation; requeued 2x)" in (obs.message or "")


def test_a_deactivated_workload_fails_with_what_to_do() -> None:
    wl = workload(cond("Evicted", "True", 50, "Deactivated", "The workload is deactivated"))
    wl["spec"]["active"] = False
    obs = pending_observation(admission_of(wl), now=T0 + 60)
    assert obs is not None
    assert (obs.state, obs.reason) == (TaskState.FAILED, "Deactivated")
    assert "resume the run" in (obs.message or "")


def test_workload_job_name() -> None:
    assert workload_job_name(workload()) == "r1-train-1"
    assert workload_job_name({"metadata": {}}) is None
