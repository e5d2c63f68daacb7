# Over 600 lines: one class, the Backend port over Jobs (helpers: client, logs, services).
"""``KubernetesBackend``: runs each attempt as a ``batch/v1`` Job and reports on it.

Submission is idempotent (409 AlreadyExists: submitted before, e.g. by an engine that crashed).
``launch`` renders the Job and hands its creation to a small pool of threads
(``launch_workers``), so an engine's pass never waits on the API server; until the Job is seen
the attempt is reported pending ("Launching"), and a create that fails for good is reported as
an infrastructure failure, which the engine retries by its policy.
Two informers (list+watch of usina's Jobs and of their pods) keep an in-memory cache that
``observe`` classifies from, so a backend started after a restart *adopts* earlier Jobs. Pod
logs are copied into the artifact store while pods run and when they end (``logs``); an attempt
that failed is reported only once its log is copied (the log is the failure's evidence: ``runs
why``'s tail, the error's class); one that succeeded at once, its final copy already queued.
API calls retry through ``client.KubeApi``.
A distributed step's attempt is a gang (``distributed.py``): a headless Service, then an Indexed
Job whose own condition decides the attempt; a failed gang is classified from the pod that
caused it, whose failing rank's error record becomes the attempt's (``gang_errors``); the
Service goes with its Job (``services``).

``changed_runs`` is the change feed a driver of many runs reads between passes: the runs whose
Jobs, pods, Workloads or log copies changed, and those whose verdict changes with time alone
(a step timeout, the queue timeout, a log copy's hold) once that time comes; a driver reconciles
only those (``usina.server.reconciler``).
"""

from __future__ import annotations

import heapq
import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from usina.backends.kubernetes.classify import (
    INDEX_ANNOTATION,
    classify,
    container_started,
    pod_finished,
    pod_index,
)
from usina.backends.kubernetes.manifests import job_name, render_task_manifests
from usina.backends.kubernetes.settings import (
    ATTEMPT_ANNOTATION,
    CONTAINER,
    QUEUE_TIMEOUT_ANNOTATION,
    RUN_ANNOTATION,
    SELECTOR,
    TIMEOUT_ANNOTATION,
    KubernetesSettings,
)
from usina.engine.ports import (
    Observation,
    Task,
    TaskState,
    log_key,
)
from usina.errors import BackendError, MissingExtraError
from usina.sdk.retry import FailureClass

try:
    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("kubernetes", "k8s") from exc

from usina.backends.kubernetes.admission import (
    AdmissionPhase,
    PhaseTimeouts,
    admission_of,
    evicted_reason,
    pending_observation,
)
from usina.backends.kubernetes.client import KubeApi
from usina.backends.kubernetes.decisions import read_decision, store_decision
from usina.backends.kubernetes.gang_errors import surface_rank_error
from usina.backends.kubernetes.informer import Informer
from usina.backends.kubernetes.logs import log_tail, merge_gang_log, merge_pod_log
from usina.backends.kubernetes.services import (
    SERVICE_GRACE_SECONDS,
    gang_of,
    job_finished,
    services_to_retire,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.engine.ports import ArtifactStore

log = logging.getLogger(__name__)
Obj = dict[str, Any]
JOB_LABEL = "batch.kubernetes.io/job-name"
#: How long a failed attempt's report may wait for its log copy before it is sent anyway.
LOG_HOLD_SECONDS = 30.0
#: Deleted Jobs are remembered this long, so their outcome can still be observed.
TOMBSTONE_SECONDS = 3600.0
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta1"
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
#: A suspended Job's Workload is read again at most this often (one GET per queued Job).
WORKLOAD_REFRESH_SECONDS = 5.0
#: How often the Workloads of suspended Jobs are looked at (off the engine's pass).
WORKLOAD_SCAN_SECONDS = 1.0
#: A verdict that changes with time is looked at again no sooner than this after the last look.
MIN_RECHECK_SECONDS = 0.5


#: The parts of a Job's spec the backend reads (classification, queues, gangs); the pod
#: template (containers, env, volumes: most of a Job's bytes) is not kept in the cache.
JOB_SPEC_KEPT = (
    "suspend",
    "activeDeadlineSeconds",
    "completionMode",
    "completions",
    "parallelism",
    "backoffLimit",
)


def cached(kind: str, obj: Obj) -> Obj:
    """What the cache keeps of a watched Job or pod: its metadata (without ``managedFields``
    and ``ownerReferences``; of the labels only the Job name and completion index, which are
    read) and status, and of a Job's spec the fields in ``JOB_SPEC_KEPT`` (a pod's spec: only
    its node); keys and short strings are interned, so thousands of objects share one copy of
    each. With tens of thousands of Jobs the full objects were most of a driver's memory."""
    meta = obj.get("metadata") or {}
    kept = {k: v for k, v in meta.items() if k not in ("managedFields", "ownerReferences")}
    labels = meta.get("labels") or {}
    kept["labels"] = {k: labels[k] for k in (JOB_LABEL, INDEX_ANNOTATION) if k in labels}
    out: Obj = {"metadata": kept}
    spec = obj.get("spec") or {}
    if kind == "jobs":
        out["spec"] = {k: spec[k] for k in JOB_SPEC_KEPT if k in spec}
    elif "nodeName" in spec:
        out["spec"] = {"nodeName": spec["nodeName"]}
    if "status" in obj:
        out["status"] = obj["status"]
    return _interned(out)  # type: ignore[no-any-return]


def _interned(value: Any) -> Any:
    if isinstance(value, dict):
        return {sys.intern(k): _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    if isinstance(value, str) and len(value) <= 64:
        return sys.intern(value)
    return value


class KubernetesBackend:
    """The ``Backend`` of the engine, on Kubernetes Jobs.

    ``api_client`` is a configured ``kubernetes.client.ApiClient`` (the CLI builds it from
    kubeconfig or the in-cluster config); ``artifacts`` is where attempt logs are copied.
    """

    name = "kubernetes"

    def __init__(
        self,
        settings: KubernetesSettings,
        api_client: Any,
        artifacts: ArtifactStore,
        *,
        start: bool = True,
    ) -> None:
        problems = settings.problems()
        if problems:
            raise BackendError("invalid Kubernetes settings: " + "; ".join(problems))
        self.settings = settings
        self.artifacts = artifacts
        self._batch = k8s_client.BatchV1Api(api_client)
        self._core = k8s_client.CoreV1Api(api_client)
        self._custom = k8s_client.CustomObjectsApi(api_client)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._generation = 0
        self._observed_generation = 0
        self._jobs: dict[str, Obj] = {}
        self._deleted_jobs: dict[str, float] = {}  # job name -> when it disappeared
        self._pods: dict[str, Obj] = {}
        self._pods_of: dict[str, set[str]] = {}
        self._launched: dict[str, float] = {}  # job name -> created by this backend, not seen
        self._verdicts: dict[str, Observation] = {}  # attempt id -> decided by this backend
        self._stored: dict[str, Observation | None] = {}  # attempt id -> decision read back
        self._workloads: dict[str, tuple[float, Obj | None]] = {}  # job uid -> (read at, obj)
        self._log_tail: dict[str, str | None] = {}  # pod name -> copied log tail (None: none)
        self._log_busy: set[str] = set()
        self._log_synced: dict[str, float] = {}
        self._memo: dict[str, tuple[Observation, bool, str | None]] = {}  # job -> last verdict
        self._names: dict[str, str] = {}  # attempt id -> Job name (a gang's may be shortened)
        self._failed_seq: dict[str, int] = {}  # pod name -> order in which it was seen failing
        self._services_gone: set[str] = set()  # gang Services deleted (or being deleted)
        self._swept = False  # orphaned Services looked for (once, after the first Job list)
        self._errors_done: set[str] = set()  # attempts whose gang error record was settled
        self._log_write = threading.Lock()  # one read-merge-write of a log record at a time
        self._dirty: set[str] = set()  # jobs whose Job, pods or logs changed since
        self._touched: set[str] = set()  # jobs changed since ``changed_runs`` last answered
        self._run_of: dict[str, str] = {}  # job name -> run id
        self._rechecks: list[tuple[float, str]] = []  # (when, job): verdicts that change with time
        self._recheck_at: dict[str, float] = {}  # job -> its live entry in ``_rechecks``
        self._suspended: set[str] = set()  # Jobs suspended (queued): their Workloads are read
        self._launching: dict[str, str] = {}  # job name -> attempt id, its create queued
        self._forgotten: dict[str, float] = {}  # job name -> when it was dropped, its end known
        self._synced = {"jobs": threading.Event(), "pods": threading.Event()}
        self._stop = threading.Event()
        self._api = KubeApi(
            api_client,
            backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max,
            request_timeout=settings.request_timeout,
            stop=self._stop,
        )
        self._logs_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="usina-k8s-log")
        # A failed pod's report waits for its log copy: those reads never queue behind the
        # copies of pods that succeeded (reported at once) or of running ones.
        self._failed_logs_pool = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="usina-k8s-failed-log"
        )
        self._launch_pool = (
            ThreadPoolExecutor(
                max_workers=settings.launch_workers, thread_name_prefix="usina-k8s-launch"
            )
            if settings.launch_workers
            else None
        )
        self._informers = [
            Informer(
                "jobs",
                self._batch.list_namespaced_job,
                settings,
                self,
                self._stop,
                self._synced["jobs"].set,
            ),
            Informer(
                "pods",
                self._core.list_namespaced_pod,
                settings,
                self,
                self._stop,
                self._synced["pods"].set,
            ),
        ]
        self._housekeeper = threading.Thread(
            target=self._housekeep, daemon=True, name="usina-k8s-housekeeping"
        )
        self._workload_reader = threading.Thread(
            target=self._read_workloads, daemon=True, name="usina-k8s-workloads"
        )
        if start:
            self.start()

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for informer in self._informers:
            informer.start()
        self._housekeeper.start()
        if self.settings.queue:
            self._workload_reader.start()

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for informer in self._informers:
            informer.close()
        if self._launch_pool is not None:
            # Creates not started are dropped: their attempts are recorded, so the engine that
            # drives them next finds them unknown and launches them again under the same name.
            self._launch_pool.shutdown(wait=True, cancel_futures=True)
        self._logs_pool.shutdown(wait=True, cancel_futures=True)
        self._failed_logs_pool.shutdown(wait=True, cancel_futures=True)
        for thread in (self._housekeeper, self._workload_reader):
            if thread.is_alive():
                thread.join(timeout=5)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until both informers have listed once (adoption is complete)."""
        limit = self.settings.sync_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._synced.values())

    # ---- Backend protocol --------------------------------------------------------------------
    def launch(self, task: Task) -> None:
        objects = render_task_manifests(task, self.settings)  # a gang: [Service, Job]
        name = objects[-1]["metadata"]["name"]
        pool = self._launch_pool
        with self._lock:
            self._names[task.attempt_id] = name
            self._run_of[name] = task.run_id
            if name in self._jobs or name in self._launched or name in self._launching:
                return
            if pool is not None:
                self._launching[name] = task.attempt_id
        if pool is None:
            self._create_all(name, objects, task.attempt_id)
            return
        try:
            pool.submit(self._create_queued, name, objects, task.attempt_id)
        except RuntimeError as exc:  # shut down: the backend is closing
            with self._lock:
                self._launching.pop(name, None)
            raise BackendError(
                f"could not launch attempt {task.attempt_id}: the Kubernetes backend is closing"
            ) from exc

    def _create_all(self, name: str, objects: list[Obj], attempt_id: str) -> None:
        """Create an attempt's objects (a gang: its Service, then its Job)."""
        created = [self._create(obj, attempt_id) for obj in objects]
        if len(objects) > 1:  # a gang: its Service belongs to its Job (garbage-collected with it)
            self._own_services(objects[:-1], created[-1], attempt_id)
        with self._changed:
            self._launched[name] = time.time()
            self._launching.pop(name, None)
            self._bump()

    def _create_queued(self, name: str, objects: list[Obj], attempt_id: str) -> None:
        """``_create_all`` on a launch thread. A create that fails for good (after the client's
        retries) becomes the attempt's verdict, an infrastructure failure: the engine sees it on
        its next pass and retries the step by its policy, instead of the error being lost with
        the thread."""
        try:
            self._create_all(name, objects, attempt_id)
        except Exception as exc:
            log.warning("attempt %s: could not create Job %s: %s", attempt_id, name, exc)
            text = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
            with self._changed:
                self._launching.pop(name, None)
                self._verdicts.setdefault(
                    attempt_id,
                    Observation(
                        TaskState.FAILED,
                        FailureClass.INFRA,
                        reason="CreateFailed",
                        message=f"{text}; the attempt never started",
                        finished_at=time.time(),
                    ),
                )
                self._touch(name)
                if len(objects) > 1:
                    self._retire_service(name)
                self._bump()

    def _create(self, obj: Obj, attempt_id: str) -> Obj | None:
        """Create one object; the object as the API server stored it (None when it existed
        already)."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        create = (
            self._core.create_namespaced_service
            if kind == "Service"
            else self._batch.create_namespaced_job
        )
        try:
            body = self._call(create, self.settings.namespace, obj)
        except ApiException as exc:
            if exc.status != 409:
                raise BackendError(
                    f"could not create {kind} {name} for attempt {attempt_id} in namespace "
                    f"{self.settings.namespace}: {exc.status} {exc.reason}"
                ) from exc
            log.info("%s %s exists already; adopting it", kind, name)
            return None  # its creator (another replica) owns the rest of its set-up
        try:
            stored = json.loads(body)
        except (TypeError, ValueError):
            return None
        return stored if isinstance(stored, dict) else None

    def _own_services(self, services: list[Obj], job: Obj | None, attempt_id: str) -> None:
        """Set the Job as the owner of its gang's Services once the Job exists (its uid is
        known only then): Kubernetes' garbage collector deletes them with the Job, even when
        no backend runs."""
        meta = (job or {}).get("metadata") or {}
        if not meta.get("uid"):
            log.warning(
                "attempt %s: no uid for Job %s; its Service is swept later",
                attempt_id,
                meta.get("name"),
            )
            return
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": meta["name"],
            "uid": meta["uid"],
            "blockOwnerDeletion": False,
            "controller": False,
        }
        for service in services:
            name = service["metadata"]["name"]
            try:
                self._call(
                    self._core.patch_namespaced_service,
                    name,
                    self.settings.namespace,
                    {"metadata": {"ownerReferences": [owner]}},
                )
            except ApiException as exc:
                log.warning(
                    "could not set the owner of Service %s (attempt %s): %s %s; it is swept "
                    "once its Job ends",
                    name,
                    attempt_id,
                    exc.status,
                    exc.reason,
                )

    def _name(self, attempt_id: str) -> str:
        """The Job name of an attempt (caller holds the lock)."""
        return self._names.get(attempt_id) or job_name(attempt_id)

    def observe(self, attempt_ids: Sequence[str]) -> dict[str, Observation]:
        self.wait_synced()
        now = time.time()
        out: dict[str, Observation] = {}
        to_stop: list[tuple[str, str, Observation]] = []
        gangs: list[tuple[str, Obj, str | None]] = []  # failed gangs: attempt, Job, cause pod
        unknown: list[str] = []  # no Job: maybe decided by an earlier backend (a restart)
        if self.settings.queue:
            # A Job suspended again after its pods started was evicted: its Workload says why,
            # so read it now rather than on the reader's next scan (queued Jobs wait for that).
            with self._lock:
                names = [self._name(a) for a in attempt_ids]
                evicted = [n for n in names if n in self._suspended and self._pods_of.get(n)]
            if evicted:
                self._refresh_workloads(now, evicted)
        with self._lock:
            self._observed_generation = self._generation
            for attempt_id in attempt_ids:
                verdict = self._verdicts.get(attempt_id)
                if verdict is not None:
                    out[attempt_id] = verdict
                    continue
                name = self._name(attempt_id)
                job = self._jobs.get(name)
                if job is None:
                    if name in self._launching:
                        out[attempt_id] = Observation(TaskState.PENDING, reason="Launching")
                    elif name in self._launched:
                        out[attempt_id] = Observation(TaskState.PENDING, reason="Submitted")
                    else:
                        out[attempt_id] = Observation(TaskState.UNKNOWN)
                        unknown.append(attempt_id)
                    continue
                obs, stop, cause = self._classify(job, now)
                if stop:
                    self._verdicts[attempt_id] = obs
                    to_stop.append((attempt_id, name, obs))
                if (
                    obs.state is TaskState.FAILED
                    and gang_of(job) is not None
                    and attempt_id not in self._errors_done
                ):
                    gangs.append((attempt_id, job, cause))
                out[attempt_id] = obs
        for attempt_id in unknown:
            stored = self._stored_decision(attempt_id)
            if stored is not None:
                out[attempt_id] = stored
        for attempt_id, _, obs in to_stop:
            self._store_decision(attempt_id, obs)
        for attempt_id, job, cause in gangs:
            self._surface_rank_error(attempt_id, job, cause)
        for attempt_id, name, obs in to_stop:
            log.info(
                "attempt %s failed (%s: %s); deleting Job %s",
                attempt_id,
                obs.failure_class,
                obs.reason,
                name,
            )
            self._delete_job(name)
        return out

    def cancel(self, attempt_id: str) -> None:
        with self._changed:
            name = self._name(attempt_id)
            self._verdicts[attempt_id] = Observation(
                TaskState.FAILED,
                FailureClass.CANCELLED,
                reason="Cancelled",
                message="cancelled by the user; the Job and its pods were deleted",
                finished_at=time.time(),
            )
            decided = self._verdicts[attempt_id]
            self._bump()
        self._store_decision(attempt_id, decided)
        self._delete_job(name)  # its Service goes when the Job's deletion is seen

    def logs(self, attempt_id: str) -> str:
        data = self.artifacts.read_record(log_key(attempt_id))
        if data is not None:
            return data.decode("utf-8", "replace")
        with self._lock:
            name = self._name(attempt_id)
            pods = sorted(
                self._pods_of.get(name, ()),
                key=lambda p: (pod_index(self._pods.get(p, {})) or 0, p),
            )
        texts = [self._read_log(pod) for pod in pods]
        return "".join(t for t in texts if t)

    def changed_runs(self) -> set[str]:
        """The runs to look at again: those whose Jobs, pods, Workloads or log copies changed
        since the last call, and those whose attempt's verdict changes with time alone once
        that time has come. Like ``observe``, it counts as having seen every change so far
        (``wait`` then blocks until the next one)."""
        now = time.time()
        with self._lock:
            self._observed_generation = self._generation
            names, self._touched = self._touched, set()
            while self._rechecks and self._rechecks[0][0] <= now:
                when, name = heapq.heappop(self._rechecks)
                if self._recheck_at.get(name) == when:
                    del self._recheck_at[name]
                    names.add(name)
            runs = set()
            for name in names:
                run = self._run_of.get(name)
                if run is None:
                    job = self._jobs.get(name)
                    run = ((job or {}).get("metadata", {}).get("annotations") or {}).get(
                        RUN_ANNOTATION
                    )
                if run:
                    runs.add(str(run))
            return runs

    def next_recheck(self) -> float | None:
        """When (epoch seconds) the soonest verdict that changes with time is due, if any."""
        with self._lock:
            while (
                self._rechecks
                and self._recheck_at.get(self._rechecks[0][1]) != (self._rechecks[0][0])
            ):
                heapq.heappop(self._rechecks)
            return self._rechecks[0][0] if self._rechecks else None

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._generation == self._observed_generation and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    # ---- the backend's own decisions, kept in the artifact store ------------------------------
    def _store_decision(self, attempt_id: str, obs: Observation) -> None:
        """Record a decision only this backend knows (cancelled, unschedulable, timed out,
        evicted): the Job is deleted, so a backend started later reads it back."""
        try:
            store_decision(self.artifacts, attempt_id, obs)
        except Exception as exc:
            log.warning("could not store the decision on attempt %s: %s", attempt_id, exc)
        with self._lock:
            self._stored[attempt_id] = obs

    def _stored_decision(self, attempt_id: str) -> Observation | None:
        with self._lock:
            if attempt_id in self._stored:
                return self._stored[attempt_id]
        try:
            found = read_decision(self.artifacts, attempt_id)
        except Exception as exc:
            log.warning("could not read the decision on attempt %s: %s", attempt_id, exc)
            return None
        with self._lock:
            if found is not None:
                self._stored[attempt_id] = found
                self._verdicts.setdefault(attempt_id, found)
        return found

    # ---- Kueue admission --------------------------------------------------------------------
    def _read_workloads(self) -> None:
        """The Workload reader's loop: every ``WORKLOAD_SCAN_SECONDS``, the Workloads that are
        due (``_refresh_workloads``); a change marks the Job changed, so its run is looked at."""
        while not self._stop.wait(WORKLOAD_SCAN_SECONDS):
            try:
                self._refresh_workloads(time.time())
            except Exception as exc:  # keep reading; the next scan tries again
                log.warning("could not read the Workloads of queued Jobs: %s", exc)

    def _refresh_workloads(self, now: float, names: Sequence[str] | None = None) -> None:
        """Read the Workloads of suspended, queued Jobs (``names``, else all; at most every
        few seconds each)."""
        if not self.settings.queue:
            return
        with self._lock:
            due = []
            for name in self._suspended if names is None else names:
                uid = str(self._jobs[name]["metadata"].get("uid") or "")
                if uid and now - self._workloads.get(uid, (0.0, None))[0] >= (
                    WORKLOAD_REFRESH_SECONDS
                ):
                    due.append(uid)
        for uid in due:
            if self._stop.is_set():
                return
            workload: Obj | None = None
            try:
                body = self._call(
                    self._custom.list_namespaced_custom_object,
                    KUEUE_GROUP,
                    KUEUE_VERSION,
                    self.settings.namespace,
                    "workloads",
                    label_selector=f"{KUEUE_JOB_UID_LABEL}={uid}",
                )
                items = json.loads(body).get("items") or []
                workload = items[0] if items else None
            except ApiException as exc:
                if exc.status not in (403, 404):
                    log.warning("could not read the Workload of Job uid %s: %s", uid, exc.status)
            except Exception as exc:
                log.warning("could not read the Workload of Job uid %s: %s", uid, exc)
            with self._changed:
                before = self._workloads.get(uid, (0.0, None))[1]
                self._workloads[uid] = (now, workload)
                if workload != before:
                    for name in self._suspended:
                        if self._jobs[name]["metadata"].get("uid") == uid:
                            self._touch(name)
                    self._bump()

    def _workload_of(self, job: Obj) -> Obj | None:
        return self._workloads.get(str(job["metadata"].get("uid")), (0.0, None))[1]

    # ---- informer sink -----------------------------------------------------------------------
    def replace(self, kind: str, objects: list[Obj]) -> None:
        with self._changed:
            store = self._jobs if kind == "jobs" else self._pods
            fresh = {o["metadata"]["name"]: o for o in objects}
            for name in list(store):
                if name not in fresh:
                    self._apply_locked(kind, "DELETED", store[name])
            for obj in objects:
                self._apply_locked(kind, "MODIFIED", obj)
            self._bump()
            if kind == "jobs" and not self._swept and not self._stop.is_set():
                self._swept = True
                self._logs_pool.submit(self._sweep_services)

    def apply(self, kind: str, event: str, obj: Obj) -> None:
        with self._changed:
            self._apply_locked(kind, event, obj)
            self._bump()

    def _apply_locked(self, kind: str, event: str, obj: Obj) -> None:
        obj = cached(kind, obj)
        name = obj["metadata"]["name"]
        if kind == "jobs":
            memo = self._memo.get(name)
            settled = (
                memo is not None
                and name not in self._dirty
                and memo[0].state in (TaskState.SUCCEEDED, TaskState.FAILED)
            )
            self._touch(name)
            self._jobs[name] = obj
            self._launched.pop(name, None)
            annotations = obj["metadata"].get("annotations") or {}
            attempt_id = annotations.get(ATTEMPT_ANNOTATION)
            if attempt_id:
                self._names[attempt_id] = name
            if annotations.get(RUN_ANNOTATION):
                self._run_of[name] = str(annotations[RUN_ANNOTATION])
            if event == "DELETED":
                self._deleted_jobs[name] = time.time()
            else:
                self._deleted_jobs.pop(name, None)
                self._forgotten.pop(name, None)
            if (
                event != "DELETED"
                and (obj.get("spec") or {}).get("suspend")
                and obj["metadata"].get("uid")
            ):
                self._suspended.add(name)
            else:
                self._suspended.discard(name)
                # admitted or gone: its Workload is read again if it is suspended again
                self._workloads.pop(str(obj["metadata"].get("uid")), None)
            if gang_of(obj) is not None and (event == "DELETED" or job_finished(obj)):
                self._retire_service(name)
            if event == "DELETED" and settled and memo is not None and attempt_id:
                # Its outcome was reported and cannot change: keep that, not the Job and its
                # pods (with tens of thousands of Jobs, finished ones were most of the cache).
                self._verdicts.setdefault(attempt_id, memo[0])
                self._forget_job(name)
                self._forgotten[name] = time.time()
            return
        job = (obj["metadata"].get("labels") or {}).get(JOB_LABEL)
        if job in self._forgotten:
            return  # a pod of a Job already forgotten (its deletion cascades after)
        self._pods[name] = obj
        if (obj.get("status") or {}).get("phase") == "Failed" and name not in self._failed_seq:
            self._failed_seq[name] = len(self._failed_seq)
        if job:
            self._touch(job)
            self._pods_of.setdefault(job, set()).add(name)
        if name in self._log_tail or name in self._log_busy:
            return
        if pod_finished(obj) or event == "DELETED":
            if container_started(obj):
                self._log_busy.add(name)
                failed = (obj.get("status") or {}).get("phase") == "Failed"
                pool = self._failed_logs_pool if failed else self._logs_pool
                pool.submit(self._copy_log, name, obj, True)
            else:
                self._log_tail[name] = None

    def _bump(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    def _touch(self, job: str) -> None:
        """Mark a Job changed: its verdict is computed again, and its run is in the change
        feed (``changed_runs``). Caller holds the lock."""
        self._dirty.add(job)
        self._touched.add(job)

    def _recheck(self, job: Obj, obs: Observation, now: float) -> None:
        """Schedule another look at a verdict that changes with time alone (caller holds the
        lock): a running step's timeout, a pod's queue timeout, a log copy's hold, a queued
        Workload's phase timeouts. The run is in the change feed once that time comes."""
        name = job["metadata"]["name"]
        annotations = job["metadata"].get("annotations") or {}
        when: float | None = None
        try:
            if obs.reason == "CopyingLogs":
                when = now + LOG_HOLD_SECONDS  # the copy's end marks the Job changed sooner
            elif obs.reason == "Unschedulable":
                limit = float(
                    annotations.get(QUEUE_TIMEOUT_ANNOTATION, self.settings.queue_timeout)
                )
                when = (obs.started_at or now) + limit  # the pod's own "since" is no earlier
            elif obs.state is TaskState.RUNNING and annotations.get(TIMEOUT_ANNOTATION):
                when = (obs.started_at or now) + float(annotations[TIMEOUT_ANNOTATION])
            elif obs.state is TaskState.PENDING:
                since = admission_of(self._workload_of(job)).since
                t = PhaseTimeouts()
                limits = [x for x in (t.quota, t.provisioning, t.check) if x is not None]
                when = since + min(limits) if since is not None and limits else None
        except ValueError:
            when = now + 60.0  # a malformed annotation: the classifier uses its default
        if when is None:
            return
        when = max(when, now + MIN_RECHECK_SECONDS)
        current = self._recheck_at.get(name)
        if current is not None and current <= when and current > now:
            return
        self._recheck_at[name] = when
        heapq.heappush(self._rechecks, (when, name))

    # ---- classification ----------------------------------------------------------------------
    def _classify(self, job: Obj, now: float) -> tuple[Observation, bool, str | None]:
        name = job["metadata"]["name"]
        memo = self._memo.get(name)
        if memo is not None and name not in self._dirty:
            return memo
        pods = [self._pods[p] for p in sorted(self._pods_of.get(name, ())) if p in self._pods]
        verdict = self._classify_now(job, pods, now)
        self._dirty.discard(name)
        timed = verdict[0].state is TaskState.RUNNING and bool(
            (job["metadata"].get("annotations") or {}).get(TIMEOUT_ANNOTATION)
        )
        pending = verdict[0].state is TaskState.PENDING and self.settings.queue is not None
        if timed or pending or verdict[0].reason in ("Unschedulable", "CopyingLogs"):
            # those change with time alone
            self._memo.pop(name, None)
            self._recheck(job, verdict[0], now)
        else:
            self._memo[name] = verdict
        return verdict

    def _classify_now(
        self, job: Obj, pods: list[Obj], now: float
    ) -> tuple[Observation, bool, str | None]:
        annotations = job["metadata"].get("annotations") or {}
        try:
            queue_timeout = float(
                annotations.get(QUEUE_TIMEOUT_ANNOTATION, self.settings.queue_timeout)
            )
        except ValueError:
            queue_timeout = self.settings.queue_timeout
        try:
            raw_timeout = annotations.get(TIMEOUT_ANNOTATION)
            timeout = float(raw_timeout) if raw_timeout else None
        except ValueError:
            timeout = None
        workload = self._workload_of(job)
        admission = admission_of(workload)
        evicted = (
            evicted_reason(workload) if admission.phase is not AdmissionPhase.DEACTIVATED else None
        )
        started = [p for p in pods if container_started(p)]
        seen = {
            p: self._failed_seq[p]
            for p in self._pods_of.get(job["metadata"]["name"], ())
            if p in self._failed_seq
        }
        extra: dict[str, Any] = {"timeout": timeout, "evicted": evicted, "seen": seen}
        verdict = classify(job, pods, now=now, queue_timeout=queue_timeout, **extra)
        # The evidence is the log of the pod the verdict is about (a gang's failed pod).
        about = verdict.pod or (started[-1]["metadata"]["name"] if started else None)
        tail = self._log_tail.get(about) if about else None
        if tail and verdict.observation.state is TaskState.FAILED:
            verdict = classify(
                job, pods, now=now, queue_timeout=queue_timeout, logs_tail=tail, **extra
            )
        obs = verdict.observation
        if obs.state is TaskState.PENDING and obs.reason == "Suspended":
            # Where Kueue's admission stands: quota, nodes being provisioned, another check.
            said = pending_observation(admission, now=now)
            if said is not None:
                stop = said.state is TaskState.FAILED
                return (replace(said, finished_at=now) if stop else said), stop, None
        if obs.state in (TaskState.SUCCEEDED, TaskState.FAILED) and not verdict.stop_job:
            # The pod's own end may not have arrived yet (Jobs and pods are separate watches).
            waiting = [
                p["metadata"]["name"]
                for p in started
                if p["metadata"]["name"] not in self._log_tail
            ]
            status = job.get("status") or {}
            phases = [(p.get("status") or {}).get("phase") for p in pods]
            lagging = (
                any(not pod_finished(p) for p in pods)
                or int(status.get("failed") or 0) > phases.count("Failed")
                or int(status.get("succeeded") or 0) > phases.count("Succeeded")
            )
            finished_at = obs.finished_at or now
            if (
                (waiting or lagging)
                and obs.state is TaskState.FAILED
                and now - finished_at < LOG_HOLD_SECONDS
            ):
                # Report a failure only once its log is safe in the artifact store. A success
                # is reported at once: its log copy was queued when the pod ended, and holding
                # the report for it made every success wait on the API server's log reads
                # (seconds at thousands of Jobs: benchmarks/cluster_sim.py).
                return (
                    replace(obs, state=TaskState.RUNNING, failure_class=None, reason="CopyingLogs"),
                    False,
                    None,
                )
        return obs, verdict.stop_job, verdict.pod

    # ---- logs --------------------------------------------------------------------------------
    def _read_log(self, pod: str) -> str | None:
        try:
            resp = self._call(
                self._core.read_namespaced_pod_log,
                pod,
                self.settings.namespace,
                container=CONTAINER,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status in (400, 404):
                return None
            raise
        data = resp
        if len(data) > self.settings.log_max_bytes:
            data = data[-self.settings.log_max_bytes :]
        return data.decode("utf-8", "replace")

    def _copy_log(self, pod: str, obj: Obj, final: bool) -> None:
        text: str | None = None
        try:
            text = self._read_log(pod)
        except Exception as exc:
            log.warning("could not copy the log of pod %s: %s", pod, exc)
        annotations = obj["metadata"].get("annotations") or {}
        attempt_id = annotations.get(ATTEMPT_ANNOTATION)
        if text is not None and attempt_id:
            try:
                with self._log_write:
                    merged = self._merge(attempt_id, obj, text)
                    self.artifacts.write_record(log_key(attempt_id), merged)
            except Exception as exc:
                log.warning("could not store the log of attempt %s: %s", attempt_id, exc)
        tail = log_tail(text, self.settings.log_tail_lines)
        with self._changed:
            self._log_synced[pod] = time.time()
            if final:
                self._log_tail[pod] = tail
                job = (obj["metadata"].get("labels") or {}).get(JOB_LABEL)
                if job:
                    self._touch(job)
            self._log_busy.discard(pod)
            self._bump()

    def _merge(self, attempt_id: str, obj: Obj, text: str) -> bytes:
        """The attempt's log record with this pod's part replaced (``logs``)."""
        pod = obj["metadata"]["name"]
        job = (obj["metadata"].get("labels") or {}).get(JOB_LABEL) or self._name(attempt_id)
        index = pod_index(obj)
        with self._lock:
            several = len(self._pods_of.get(job, ())) > 1
            current = self._jobs.get(self._name(attempt_id))
            gang = gang_of(current) if current is not None else None
        if index is None and not several:
            return text.encode()
        previous = self.artifacts.read_record(log_key(attempt_id)) or b""
        if index is not None:
            return merge_gang_log(previous, pod, index, text, gang)
        return merge_pod_log(previous, pod, text, several=True)

    def _retire_service(self, name: str) -> None:
        """Delete a gang's headless Service once (its Job finished or is gone); caller holds
        the lock."""
        if name in self._services_gone or self._stop.is_set():
            return
        self._services_gone.add(name)
        try:
            self._logs_pool.submit(self._delete_service, name)
        except RuntimeError:  # the backend is closing
            self._services_gone.discard(name)

    def _sweep_services(self) -> None:
        """Delete gang Services whose Job is gone or finished, e.g. deleted by its TTL while no
        backend ran. A Service younger than ``SERVICE_GRACE_SECONDS`` is left alone: its Job may
        be being created right now."""
        try:
            body = self._call(
                self._core.list_namespaced_service,
                self.settings.namespace,
                label_selector=SELECTOR,
            )
            services = json.loads(body).get("items") or []
        except Exception as exc:
            log.warning("could not list Services in namespace %s: %s", self.settings.namespace, exc)
            return
        with self._lock:
            launched = set(self._names.values())  # by this backend, maybe not seen yet
            now, grace = time.time(), SERVICE_GRACE_SECONDS
            retire = services_to_retire(
                services, self._jobs, self._deleted_jobs, launched, now, grace
            )
            for name in retire:
                self._retire_service(name)

    def _delete_service(self, name: str) -> None:
        try:
            self._call(
                self._core.delete_namespaced_service,
                name,
                self.settings.namespace,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete Service %s: %s %s", name, exc.status, exc.reason)
                with self._lock:
                    self._services_gone.discard(name)
        except Exception as exc:
            log.warning("could not delete Service %s: %s", name, exc)
            with self._lock:
                self._services_gone.discard(name)

    def _surface_rank_error(self, attempt_id: str, job: Obj, cause: str | None) -> None:
        """The error record of the rank that failed the gang becomes the attempt's own
        (``gang_errors``)."""
        with self._lock:
            gang = gang_of(job)
            cause_pod = self._pods.get(cause) if cause else None
            index = pod_index(cause_pod) if cause_pod is not None else None
            self._errors_done.add(attempt_id)
        if gang is not None:
            surface_rank_error(self.artifacts, attempt_id, gang, index, cause)

    def _housekeep(self) -> None:
        interval = self.settings.log_sync_seconds
        while not self._stop.wait(min(interval or 60.0, 60.0)):
            now = time.time()
            with self._lock:
                for name, when in list(self._deleted_jobs.items()):
                    if now - when > TOMBSTONE_SECONDS:
                        self._forget_job(name)
                for name, when in list(self._forgotten.items()):
                    if now - when > TOMBSTONE_SECONDS:
                        del self._forgotten[name]
                running = (
                    []
                    if interval is None
                    else [
                        (name, pod)
                        for name, pod in self._pods.items()
                        if (pod.get("status") or {}).get("phase") == "Running"
                        and name not in self._log_busy
                        and now - self._log_synced.get(name, 0.0) >= interval
                    ]
                )
                for name, _ in running:
                    self._log_busy.add(name)
            for name, pod in running:
                self._logs_pool.submit(self._copy_log, name, pod, False)

    def _forget_job(self, name: str) -> None:
        job = self._jobs.pop(name, None)
        attempt_id = ((job or {}).get("metadata", {}).get("annotations") or {}).get(
            ATTEMPT_ANNOTATION
        )
        if attempt_id:
            self._names.pop(attempt_id, None)
            self._errors_done.discard(attempt_id)
        self._services_gone.discard(name)
        self._memo.pop(name, None)
        self._dirty.discard(name)
        self._touched.discard(name)
        self._run_of.pop(name, None)
        self._recheck_at.pop(name, None)
        self._suspended.discard(name)
        self._deleted_jobs.pop(name, None)
        for pod in self._pods_of.pop(name, set()):
            self._pods.pop(pod, None)
            self._failed_seq.pop(pod, None)
            self._log_tail.pop(pod, None)
            self._log_synced.pop(pod, None)

    def _delete_job(self, name: str) -> None:
        try:
            self._call(
                self._batch.delete_namespaced_job,
                name,
                self.settings.namespace,
                propagation_policy="Background",
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise BackendError(
                    f"could not delete Job {name} in namespace {self.settings.namespace}: "
                    f"{exc.status} {exc.reason}"
                ) from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> bytes:
        """One API call through the shared retrying client (``client.KubeApi``); the body."""
        return self._api.call(fn, *args, **kwargs)
