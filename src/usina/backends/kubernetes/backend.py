"""``KubernetesBackend``: runs each attempt as a ``batch/v1`` Job and reports on it.

Submission is idempotent (a 409 AlreadyExists means the attempt was submitted before, e.g. by
an engine that crashed). Observation never polls per Job: two informers (one list+watch of
usina-labelled Jobs, one of their pods, in the namespace) keep an in-memory cache, and
``observe`` classifies from it. A backend started after a restart lists the namespace and so
*adopts* every Job an earlier one created. Logs outlive pods: a pod's log is copied into the
artifact store (``attempts/<id>/log.txt``) while it runs and when it ends, and a finished attempt
is reported only once its log is copied, so ``usina why`` can quote it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from usina.backends.kubernetes.classify import (
    classify,
    container_started,
    pod_finished,
)
from usina.backends.kubernetes.manifests import build_job, job_name
from usina.backends.kubernetes.settings import (
    ATTEMPT_ANNOTATION,
    CONTAINER,
    QUEUE_TIMEOUT_ANNOTATION,
    KubernetesSettings,
)
from usina.engine.ports import Observation, Task, TaskState, log_key
from usina.errors import BackendError, MissingExtraError
from usina.sdk.retry import FailureClass

try:
    import urllib3
    from kubernetes import client as k8s_client
    from kubernetes.client.exceptions import ApiException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("kubernetes", "k8s") from exc

from usina.backends.kubernetes.informer import Backoff, Informer, retry_after

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.engine.ports import ArtifactStore

log = logging.getLogger(__name__)
Obj = dict[str, Any]
JOB_LABEL = "batch.kubernetes.io/job-name"
#: How long a finished attempt's report may wait for its log copy before it is sent anyway.
LOG_HOLD_SECONDS = 30.0
#: Deleted Jobs are remembered this long, so their outcome can still be observed.
TOMBSTONE_SECONDS = 3600.0


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
        self._log_tail: dict[str, str | None] = {}  # pod name -> copied log tail (None: none)
        self._log_busy: set[str] = set()
        self._log_synced: dict[str, float] = {}
        self._memo: dict[str, tuple[Observation, bool]] = {}  # job -> last classification
        self._dirty: set[str] = set()  # jobs whose Job, pods or logs changed since
        self._synced = {"jobs": threading.Event(), "pods": threading.Event()}
        self._stop = threading.Event()
        self._logs_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="usina-k8s-log")
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
        if start:
            self.start()

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for informer in self._informers:
            informer.start()
        self._housekeeper.start()

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for informer in self._informers:
            informer.close()
        self._logs_pool.shutdown(wait=True, cancel_futures=True)
        if self._housekeeper.is_alive():
            self._housekeeper.join(timeout=5)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until both informers have listed once (adoption is complete)."""
        limit = self.settings.sync_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._synced.values())

    # ---- Backend protocol --------------------------------------------------------------------
    def launch(self, task: Task) -> None:
        manifest = build_job(task, self.settings)
        name = manifest["metadata"]["name"]
        with self._lock:
            if name in self._jobs or name in self._launched:
                return
        try:
            self._call(self._batch.create_namespaced_job, self.settings.namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise BackendError(
                    f"could not create Job {name} for attempt {task.attempt_id} in namespace "
                    f"{self.settings.namespace}: {exc.status} {exc.reason}"
                ) from exc
            log.info("Job %s exists already; adopting it", name)
        with self._changed:
            self._launched[name] = time.time()
            self._bump()

    def observe(self, attempt_ids: Sequence[str]) -> dict[str, Observation]:
        self.wait_synced()
        now = time.time()
        out: dict[str, Observation] = {}
        to_stop: list[tuple[str, str, Observation]] = []
        with self._lock:
            self._observed_generation = self._generation
            for attempt_id in attempt_ids:
                verdict = self._verdicts.get(attempt_id)
                if verdict is not None:
                    out[attempt_id] = verdict
                    continue
                name = job_name(attempt_id)
                job = self._jobs.get(name)
                if job is None:
                    out[attempt_id] = (
                        Observation(TaskState.PENDING, reason="Submitted")
                        if name in self._launched
                        else Observation(TaskState.UNKNOWN)
                    )
                    continue
                obs, stop = self._classify(job, now)
                if stop:
                    self._verdicts[attempt_id] = obs
                    to_stop.append((attempt_id, name, obs))
                out[attempt_id] = obs
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
        name = job_name(attempt_id)
        with self._changed:
            self._verdicts[attempt_id] = Observation(
                TaskState.FAILED,
                FailureClass.CANCELLED,
                reason="Cancelled",
                message="cancelled by the user; the Job and its pods were deleted",
                finished_at=time.time(),
            )
            self._bump()
        self._delete_job(name)

    def logs(self, attempt_id: str) -> str:
        data = self.artifacts.read_record(log_key(attempt_id))
        if data is not None:
            return data.decode("utf-8", "replace")
        name = job_name(attempt_id)
        with self._lock:
            pods = sorted(self._pods_of.get(name, ()))
        texts = [self._read_log(pod) for pod in pods]
        return "".join(t for t in texts if t)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._generation == self._observed_generation and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

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

    def apply(self, kind: str, event: str, obj: Obj) -> None:
        with self._changed:
            self._apply_locked(kind, event, obj)
            self._bump()

    def _apply_locked(self, kind: str, event: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if kind == "jobs":
            self._dirty.add(name)
            self._jobs[name] = obj
            self._launched.pop(name, None)
            if event == "DELETED":
                self._deleted_jobs[name] = time.time()
            else:
                self._deleted_jobs.pop(name, None)
            return
        self._pods[name] = obj
        job = (obj["metadata"].get("labels") or {}).get(JOB_LABEL)
        if job:
            self._dirty.add(job)
            self._pods_of.setdefault(job, set()).add(name)
        if name in self._log_tail or name in self._log_busy:
            return
        if pod_finished(obj) or event == "DELETED":
            if container_started(obj):
                self._log_busy.add(name)
                self._logs_pool.submit(self._copy_log, name, obj, True)
            else:
                self._log_tail[name] = None

    def _bump(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    # ---- classification ----------------------------------------------------------------------
    def _classify(self, job: Obj, now: float) -> tuple[Observation, bool]:
        name = job["metadata"]["name"]
        memo = self._memo.get(name)
        if memo is not None and name not in self._dirty:
            return memo
        pods = [self._pods[p] for p in sorted(self._pods_of.get(name, ())) if p in self._pods]
        obs, stop = self._classify_now(job, pods, now)
        self._dirty.discard(name)
        if obs.reason in ("Unschedulable", "CopyingLogs"):  # those change with time alone
            self._memo.pop(name, None)
        else:
            self._memo[name] = (obs, stop)
        return obs, stop

    def _classify_now(self, job: Obj, pods: list[Obj], now: float) -> tuple[Observation, bool]:
        annotations = job["metadata"].get("annotations") or {}
        try:
            queue_timeout = float(
                annotations.get(QUEUE_TIMEOUT_ANNOTATION, self.settings.queue_timeout)
            )
        except ValueError:
            queue_timeout = self.settings.queue_timeout
        started = [p for p in pods if container_started(p)]
        tail = self._log_tail.get(started[-1]["metadata"]["name"]) if started else None
        verdict = classify(job, pods, now=now, queue_timeout=queue_timeout, logs_tail=tail)
        obs = verdict.observation
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
            if (waiting or lagging) and now - finished_at < LOG_HOLD_SECONDS:
                # Report the end only once the log is safe in the artifact store.
                return replace(
                    obs, state=TaskState.RUNNING, failure_class=None, reason="CopyingLogs"
                ), False
        return obs, verdict.stop_job

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
                self.artifacts.write_record(log_key(attempt_id), self._merge(attempt_id, pod, text))
            except Exception as exc:
                log.warning("could not store the log of attempt %s: %s", attempt_id, exc)
        tail = None
        if text:
            tail = "\n".join(text.rstrip("\n").splitlines()[-self.settings.log_tail_lines :])
        with self._changed:
            self._log_synced[pod] = time.time()
            if final:
                self._log_tail[pod] = tail
                job = (obj["metadata"].get("labels") or {}).get(JOB_LABEL)
                if job:
                    self._dirty.add(job)
            self._log_busy.discard(pod)
            self._bump()

    def _merge(self, attempt_id: str, pod: str, text: str) -> bytes:
        """The attempt's log: earlier pods' logs (replaced after a disruption), then this one's."""
        job = job_name(attempt_id)
        with self._lock:
            pods = sorted(
                self._pods_of.get(job, ()),
                key=lambda p: str(
                    self._pods.get(p, {}).get("metadata", {}).get("creationTimestamp", "")
                ),
            )
        if len(pods) <= 1:
            return text.encode()
        previous = self.artifacts.read_record(log_key(attempt_id)) or b""
        marker = f"==> pod {pod} <==\n".encode()
        if marker in previous:
            previous = previous[: previous.index(marker)]
        return previous + marker + text.encode()

    def _housekeep(self) -> None:
        interval = self.settings.log_sync_seconds
        while not self._stop.wait(min(interval or 60.0, 60.0)):
            now = time.time()
            with self._lock:
                for name, when in list(self._deleted_jobs.items()):
                    if now - when > TOMBSTONE_SECONDS:
                        self._forget_job(name)
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
        self._jobs.pop(name, None)
        self._memo.pop(name, None)
        self._dirty.discard(name)
        self._deleted_jobs.pop(name, None)
        for pod in self._pods_of.pop(name, set()):
            self._pods.pop(pod, None)
            self._log_tail.pop(pod, None)
            self._log_synced.pop(pod, None)

    # ---- API calls ---------------------------------------------------------------------------
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
        """One API call, retried with backoff on 429, 5xx and dropped connections; the body."""
        kwargs.setdefault("_preload_content", False)
        kwargs.setdefault("_request_timeout", self.settings.request_timeout)
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_max)
        attempts = 8
        for attempt in range(attempts):
            last = attempt == attempts - 1 or self._stop.is_set()
            try:
                resp = fn(*args, **kwargs)
                try:
                    return bytes(resp.data)
                finally:
                    resp.release_conn()  # back to the pool: one keep-alive connection
            except ApiException as exc:
                retriable = exc.status == 429 or exc.status >= 500 or exc.status == 0
                if not retriable or last:
                    raise
                delay = backoff.next(retry_after(exc))
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                if last:
                    raise BackendError(f"the Kubernetes API is unreachable: {exc}") from exc
                delay = backoff.next()
            log.debug("retrying %s in %.2f s", getattr(fn, "__name__", fn), delay)
            self._stop.wait(delay)
        raise AssertionError("unreachable")  # pragma: no cover
