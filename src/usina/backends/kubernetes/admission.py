"""Where a queued attempt stands in Kueue's admission: waiting for quota, waiting for nodes
(a ProvisioningRequest), waiting for another admission check, admitted, or deactivated.

Kueue keeps a Job suspended until its Workload is admitted, and admission has two phases: quota
reservation, then admission checks. With the ProvisioningRequest check (cluster-autoscaler),
the second phase is "the autoscaler is adding nodes", which can take minutes and is neither a
full queue nor a pod no node can take. ``admission_of`` reads the Workload (and, when known,
its ProvisioningRequest) into an ``Admission``; ``pending_observation`` turns that into what the
backend reports for a suspended Job: ``PendingQuota`` / ``Provisioning`` (with the request's
state and for how long) / ``AdmissionCheck``, or a failure when a phase ran past its own
timeout, when provisioning was given up, or when the Workload was deactivated. The unschedulable
timer (``queue_timeout``, classify.py) only starts once pods exist, that is after admission, so
a step waiting for nodes is never failed as unschedulable.

Pure functions over the Kubernetes JSON; the backend supplies the objects (a Workload is found
by ``workload_job_name``: Kueue owns one Workload per Job, with an ownerReference to it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usina.backends.kubernetes.classify import parse_time
from usina.engine.ports import Observation, TaskState
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from collections.abc import Collection

Obj = dict[str, Any]
#: The AdmissionCheck controller of cluster-autoscaler's ProvisioningRequest integration.
PROVISIONING_CONTROLLER = "kueue.x-k8s.io/provisioning-request"
#: ProvisioningRequest conditions (autoscaling.x-k8s.io/v1), the latest True one wins.
REQUEST_STATES = ("Accepted", "Provisioned", "Failed", "BookingExpired", "CapacityRevoked")


class AdmissionPhase(enum.StrEnum):
    QUEUED = "queued"  # no Workload yet (Kueue has not seen the Job), or no Kueue
    PENDING_QUOTA = "pending_quota"  # waiting for the team's quota (or a borrowable share)
    PROVISIONING = "provisioning"  # quota reserved; the autoscaler is adding nodes
    ADMISSION_CHECK = "admission_check"  # quota reserved; another admission check pending
    ADMITTED = "admitted"
    DEACTIVATED = "deactivated"  # spec.active=false: evicted for good, never requeued
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class Admission:
    """One Workload's admission, as read from its status.

    since: when the current phase began (epoch seconds), when known.
    check: the admission check the workload waits on (provisioning or other).
    check_state: that check's state: Pending, Ready, Retry or Rejected.
    request_state: the ProvisioningRequest's latest condition (Accepted, Provisioned, Failed,
        BookingExpired, CapacityRevoked), or None before the autoscaler answered.
    message: Kueue's words (why quota is short, what the autoscaler said).
    evicted / preempted: the reasons of the last eviction (``Preempted``, ``PodsReadyTimeout``)
        and preemption (``InClusterQueue``, ``InCohortReclamation``, ...), when there was one.
    requeues: how many times the Workload was requeued after an eviction.
    """

    phase: AdmissionPhase
    since: float | None = None
    check: str | None = None
    check_state: str | None = None
    request_state: str | None = None
    message: str = ""
    evicted: str | None = None
    preempted: str | None = None
    requeues: int = 0


@dataclass(frozen=True, slots=True)
class PhaseTimeouts:
    """How long an attempt may wait in each admission phase before it fails.

    quota: waiting for the team's quota; None (default) waits as long as the queue holds it,
        since a full queue is normal and clears by itself.
    provisioning: waiting for the autoscaler to add nodes (default 1 h; cluster-autoscaler's own
        retries are 3 x up to 30 min).
    check: waiting for any other admission check (default 1 h).
    """

    quota: float | None = None
    provisioning: float | None = 3600.0
    check: float | None = 3600.0


def _condition(obj: Obj, ctype: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def _true(obj: Obj, ctype: str) -> Obj | None:
    cond = _condition(obj, ctype)
    return cond if cond is not None and cond.get("status") == "True" else None


def evicted_reason(workload: Obj | None) -> str | None:
    """Kueue's reason while the Workload stands evicted or preempted (``Evicted``/``Preempted``
    condition True), e.g. ``Preempted: InClusterQueue``; None otherwise."""
    if workload is None:
        return None
    found = [
        f"{ctype}: {cond.get('reason') or ctype}"
        for ctype in ("Evicted", "Preempted")
        if (cond := _true(workload, ctype)) is not None
    ]
    return "; ".join(found) or None


def workload_job_name(workload: Obj) -> str | None:
    """The name of the batch/v1 Job that owns this Workload, if one does."""
    for ref in (workload.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job" and str(ref.get("apiVersion", "")).startswith("batch/"):
            return str(ref.get("name"))
    return None


def request_state(request: Obj | None) -> str | None:
    """The state of a ProvisioningRequest: its most recent True condition among
    ``REQUEST_STATES``, else None (the autoscaler has not answered yet)."""
    if request is None:
        return None
    best: tuple[float, int, str] | None = None
    for cond in (request.get("status") or {}).get("conditions") or []:
        ctype = cond.get("type")
        if cond.get("status") != "True" or ctype not in REQUEST_STATES:
            continue
        when = parse_time(cond.get("lastTransitionTime")) or 0.0
        key = (when, REQUEST_STATES.index(ctype), str(ctype))
        if best is None or key > best:
            best = key
    return best[2] if best is not None else None


def admission_of(
    workload: Obj | None,
    *,
    provisioning_checks: Collection[str] = ("gpu-provisioning",),
    request: Obj | None = None,
) -> Admission:
    """Where ``workload`` stands; ``provisioning_checks`` names the AdmissionChecks whose
    controller is the ProvisioningRequest one (``QueueConfig.provisioning.name``), ``request``
    is the ProvisioningRequest Kueue made for it, when the caller has it."""
    if workload is None:
        return Admission(AdmissionPhase.QUEUED)
    status = workload.get("status") or {}
    created = parse_time((workload.get("metadata") or {}).get("creationTimestamp"))
    evicted = _condition(workload, "Evicted")
    preempted = _condition(workload, "Preempted")
    requeues = int((status.get("requeueState") or {}).get("count") or 0)
    common: dict[str, Any] = {
        "evicted": str(evicted.get("reason")) if evicted and evicted.get("reason") else None,
        "preempted": (
            str(preempted.get("reason")) if preempted and preempted.get("reason") else None
        ),
        "requeues": requeues,
    }
    if _true(workload, "Finished") is not None:
        return Admission(AdmissionPhase.FINISHED, **common)
    if (workload.get("spec") or {}).get("active") is False:
        cond = _condition(workload, "Evicted") or {}
        return Admission(
            AdmissionPhase.DEACTIVATED,
            since=parse_time(cond.get("lastTransitionTime")),
            message=str(cond.get("message") or "the Workload was deactivated (spec.active=false)"),
            **common,
        )
    admitted = _true(workload, "Admitted")
    if admitted is not None:
        return Admission(
            AdmissionPhase.ADMITTED, since=parse_time(admitted.get("lastTransitionTime")), **common
        )
    reserved = _true(workload, "QuotaReserved")
    if reserved is None:
        cond = _condition(workload, "QuotaReserved") or {}
        since = parse_time(cond.get("lastTransitionTime")) or created
        if evicted is not None and evicted.get("status") == "True":
            since = parse_time(evicted.get("lastTransitionTime")) or since
        return Admission(
            AdmissionPhase.PENDING_QUOTA,
            since=since,
            message=str(cond.get("message") or "waiting for the queue's quota"),
            **common,
        )
    reserved_at = parse_time(reserved.get("lastTransitionTime"))
    checks = [c for c in status.get("admissionChecks") or [] if c.get("state") != "Ready"]
    provisioning = [c for c in checks if c.get("name") in provisioning_checks]
    waiting = provisioning[0] if provisioning else (checks[0] if checks else None)
    if waiting is None:  # every check is Ready: Kueue sets Admitted in a moment
        return Admission(AdmissionPhase.ADMISSION_CHECK, since=reserved_at, **common)
    check_since = parse_time(waiting.get("lastTransitionTime"))
    since = max(t for t in (reserved_at, check_since, 0.0) if t is not None) or None
    state = str(waiting.get("state") or "Pending")
    message = str(waiting.get("message") or "")
    if waiting in provisioning:
        found = request_state(request)
        if found is None:
            found = {"Retry": "Failed", "Rejected": "Failed"}.get(state)
        return Admission(
            AdmissionPhase.PROVISIONING,
            since=since,
            check=str(waiting.get("name")),
            check_state=state,
            request_state=found,
            message=message,
            **common,
        )
    return Admission(
        AdmissionPhase.ADMISSION_CHECK,
        since=since,
        check=str(waiting.get("name")),
        check_state=state,
        message=message,
        **common,
    )


def _ago(now: float, since: float | None) -> str:
    return f" for {max(0.0, now - since):.0f} s" if since is not None else ""


def pending_observation(
    admission: Admission, *, now: float, timeouts: PhaseTimeouts | None = None
) -> Observation | None:
    """What to report for a suspended Job whose Workload is ``admission``; None when Kueue's
    admission says nothing (no Workload yet, or admitted: the pods tell the rest)."""
    timeouts = timeouts or PhaseTimeouts()
    phase = admission.phase
    waited = now - admission.since if admission.since is not None else 0.0
    notes = []
    if admission.preempted or admission.evicted:
        notes.append(
            f"evicted earlier ({admission.preempted or admission.evicted}; "
            f"requeued {admission.requeues}x)"
        )
    tail = ("; " + "; ".join(notes)) if notes else ""
    if phase is AdmissionPhase.PENDING_QUOTA:
        if timeouts.quota is not None and waited >= timeouts.quota:
            return Observation(
                TaskState.FAILED,
                FailureClass.UNSCHEDULABLE,
                reason="QuotaTimeout",
                message=(
                    f"waited {waited:.0f} s for the team's Kueue quota (limit "
                    f"{timeouts.quota:g} s): {admission.message}; ask for fewer resources, a "
                    f"larger quota, or a longer quota timeout{tail}"
                ),
            )
        return Observation(
            TaskState.PENDING,
            reason="PendingQuota",
            message=f"waiting for quota{_ago(now, admission.since)}: {admission.message}{tail}",
        )
    if phase is AdmissionPhase.PROVISIONING:
        state = admission.request_state or "requested"
        if admission.check_state == "Rejected":
            return Observation(
                TaskState.FAILED,
                FailureClass.INFRA,
                reason="ProvisioningFailed",
                message=(
                    f"the cluster autoscaler could not add the nodes (ProvisioningRequest "
                    f"{state}, check {admission.check} rejected after its retries): "
                    f"{admission.message}; try another GPU type or capacity type, or later"
                ),
            )
        if timeouts.provisioning is not None and waited >= timeouts.provisioning:
            return Observation(
                TaskState.FAILED,
                FailureClass.INFRA,
                reason="ProvisioningTimeout",
                message=(
                    f"waited {waited:.0f} s for the autoscaler to add nodes (limit "
                    f"{timeouts.provisioning:g} s; ProvisioningRequest {state}): "
                    f"{admission.message}"
                ),
            )
        return Observation(
            TaskState.PENDING,
            reason="Provisioning",
            message=(
                f"waiting for nodes{_ago(now, admission.since)}: ProvisioningRequest {state}"
                + (f" ({admission.message})" if admission.message else "")
                + tail
            ),
        )
    if phase is AdmissionPhase.ADMISSION_CHECK:
        if (
            admission.check is not None
            and timeouts.check is not None
            and (waited >= timeouts.check or admission.check_state == "Rejected")
        ):
            return Observation(
                TaskState.FAILED,
                FailureClass.INFRA,
                reason="AdmissionCheckFailed",
                message=(
                    f"admission check {admission.check} is {admission.check_state} after "
                    f"{waited:.0f} s: {admission.message}"
                ),
            )
        return Observation(
            TaskState.PENDING,
            reason="AdmissionCheck",
            message=(
                f"quota reserved; waiting for admission check {admission.check or '(any)'}"
                f"{_ago(now, admission.since)}"
                + (f": {admission.message}" if admission.message else "")
            ),
        )
    if phase is AdmissionPhase.DEACTIVATED:
        return Observation(
            TaskState.FAILED,
            FailureClass.INFRA,
            reason="Deactivated",
            message=(
                f"Kueue deactivated the Workload and will not requeue it: {admission.message}; "
                "resume the run to submit the step again"
            ),
        )
    return None
