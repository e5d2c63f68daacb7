"""Classification: a Job and its pods, as the API reports them, become one ``Observation``.

Pure functions over raw Kubernetes JSON (the shapes in ``reference/kubernetes-jobs.md`` §1.3),
so every rule is testable without a cluster. The order of the checks matters: a Job that ran
past its deadline had its pod killed (exit 143/137), which must not read as an OOM; a pod with a
``DisruptionTarget`` condition was killed by the platform, whatever its exit code says.

A pod's exit code is read by ``usina.engine.failures.exit_failure``, the one classifier the
runtime and the local backend use too. A gang (an Indexed Job whose pods are the ranks of one
distributed step) fails as a whole; of its failed pods, the one that *caused* the failure is
reported (``failure_cause``, ranked by ``usina.engine.failures.root_cause``): a disruption
first (its peers then crash in their collectives), then a kill (OOM, rank lost), then a pod
that failed by itself; pods the Job controller stopped after the fact (exit 143, deleted) come
last.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from usina.backends.kubernetes.settings import CONTAINER
from usina.engine.failures import MemberEnd, exit_failure, root_cause
from usina.engine.ports import Observation, TaskState
from usina.sdk.retry import FailureClass

Obj = Mapping[str, Any]

NODE_LOST_REASONS = frozenset({"DeletionByTaintManager", "DeletionByPodGC"})
#: Container waiting reasons that will not fix themselves: the attempt fails as ``infra``.
#: (``ErrImagePull`` alone may be a registry hiccup; the kubelet retries it and reports
#: ``ImagePullBackOff`` once it has failed again.)
STUCK_WAITING = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
_EXIT_IN_MESSAGE = re.compile(r"failed with exit code (\d+)")
_INSUFFICIENT = re.compile(r"Insufficient ([\w./-]+)")
_POD_IN_MESSAGE = re.compile(r"for pod [\w.-]+/([\w.-]+)")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The observation, and whether the backend must delete a Job that is still active
    (an attempt that fails while Kubernetes would keep it pending forever)."""

    observation: Observation
    stop_job: bool = False
    pod: str | None = None  # the failed pod the observation is about (a gang's root cause)


def parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _true(obj: Obj, ctype: str) -> Obj | None:
    cond = _conditions(obj).get(ctype)
    return cond if cond is not None and cond.get("status") == "True" else None


def _main_status(pod: Obj) -> Obj | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == CONTAINER:
            return dict(cs)
    return dict(statuses[0]) if statuses else None


def _state(pod: Obj) -> tuple[str | None, Obj]:
    cs = _main_status(pod)
    state = (cs or {}).get("state") or {}
    for key in ("terminated", "running", "waiting"):
        if key in state and state[key] is not None:
            return key, state[key]
    return None, {}


def container_started(pod: Obj) -> bool:
    """Whether the step's container ever ran (so it has a log)."""
    kind, detail = _state(pod)
    if kind == "running":
        return True
    return kind == "terminated" and bool(detail.get("startedAt"))


def pod_finished(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _created(obj: Obj) -> tuple[float, int]:
    meta = obj.get("metadata") or {}
    rv = str(meta.get("resourceVersion") or "0")
    return parse_time(meta.get("creationTimestamp")) or 0.0, int(rv) if rv.isdigit() else 0


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


def _evidence(head: str, logs_tail: str | None) -> str:
    if logs_tail:
        return f"{head}\n--- last log lines ---\n{logs_tail.rstrip()}"
    return head


def pod_failure(pod: Obj) -> tuple[FailureClass, int | None, str, str]:
    """Why a failed pod failed: (class, exit code, reason, message)."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    disruption = _true(pod, "DisruptionTarget")
    kind, detail = _state(pod)
    code = detail.get("exitCode") if kind == "terminated" else None
    if disruption is not None:
        reason = str(disruption.get("reason") or "DisruptionTarget")
        cls = FailureClass.NODE_LOST if reason in NODE_LOST_REASONS else FailureClass.PREEMPTED
        what = "its node was lost" if cls is FailureClass.NODE_LOST else "it was disrupted"
        return (
            cls,
            code,
            reason,
            _join(
                f"pod {name} was stopped by the platform ({what}): {reason}",
                disruption.get("message"),
                status.get("message"),
            ),
        )
    if status.get("reason") == "Evicted":
        return (
            FailureClass.PREEMPTED,
            code,
            "Evicted",
            _join(f"pod {name} was evicted by the kubelet", status.get("message")),
        )
    if status.get("reason") == "NodeLost":
        return (
            FailureClass.NODE_LOST,
            code,
            "NodeLost",
            _join(f"pod {name} lost its node", status.get("message")),
        )
    if status.get("reason") == "UnexpectedAdmissionError":
        return (
            FailureClass.INFRA,
            None,
            "UnexpectedAdmissionError",
            _join(
                f"the node refused pod {name} at admission (device allocation)",
                status.get("message"),
            ),
        )
    if kind == "terminated":
        reason = str(detail.get("reason") or "Error")
        message = detail.get("message")
        if reason == "OOMKilled":
            return (
                FailureClass.OOM,
                code,
                reason,
                _join(
                    f"container {CONTAINER} was killed for exceeding its memory limit "
                    f"(OOMKilled, exit {code})",
                    message,
                ),
            )
        ended = exit_failure(code, fallback_reason=reason)
        if ended is None:  # a failed pod whose container exited 0: it wrote no result
            return (
                FailureClass.USER_ERROR,
                code,
                reason,
                _join(f"container {CONTAINER} exited with code {code} ({reason})", message),
            )
        if ended.reason == "Error" or ended.reason == reason:
            head = f"container {CONTAINER} exited with code {code} ({reason})"
        else:
            head = f"container {CONTAINER}: {ended.message}"
        return ended.failure, code, ended.reason, _join(head, message)
    if kind == "waiting":
        reason = str(detail.get("reason") or "Waiting")
        return (
            FailureClass.INFRA,
            None,
            reason,
            _join(f"container {CONTAINER} never started: {reason}", detail.get("message")),
        )
    return (
        FailureClass.INFRA,
        None,
        str(status.get("reason") or "PodFailed"),
        _join(f"pod {name} failed before its container started", status.get("message")),
    )


def pod_index(pod: Obj) -> int | None:
    """The completion index of a pod of an Indexed Job (a gang's node rank), if it has one."""
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(INDEX_ANNOTATION) or (meta.get("labels") or {}).get(
        INDEX_ANNOTATION
    )
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def failure_cause(job: Obj, failed: Sequence[Obj], seen: Mapping[str, int] | None = None) -> Obj:
    """The failed pod of a gang that caused the Job to fail (``failed`` is not empty).

    Ranked by what the pod's end says about its cause, then by the Job controller's own
    message (a ``FailJob`` rule names the pod), then by the order the backend saw the pods
    fail (``seen``: pod name -> sequence), then by finish time and index.
    """
    named = None
    for ctype in ("Failed", "FailureTarget"):
        cond = _conditions(job).get(ctype)
        match = _POD_IN_MESSAGE.search(str((cond or {}).get("message") or ""))
        if match:
            named = match.group(1)
            break
    order = seen or {}

    def evidence(pod: Obj) -> MemberEnd:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        kind, detail = _state(pod)
        code = detail.get("exitCode") if kind == "terminated" else None
        failure = pod_failure(pod)[0]
        index = pod_index(pod)
        return MemberEnd(
            failure,
            platform=_true(pod, "DisruptionTarget") is not None
            or status.get("reason") in ("Evicted", "NodeLost"),
            # Deleted by the Job controller because the gang had failed (SIGTERM, SIGKILL).
            stopped_by_gang=bool(meta.get("deletionTimestamp"))
            and code in (None, 143, 137)
            and detail.get("reason") != "OOMKilled",
            named=meta.get("name") == named,
            order=(
                order.get(str(meta.get("name")), 1 << 62),
                parse_time(detail.get("finishedAt")) or float("inf"),
            ),
            index=index if index is not None else 1 << 30,
        )

    return root_cause(failed, evidence)


def unschedulable_hint(message: str) -> str:
    """The resource no node has, in words, from the scheduler's message."""
    missing = sorted(set(_INSUFFICIENT.findall(message)))
    hints = [f"no node has enough free {', '.join(missing)}"] if missing else []
    if "node affinity" in message or "node selector" in message:
        hints.append("no node matches the step's node affinity (GPU type label)")
    if "untolerated taint" in message:
        hints.append("the matching nodes have taints the pod does not tolerate")
    return "; ".join(hints) or "no node can take the pod"


def _unschedulable(pods: Sequence[Obj]) -> Obj | None:
    for pod in reversed(pods):
        cond = _conditions(pod).get("PodScheduled")
        if cond and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return cond
    return None


def _disruption_note(pods: Sequence[Obj]) -> str | None:
    seen = [p for p in pods if _true(p, "DisruptionTarget") is not None]
    if not seen:
        return None
    reasons = ", ".join(
        sorted(
            {
                str(_true(p, "DisruptionTarget").get("reason"))  # type: ignore[union-attr]
                for p in seen
            }
        )
    )
    return f"{len(seen)} pod(s) disrupted and replaced by the Job controller ({reasons})"


def classify(
    job: Obj,
    pods: Sequence[Obj],
    *,
    now: float,
    queue_timeout: float,
    logs_tail: str | None = None,
    seen: Mapping[str, int] | None = None,
    timeout: float | None = None,
    evicted: str | None = None,
) -> Verdict:
    """The state of one attempt from its Job and every pod it had (deleted ones included).

    ``seen`` (pod name -> sequence) is the order in which the caller saw pods fail; it breaks
    ties when the failed pods of a gang say nothing else about which came first.
    ``timeout``: the step's timeout in seconds, counted from the moment its container started
    (time pending in a queue or for a node never counts; ``activeDeadlineSeconds`` is only a
    backstop). ``evicted``: Kueue's reason when the Job's Workload was evicted or preempted."""
    pods = sorted(pods, key=_created)
    status = job.get("status") or {}
    started_at = parse_time(status.get("startTime"))
    running_at = None
    for pod in pods:
        kind, detail = _state(pod)
        if kind in ("running", "terminated") and detail.get("startedAt"):
            running_at = parse_time(detail.get("startedAt"))
    started = running_at or started_at
    if _true(job, "Complete") is not None:
        done = parse_time(status.get("completionTime"))
        return Verdict(
            Observation(
                TaskState.SUCCEEDED,
                started_at=started,
                finished_at=done,
                exit_code=0,
                reason="Completed",
            )
        )
    failed = _true(job, "Failed")
    if failed is not None:
        done = parse_time(failed.get("lastTransitionTime"))
        job_reason = str(failed.get("reason") or "Failed")
        job_message = str(failed.get("message") or "")
        ever_ran = any(container_started(p) for p in pods)
        if job_reason == "DeadlineExceeded":
            pending = _unschedulable(pods)
            if not ever_ran and pending is not None:
                text = str(pending.get("message") or "")
                return Verdict(
                    Observation(
                        TaskState.FAILED,
                        FailureClass.UNSCHEDULABLE,
                        reason="Unschedulable",
                        message=f"{unschedulable_hint(text)}: {text}",
                        started_at=started,
                        finished_at=done,
                    )
                )
            deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
            return Verdict(
                Observation(
                    TaskState.FAILED,
                    FailureClass.TIMEOUT,
                    reason="DeadlineExceeded",
                    message=_evidence(
                        _join(
                            f"the attempt ran past its backstop deadline of {deadline} s "
                            "(activeDeadlineSeconds, counted from the Job's start, pending "
                            "time included)",
                            job_message,
                            _disruption_note(pods),
                        ),
                        logs_tail,
                    ),
                    started_at=started,
                    finished_at=done,
                )
            )
        failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        cause: Obj | None = None
        if failed_pods:
            indexed = (job.get("spec") or {}).get("completionMode") == "Indexed"
            cause = failure_cause(job, failed_pods, seen) if indexed else failed_pods[-1]
            cls, code, reason, message = pod_failure(cause)
        else:
            match = _EXIT_IN_MESSAGE.search(job_message)
            code = int(match.group(1)) if match else None
            ended = exit_failure(code) if code is not None else None
            cls = ended.failure if ended is not None else FailureClass.INFRA
            reason, message = job_reason, "the Job failed and its pods are gone"
        return Verdict(
            Observation(
                TaskState.FAILED,
                cls,
                exit_code=code,
                reason=reason,
                message=_evidence(_join(message, f"Job: {job_reason}: {job_message}"), logs_tail),
                started_at=started,
                finished_at=done,
            ),
            pod=str((cause.get("metadata") or {}).get("name")) if cause is not None else None,
        )

    # Not finished: pending, running, or stuck in a way Kubernetes will not resolve.
    note = _disruption_note(pods)
    live = [p for p in pods if not pod_finished(p)]
    if (job.get("spec") or {}).get("suspend") or _true(job, "Suspended") is not None:
        ran = [p for p in pods if container_started(p)]
        if ran or evicted:
            # Suspended again after admission: Kueue evicted the workload (preemption by a
            # higher priority, reclaimed borrowed quota, PodsReadyTimeout). The engine starts
            # a new attempt, charged as a disruption, never to the user's retries.
            return Verdict(
                Observation(
                    TaskState.FAILED,
                    FailureClass.PREEMPTED,
                    reason="Evicted",
                    message=_join(
                        "Kueue evicted the admitted workload and suspended its Job again"
                        + (f" ({evicted})" if evicted else "")
                        + (f" after {len(ran)} pod(s) had started" if ran else ""),
                        note,
                    ),
                    started_at=started,
                    finished_at=now,
                ),
                stop_job=True,
            )
        return Verdict(
            Observation(
                TaskState.PENDING,
                reason="Suspended",
                message=_join(
                    "the Job is suspended (queued by Kueue until its quota admits it)", note
                ),
            )
        )
    if not live:
        return Verdict(
            Observation(TaskState.PENDING, reason="Starting", message=note, started_at=started_at)
        )
    # A gang has several live pods: one that cannot start or be placed fails them all.
    for stuck in live:
        kind, detail = _state(stuck)
        if kind == "waiting" and detail.get("reason") in STUCK_WAITING:
            reason = str(detail["reason"])
            return Verdict(
                Observation(
                    TaskState.FAILED,
                    FailureClass.INFRA,
                    reason=reason,
                    message=_join(
                        f"container {CONTAINER} cannot start: {reason}", detail.get("message")
                    ),
                    started_at=started_at,
                    finished_at=now,
                ),
                stop_job=True,
                pod=str((stuck.get("metadata") or {}).get("name")),
            )
    unplaced = [p for p in live if _unschedulable([p]) is not None]
    if not unplaced and any(_state(p)[0] == "running" for p in live):
        if timeout is not None and running_at is not None and now - running_at >= timeout:
            return Verdict(
                Observation(
                    TaskState.FAILED,
                    FailureClass.TIMEOUT,
                    reason="Timeout",
                    message=_evidence(
                        _join(
                            f"the attempt ran past its timeout of {timeout:g} s (counted from "
                            f"its container's start, {now - running_at:.0f} s ago); the Job "
                            "was deleted",
                            note,
                        ),
                        logs_tail,
                    ),
                    started_at=running_at,
                    finished_at=now,
                ),
                stop_job=True,
            )
        return Verdict(
            Observation(TaskState.RUNNING, reason="Running", message=note, started_at=started)
        )
    pod = unplaced[0] if unplaced else live[-1]
    kind, detail = _state(pod)
    pending = _unschedulable([pod])
    if pending is not None:
        text = str(pending.get("message") or "")
        since = parse_time(pending.get("lastTransitionTime")) or started_at or now
        if now - since >= queue_timeout:
            return Verdict(
                Observation(
                    TaskState.FAILED,
                    FailureClass.UNSCHEDULABLE,
                    reason="Unschedulable",
                    message=_join(
                        f"{unschedulable_hint(text)} (pending for {now - since:.0f} s, "
                        f"queue timeout {queue_timeout:g} s): {text}",
                        note,
                    ),
                    started_at=started_at,
                    finished_at=now,
                ),
                stop_job=True,
            )
        return Verdict(
            Observation(
                TaskState.PENDING,
                reason="Unschedulable",
                message=_join(text, note),
                started_at=started_at,
            )
        )
    reason = str(detail.get("reason") or "Pending") if kind == "waiting" else "Pending"
    return Verdict(
        Observation(
            TaskState.PENDING,
            reason=reason,
            message=_join(detail.get("message"), note),
            started_at=started_at,
        )
    )
