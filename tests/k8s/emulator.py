"""A Kubernetes API emulator: a real HTTP server on loopback, with a simulated job controller,
scheduler and kubelet, for testing the Kubernetes backend with the real ``kubernetes`` client.

It speaks the part of the API the backend uses: create/get/list/delete/watch of ``batch/v1``
Jobs and ``v1`` Pods, create/get/list/delete of ``v1`` Services (label selectors,
``resourceVersion``, ``limit``/``continue``, bookmarks, chunked watch streams, ``ERROR`` events
with 410 Gone), pod logs, and ``Status`` bodies for 404/409/410/429/500. The simulation moves
pods through the status shapes documented in ``shared/reference/kubernetes-jobs.md`` (§1.3):
success, exit codes, OOMKilled/137, preemption, API eviction, node-pressure eviction, node loss,
image pull failure, config errors, admission errors, unschedulable pods, and the Job
controller's ``podFailurePolicy``, ``backoffLimit``, ``activeDeadlineSeconds`` and
``ttlSecondsAfterFinished``.

Indexed Jobs (``completionMode: Indexed``) get one pod per index, each with the
``batch.kubernetes.io/job-completion-index`` annotation and label and the hostname
``<job>-<index>``; ``script_index`` scripts one index (one rank of a gang fails while the others
run). When a Job fails, the Job controller stops its remaining pods (SIGTERM: exit 143) before it
sets ``Failed``. With ``execute=True`` the kubelet runs ``torchrun`` commands through
``tests/k8s/fake_torchrun.py`` (the same flags, one process per local rank, no torch import),
with the pods' hostnames resolving to loopback.
With ``kubelet=PodmanKubelet(...)`` (``tests/k8s/podman_kubelet.py``) each pod's container runs
in podman instead: its image, user and limits (cgroups) are real.

Faults: ``drop_watches()`` cuts every open watch; ``gone(n)`` answers the next ``n`` watches with
410 Gone; ``fail(status, n)`` answers the next ``n`` requests with 429/500.

Run standalone (for benchmarks): ``python tests/k8s/emulator.py`` prints ``READY <url>``;
``GET /_emulator/stats`` returns request counts and the time each Job finished.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import copy
import heapq
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ATTEMPT_ANNOTATION = "usina.dev/attempt-id"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
FAKE_TORCHRUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_torchrun.py")
Obj = dict[str, Any]
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_FIELD_REF = re.compile(r"metadata\.(annotations|labels)\['([^']+)'\]")


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, **details: Any) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


@dataclass(frozen=True)
class PodScript:
    """What happens to one pod of a Job.

    outcome: ``succeed``, ``exit`` (``exit_code``), ``oom`` (137 OOMKilled), ``kill137`` (137,
    no reason), ``preempt`` (scheduler preemption), ``evict`` (Eviction API), ``pressure``
    (kubelet node-pressure eviction), ``node_lost`` (taint manager, then PodGC), ``image_pull``,
    ``config_error``, ``admission`` (UnexpectedAdmissionError), ``unschedulable``, ``hang``.
    run: seconds the container runs before the outcome.
    pending: seconds the pod first stays ``Unschedulable`` (waiting for a node) before it is
        scheduled and runs as scripted.
    """

    outcome: str = "succeed"
    exit_code: int = 1
    run: float = 0.05
    logs: tuple[str, ...] = ("usina runtime: starting step", "usina runtime: step finished")
    message: str | None = None
    pending: float = 0.0


SUCCEED = PodScript()


@dataclass
class _Sim:
    script: PodScript
    job: str
    started: float | None = None
    waited: bool = False


@dataclass
class Selector:
    terms: list[tuple[str, str, str | None]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        sel = cls()
        for raw in (text or "").split(","):
            term = raw.strip()
            if not term:
                continue
            if "!=" in term:
                k, v = term.split("!=", 1)
                sel.terms.append((k.strip(), "!=", v.strip()))
            elif "==" in term:
                k, v = term.split("==", 1)
                sel.terms.append((k.strip(), "=", v.strip()))
            elif "=" in term:
                k, v = term.split("=", 1)
                sel.terms.append((k.strip(), "=", v.strip()))
            elif term.startswith("!"):
                sel.terms.append((term[1:], "!", None))
            else:
                sel.terms.append((term, "exists", None))
        return sel

    def matches(self, labels: dict[str, str]) -> bool:
        for key, op, value in self.terms:
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
            if op == "exists" and key not in labels:
                return False
            if op == "!" and key in labels:
                return False
        return True


@dataclass
class _Event:
    rv: int
    kind: str
    namespace: str
    labels: dict[str, str]
    line: bytes


class Emulator:
    """The API server, its store, and the simulated controllers. Use as a context manager."""

    def __init__(
        self,
        *,
        tick: float = 0.01,
        bookmark_every: float = 1.0,
        seed: int = 0,
        execute: bool = False,
        kubelet: Any = None,
    ) -> None:
        self.tick = tick
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bookmark_every = bookmark_every
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 1
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.history: list[_Event] = []
        self._history_rvs: list[int] = []
        self.compacted_rv = 0
        self.requests: collections.Counter[str] = collections.Counter()
        self.request_log: list[tuple[str, str]] = []
        # What RBAC authorizes, for every request (routes the emulator lacks included):
        # (API group, resource[/subresource], verb), e.g. ("", "pods/log", "get").
        self.access_log: list[tuple[str, str, str]] = []
        self.created: list[Obj] = []  # the bodies of create requests, as the client sent them
        self.patches: list[tuple[str, str, Obj]] = []  # (kind, name, patch) as sent
        self.scripts: dict[str, list[PodScript]] = {}
        self.log_delay = 0.0  # seconds every pod log read takes before it answers
        self.suffix_scripts: dict[str, list[PodScript]] = {}
        self.index_scripts: dict[tuple[str, int], list[PodScript]] = {}
        #: Pods the Job controller created, per Job name (a gang restarts as a new Job, never
        #: as a replacement pod).
        self.pods_created: collections.Counter[str] = collections.Counter()
        #: Seconds a pod the Job controller stopped stays (terminated) before it is removed.
        self.linger = 1.0
        self._ports: dict[str, int] = {}  # job uid -> the loopback port of its rendezvous
        # execute=True: the kubelet really runs each container's command (``python`` is this
        # interpreter) as a local process; its output is the pod log, its exit code the pod's.
        self.default_script = PodScript("execute") if execute or kubelet else SUCCEED
        # kubelet=PodmanKubelet(...) (tests/k8s/podman_kubelet.py): the containers run in podman.
        self.kubelet = kubelet
        self.logs: dict[str, list[str]] = {}
        self.finished_at: dict[str, float] = {}
        self.on_pod_succeeded: Callable[[Obj, Obj], None] | None = None
        #: Kueue's partial admission: attempt id -> the pods Kueue admits its Job with (when
        #: the Job allows it: ``kueue.x-k8s.io/job-min-parallelism``), as when quota is short.
        self.partial_admission: dict[str, int] = {}
        self.admitted_with: dict[str, int] = {}  # Job name -> the parallelism it started with
        self._sims: dict[str, _Sim] = {}
        self._pods_made: collections.Counter[str] = collections.Counter()
        self._index_made: collections.Counter[tuple[str, int]] = collections.Counter()
        self._faults: list[tuple[int, str | None, float | None]] = []  # status, verb, retry-after
        self._gone = 0
        self._watches: set[socket.socket] = set()
        self._snapshots: dict[str, list[Obj]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._timer_wake = threading.Condition(threading.Lock())
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Emulator:
        serve = lambda: self.server.serve_forever(poll_interval=0.05)  # noqa: E731
        for target in (serve, self._run_timers):
            thread = threading.Thread(target=target, daemon=True, name="k8s-emulator")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            procs = list(self._procs.values())
        for proc in procs:
            _kill(proc)
        if self.kubelet is not None:
            self.kubelet.close()
        with self._timer_wake:
            self._timer_wake.notify_all()
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()
        with self.cond:
            self.cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test controls ---------------------------------------------------------------------
    def script(self, attempt_id: str, *pods: PodScript) -> None:
        """What the pods of this attempt's Job do, in order (the last one repeats)."""
        with self.lock:
            self.scripts[attempt_id] = list(pods)

    def script_suffix(self, suffix: str, *pods: PodScript) -> None:
        """What the pods of every attempt whose id ends with ``suffix`` (``"-train-1"``: the
        first attempt of step train, whatever the run) do, unless ``script`` names it."""
        with self.lock:
            self.suffix_scripts[suffix] = list(pods)

    def script_index(self, attempt_id: str, index: int, *pods: PodScript) -> None:
        """What the pods of one index of this attempt's Indexed Job do, in order (the last one
        repeats); the other indexes follow ``script`` or the default."""
        with self.lock:
            self.index_scripts[(attempt_id, index)] = list(pods)

    def drop_watches(self) -> None:
        """Cut every open watch connection (as a load balancer or API server restart would)."""
        with self.lock:
            socks = list(self._watches)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def gone(self, n: int = 1) -> None:
        """The next ``n`` watch requests get ``410 Gone`` (too old resourceVersion)."""
        with self.lock:
            self._gone += n

    def compact(self) -> None:
        """Forget history: watches from an older resourceVersion get 410 Gone."""
        with self.lock:
            self.compacted_rv = self.rv

    def fail(
        self, status: int, n: int, *, verb: str | None = None, retry_after: float | None = None
    ) -> None:
        """The next ``n`` requests (of ``verb``: create/get/list/watch/delete/log) fail."""
        with self.lock:
            self._faults += [(status, verb, retry_after)] * n

    def count(self, *prefixes: str) -> int:
        with self.lock:
            return sum(v for k, v in self.requests.items() if k.startswith(prefixes))

    def get(self, kind: str, name: str, namespace: str = "ml") -> Obj | None:
        with self.lock:
            obj = self.objects.get((kind, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (k, ns, _), o in self.objects.items()
                if k == kind and (namespace is None or ns == namespace)
            ]

    def delete_pod(self, name: str, namespace: str = "ml") -> None:
        with self.lock:
            self._delete(("pods", namespace, name))

    def kueue_evict(self, job_name: str, namespace: str = "ml", reason: str = "Preempted") -> None:
        """What Kueue and the Job controller do when an admitted workload is evicted: the
        Workload gets ``Evicted`` (and ``Preempted``) True, the Job is suspended again and its
        live pods are stopped."""
        with self.lock:
            job = self._job(namespace, job_name)
            if job is None:
                raise KeyError(job_name)
            now = rfc3339(time.time())
            uid = job["metadata"]["uid"]
            conditions = [
                {
                    "type": "Evicted",
                    "status": "True",
                    "reason": reason,
                    "message": "Preempted to accommodate a workload of higher priority",
                    "lastTransitionTime": now,
                },
                {
                    "type": "QuotaReserved",
                    "status": "False",
                    "reason": "Pending",
                    "message": "waiting for quota",
                    "lastTransitionTime": now,
                },
            ]
            if reason == "Preempted":
                conditions.append(
                    {
                        "type": "Preempted",
                        "status": "True",
                        "reason": "InClusterQueue",
                        "message": "preempted by a higher priority workload",
                        "lastTransitionTime": now,
                    }
                )
            workload = {
                "apiVersion": "kueue.x-k8s.io/v1beta1",
                "kind": "Workload",
                "metadata": {
                    "name": f"job-{job_name}-{uid[:5]}",
                    "labels": {"kueue.x-k8s.io/job-uid": uid},
                    "ownerReferences": [
                        {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid}
                    ],
                },
                "spec": {"active": True, "queueName": "team"},
                "status": {"conditions": conditions, "requeueState": {"count": 1}},
            }
            existing = self.objects.get(("workloads", namespace, workload["metadata"]["name"]))
            if existing is None:
                self._create("workloads", namespace, workload)
            else:
                existing["status"] = workload["status"]
                self._update("workloads", existing)
            self._stop_pods(job)
            job["spec"]["suspend"] = True
            job["status"].setdefault("conditions", []).append(
                {
                    "type": "Suspended",
                    "status": "True",
                    "reason": "JobSuspended",
                    "message": "Job suspended",
                    "lastTransitionTime": now,
                }
            )
            job["status"].pop("startTime", None)
            self._update("jobs", job)

    def create_raw(self, kind: str, namespace: str, obj: Obj) -> Obj:
        with self.lock:
            return self._create(kind, namespace, obj)

    # ---- store -----------------------------------------------------------------------------
    def _emit(self, kind: str, type_: str, obj: Obj) -> None:
        meta = obj["metadata"]
        line = json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"
        event = _Event(
            self.rv, kind, meta.get("namespace", ""), dict(meta.get("labels") or {}), line
        )
        self.history.append(event)
        self._history_rvs.append(self.rv)
        self.cond.notify_all()

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _create(self, kind: str, namespace: str, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        key = (kind, namespace, meta["name"])
        if key in self.objects:
            raise _HttpError(
                409,
                status_body(
                    409,
                    "AlreadyExists",
                    f'{kind}.batch "{meta["name"]}" already exists',
                    name=meta["name"],
                    kind=kind,
                ),
            )
        meta["uid"] = f"{self._rng.getrandbits(64):016x}"
        meta["creationTimestamp"] = rfc3339(time.time())
        meta.setdefault("generation", 1)
        self._bump(obj)
        self.objects[key] = obj
        self._emit(kind, "ADDED", obj)
        if kind == "jobs":
            self._after(0, lambda: self._start_job(namespace, meta["name"]))
        return obj

    def _update(self, kind: str, obj: Obj) -> None:
        self._bump(obj)
        self._emit(kind, "MODIFIED", obj)

    def _delete(self, key: tuple[str, str, str], propagation: str = "Background") -> Obj | None:
        obj = self.objects.pop(key, None)
        if obj is None:
            return None
        self._bump(obj)
        self._emit(key[0], "DELETED", obj)
        if propagation != "Orphan":  # the garbage collector: dependents of a deleted owner
            uid = obj["metadata"].get("uid")
            for okey, other in list(self.objects.items()):
                refs = other["metadata"].get("ownerReferences") or []
                if okey[1] == key[1] and any(r.get("uid") == uid for r in refs):
                    self._delete(okey)
        if key[0] == "jobs" and propagation != "Orphan":
            for pkey, pod in list(self.objects.items()):
                labels = pod["metadata"].get("labels", {})
                if pkey[0] == "pods" and labels.get("batch.kubernetes.io/job-name") == key[2]:
                    self._delete(pkey)
        if key[0] == "pods":
            self._sims.pop(key[2], None)
            proc = self._procs.pop(key[2], None)
            if proc is not None:
                _kill(proc)
        return obj

    # ---- timers ----------------------------------------------------------------------------
    def _after(self, delay: float, fn: Callable[[], None]) -> None:
        with self._timer_wake:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), fn))
            self._timer_wake.notify()

    def _run_timers(self) -> None:
        while not self._stop.is_set():
            with self._timer_wake:
                if not self._timers:
                    self._timer_wake.wait(0.5)
                    continue
                due, _, fn = self._timers[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._timer_wake.wait(delay)
                    continue
                heapq.heappop(self._timers)
            with self.lock:
                fn()

    # ---- job controller --------------------------------------------------------------------
    def _job(self, namespace: str, name: str) -> Obj | None:
        return self.objects.get(("jobs", namespace, name))

    def _start_job(self, namespace: str, name: str) -> None:
        job = self._job(namespace, name)
        if job is None or job.get("status", {}).get("startTime"):
            return
        job["status"] = {
            "startTime": rfc3339(time.time()),
            "active": 0,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        }
        self._update("jobs", job)
        if job["spec"].get("suspend"):
            return
        self._admit_partially(job)
        if _indexed(job):
            for index in range(int(job["spec"].get("parallelism", 1))):
                self._new_pod(job, index)
        else:
            self._new_pod(job)
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline:
            uid = job["metadata"]["uid"]
            self._after(float(deadline), lambda: self._deadline(namespace, name, uid))

    def _admit_partially(self, job: Obj) -> None:
        """What Kueue does to a Job it admits with fewer pods (KEP-420), before starting it:
        ``parallelism`` lowered, ``completions`` with it when the Job asks for that."""
        annotations = job["metadata"].get("annotations") or {}
        attempt = annotations.get(ATTEMPT_ANNOTATION, "")
        count = self.partial_admission.get(attempt)
        least = annotations.get("kueue.x-k8s.io/job-min-parallelism")
        if count is not None and least is not None:
            if count < int(least):
                raise AssertionError(f"Kueue never admits below job-min-parallelism {least}")
            job["spec"]["parallelism"] = count
            if annotations.get("kueue.x-k8s.io/job-completions-equal-parallelism") == "true":
                job["spec"]["completions"] = count
            self._update("jobs", job)
        self.admitted_with[job["metadata"]["name"]] = int(job["spec"].get("parallelism", 1))

    def _script_for(self, job: Obj, index: int | None) -> PodScript:
        attempt = job["metadata"].get("annotations", {}).get(ATTEMPT_ANNOTATION, "")
        uid = job["metadata"]["uid"]
        if index is not None:
            n = self._index_made[(uid, index)]
            scripts = self.index_scripts.get((attempt, index)) or self.scripts.get(attempt)
        else:
            n = self._pods_made[uid]
            scripts = self.scripts.get(attempt)
        if not scripts:  # by the end of the attempt id: "-train-1" (run ids not known yet)
            scripts = next((v for k, v in self.suffix_scripts.items() if attempt.endswith(k)), None)
        scripts = scripts or [self.default_script]
        return scripts[min(n, len(scripts) - 1)]

    def _new_pod(self, job: Obj, index: int | None = None) -> None:
        meta = job["metadata"]
        script = self._script_for(job, index)
        self._pods_made[meta["uid"]] += 1
        self.pods_created[meta["name"]] += 1
        suffix = "".join(self._rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        name = f"{meta['name']}-{suffix}"
        template = copy.deepcopy(job["spec"]["template"])
        labels = dict(template.get("metadata", {}).get("labels", {}))
        annotations = dict(template.get("metadata", {}).get("annotations", {}))
        if index is not None:
            self._index_made[(meta["uid"], index)] += 1
            name = f"{meta['name']}-{index}-{suffix}"
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            template["spec"]["hostname"] = f"{meta['name']}-{index}"
        labels.update(
            {
                "batch.kubernetes.io/job-name": meta["name"],
                "job-name": meta["name"],
                "batch.kubernetes.io/controller-uid": meta["uid"],
                "controller-uid": meta["uid"],
            }
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        }
        self._create("pods", meta["namespace"], pod)
        self._sims[name] = _Sim(script, meta["name"])
        job["status"]["active"] = job["status"].get("active", 0) + 1
        self._update("jobs", job)
        ns = meta["namespace"]
        self._after(self.tick, lambda: self._schedule(ns, name))

    def _pod_failed(self, namespace: str, pod: Obj) -> None:
        """The Job controller sees a terminal failed pod: podFailurePolicy, then backoffLimit."""
        job_name = pod["metadata"]["labels"].get("batch.kubernetes.io/job-name")
        job = self._job(namespace, job_name) if job_name else None
        if job is None or _finished(job):
            return
        status = job["status"]
        status["active"] = max(0, status.get("active", 0) - 1)
        action, message = "Count", ""
        for index, rule in enumerate(job["spec"].get("podFailurePolicy", {}).get("rules", [])):
            if _rule_matches(rule, pod):
                action = rule["action"]
                message = _rule_message(rule, index, pod, namespace)
                break
        index = _index_of(pod)
        if action == "Ignore":
            self._update("jobs", job)
            self._new_pod(job, index)
            return
        if action == "FailJob":
            status["failed"] = status.get("failed", 0) + 1
            self._finish(job, "Failed", "PodFailurePolicy", message)
            return
        status["failed"] = status.get("failed", 0) + 1
        if status["failed"] > int(job["spec"].get("backoffLimit", 6)):
            self._finish(
                job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
        else:
            self._update("jobs", job)
            self._new_pod(job, index)

    def _pod_succeeded(self, namespace: str, pod: Obj) -> None:
        job_name = pod["metadata"]["labels"].get("batch.kubernetes.io/job-name")
        job = self._job(namespace, job_name) if job_name else None
        if job is None or _finished(job):
            return
        status = job["status"]
        status["active"] = max(0, status.get("active", 0) - 1)
        status["ready"] = max(0, status.get("ready", 0) - 1)
        status["succeeded"] = status.get("succeeded", 0) + 1
        index = _index_of(pod)
        if index is not None:
            done = _parse_indexes(status.get("completedIndexes", "")) | {index}
            status["completedIndexes"] = _format_indexes(done)
            if len(done) < int(job["spec"].get("completions", 1)):
                self._update("jobs", job)
                return
        self._finish(
            job, "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
        )

    def _finish(self, job: Obj, kind: str, reason: str, message: str) -> None:
        now = rfc3339(time.time())
        interim = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        conditions = job["status"].setdefault("conditions", [])

        def condition(ctype: str) -> Obj:
            return {
                "type": ctype,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }

        conditions.append(condition(interim))
        if kind == "Failed" and self._live_pods(job):
            # The Job controller stops the pods still running (a gang's other ranks), and sets
            # Failed once they are terminal (podReplacementPolicy: Failed counts them).
            self._update("jobs", job)
            self._stop_pods(job)
        conditions.append(condition(kind))
        job["status"]["ready"] = 0
        if kind == "Complete":
            job["status"]["completionTime"] = now
        self._update("jobs", job)
        self.finished_at[job["metadata"]["name"]] = time.time()
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            key = ("jobs", job["metadata"]["namespace"], job["metadata"]["name"])
            uid = job["metadata"]["uid"]
            self._after(float(ttl), lambda: self._ttl_delete(key, uid))

    def _live_pods(self, job: Obj) -> list[tuple[tuple[str, str, str], Obj]]:
        name = job["metadata"]["name"]
        return [
            (key, pod)
            for key, pod in self.objects.items()
            if key[0] == "pods"
            and key[1] == job["metadata"]["namespace"]
            and pod["metadata"]["labels"].get("batch.kubernetes.io/job-name") == name
            and pod["status"]["phase"] not in ("Succeeded", "Failed")
        ]

    def _stop_pods(self, job: Obj) -> None:
        """Delete the Job's live pods: SIGTERM (exit 143), Failed, removed ``linger`` s later."""
        now = rfc3339(time.time())
        status = job["status"]
        for key, pod in self._live_pods(job):
            self._sims.pop(key[2], None)
            proc = self._procs.pop(key[2], None)
            if proc is not None:
                _kill(proc)
            pod["metadata"]["deletionTimestamp"] = now
            pod["metadata"]["deletionGracePeriodSeconds"] = 30
            if pod["status"]["phase"] == "Running":
                _terminate(pod, 143, "Error")
            pod["status"]["phase"] = "Failed"
            _not_ready(pod, now, "PodFailed")
            self._update("pods", pod)
            status["failed"] = status.get("failed", 0) + 1
            uid = pod["metadata"]["uid"]
            self._after(self.linger, lambda key=key, uid=uid: self._remove(key, uid))
        status["active"] = 0
        status["ready"] = 0

    def _remove(self, key: tuple[str, str, str], uid: str) -> None:
        obj = self.objects.get(key)
        if obj is not None and obj["metadata"]["uid"] == uid:
            self._delete(key)

    def _ttl_delete(self, key: tuple[str, str, str], uid: str) -> None:
        obj = self.objects.get(key)
        if obj is not None and obj["metadata"]["uid"] == uid:
            self._delete(key, "Background")

    def _deadline(self, namespace: str, name: str, uid: str) -> None:
        job = self._job(namespace, name)
        if job is None or job["metadata"]["uid"] != uid or _finished(job):
            return
        now = rfc3339(time.time())
        message = "Job was active longer than specified deadline"
        job["status"].setdefault("conditions", []).append(
            {
                "type": "FailureTarget",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": message,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
        )
        self._update("jobs", job)
        for key, pod in list(self.objects.items()):
            if (
                key[0] != "pods"
                or pod["metadata"]["labels"].get("batch.kubernetes.io/job-name") != name
                or pod["status"]["phase"] in ("Succeeded", "Failed")
            ):
                continue
            self._sims.pop(key[2], None)
            pod["metadata"]["deletionTimestamp"] = now
            if pod["status"]["phase"] == "Running":
                _terminate(pod, 143, "Error")
            pod["status"]["phase"] = "Failed"
            self._update("pods", pod)
            self._delete(key)
        job["status"]["conditions"] = [
            c for c in job["status"]["conditions"] if c["type"] != "FailureTarget"
        ]
        job["status"]["active"] = 0
        job["status"]["failed"] = job["status"].get("failed", 0) + 1
        self._finish(job, "Failed", "DeadlineExceeded", message)

    # ---- scheduler and kubelet -------------------------------------------------------------
    def _pod(self, namespace: str, name: str) -> tuple[Obj, _Sim] | None:
        pod = self.objects.get(("pods", namespace, name))
        sim = self._sims.get(name)
        return (pod, sim) if pod is not None and sim is not None else None

    def _schedule(self, namespace: str, name: str) -> None:
        found = self._pod(namespace, name)
        if found is None:
            return
        pod, sim = found
        now = rfc3339(time.time())
        delay = sim.script.pending > 0 and not sim.waited
        if delay:
            sim.waited = True
            self._after(sim.script.pending, lambda: self._schedule(namespace, name))
        if sim.script.outcome == "unschedulable" or delay:
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastProbeTime": None,
                    "lastTransitionTime": now,
                    "message": sim.script.message
                    or (
                        "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 "
                        "nodes are available: 4 No preemption victims found for incoming pod."
                    ),
                }
            ]
            self._update("pods", pod)
            return
        pod["spec"]["nodeName"] = "gpu-node-1"
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
        ]
        if sim.script.outcome == "admission":
            pod["status"].update(
                {
                    "phase": "Failed",
                    "reason": "UnexpectedAdmissionError",
                    "message": sim.script.message
                    or (
                        "Pod was rejected: Allocate failed due to requested number of devices "
                        "unavailable for nvidia.com/gpu. Requested: 1, Available: 0, which is "
                        "unexpected"
                    ),
                    "startTime": now,
                }
            )
            self._update("pods", pod)
            self._sims.pop(name, None)
            self._pod_failed(namespace, pod)
            return
        self._update("pods", pod)
        self._after(self.tick, lambda: self._kubelet_start(namespace, name))

    def _kubelet_start(self, namespace: str, name: str) -> None:
        found = self._pod(namespace, name)
        if found is None:
            return
        pod, sim = found
        now = rfc3339(time.time())
        image = pod["spec"]["containers"][0]["image"]
        status = pod["status"]
        status["hostIP"] = "10.0.0.7"
        status["podIP"] = f"10.1.{self._rng.randint(0, 255)}.{self._rng.randint(1, 254)}"
        status["startTime"] = now
        conditions = status["conditions"]
        if sim.script.outcome in ("image_pull", "config_error"):
            if sim.script.outcome == "image_pull":
                waiting = {
                    "reason": "ErrImagePull",
                    "message": (
                        "rpc error: code = NotFound desc = failed to pull and unpack image "
                        f'"{image}": failed to resolve reference "{image}": not found'
                    ),
                }
            else:
                waiting = {
                    "reason": "CreateContainerConfigError",
                    "message": sim.script.message or 'secret "warehouse-creds" not found',
                }
            conditions += [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "message": "containers with unready status: [main]",
                    "lastTransitionTime": now,
                },
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "message": "containers with unready status: [main]",
                    "lastTransitionTime": now,
                },
            ]
            status["containerStatuses"] = [
                {
                    "name": "main",
                    "image": image,
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "lastState": {},
                    "state": {"waiting": waiting},
                }
            ]
            self._update("pods", pod)
            if sim.script.outcome == "image_pull":
                self._after(self.tick * 3, lambda: self._backoff_pull(namespace, name))
            return
        conditions += [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ]
        status["phase"] = "Running"
        status["containerStatuses"] = [
            {
                "name": "main",
                "image": image,
                "imageID": f"{image}@sha256:{'ab' * 32}",
                "containerID": f"containerd://{self._rng.getrandbits(128):032x}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "lastState": {},
                "state": {"running": {"startedAt": now}},
            }
        ]
        sim.started = time.time()
        self.logs[name] = list(sim.script.logs)
        self._update("pods", pod)
        job = self._job(namespace, sim.job)
        if job is not None and not _finished(job):
            job["status"]["ready"] = job["status"].get("ready", 0) + 1
            self._update("jobs", job)
        if sim.script.outcome == "execute":
            self.logs[name] = []
            self._execute(namespace, name, pod)
        elif sim.script.outcome != "hang":
            self._after(sim.script.run, lambda: self._outcome(namespace, name))

    def _execute(self, namespace: str, name: str, pod: Obj) -> None:
        container = pod["spec"]["containers"][0]
        env = _container_env(pod, container)
        # The kubelet expands $(VAR) in the command from the container's environment.
        command = [
            _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), arg)
            for arg in container["command"]
        ]
        if self.kubelet is not None:
            self._procs[name] = proc = self.kubelet.start(pod, container, env, command)
        else:
            self._procs[name] = proc = self._local_process(pod, env, command)

        def pump() -> None:
            assert proc.stdout is not None
            with proc.stdout:
                for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    with self.lock:
                        self.logs.setdefault(name, []).append(line)
            code = proc.wait()
            with self.lock:
                if self._procs.pop(name, None) is None:
                    return  # killed: the pod was deleted
                self._exited(namespace, name, code, getattr(proc, "reason", None))

        threading.Thread(target=pump, daemon=True, name=f"kubelet-{name}").start()

    def _local_process(
        self, pod: Obj, env: dict[str, str], command: list[str]
    ) -> subprocess.Popen[bytes]:
        if command[0] == "python":
            command[0] = sys.executable
        elif command[0] == "torchrun":
            command = [sys.executable, FAKE_TORCHRUN, *self._loopback(pod, command[1:])]
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a process group: torchrun's ranks die with their pod
        )

    def _loopback(self, pod: Obj, args: list[str]) -> list[str]:
        """Cluster DNS, emulated: the rendezvous host (rank 0's pod) is this machine, and each
        Job gets its own free port, so gangs of parallel tests never meet."""
        uid = pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"]
        if uid not in self._ports:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self._ports[uid] = sock.getsockname()[1]
        port = self._ports[uid]
        out: list[str] = []
        for arg in args:
            if arg.startswith("--master-addr="):
                arg = "--master-addr=127.0.0.1"
            elif arg.startswith("--master-port="):
                arg = f"--master-port={port}"
            elif arg.startswith("--rdzv-endpoint="):
                arg = f"--rdzv-endpoint=127.0.0.1:{port}"
            out.append(arg)
        return out

    def _exited(self, namespace: str, name: str, code: int, reason: str | None = None) -> None:
        found = self._pod(namespace, name)
        if found is None:
            return
        pod, sim = found
        now = rfc3339(time.time())
        _terminate(pod, code, reason or ("Completed" if code == 0 else "Error"))
        pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        _not_ready(pod, now, "PodCompleted" if code == 0 else "PodFailed")
        self._update("pods", pod)
        self._sims.pop(name, None)
        if code == 0:
            self._pod_succeeded(namespace, pod)
        else:
            self._pod_failed(namespace, pod)

    def _backoff_pull(self, namespace: str, name: str) -> None:
        found = self._pod(namespace, name)
        if found is None:
            return
        pod, _ = found
        image = pod["spec"]["containers"][0]["image"]
        pod["status"]["containerStatuses"][0]["state"] = {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{image}"',
            }
        }
        self._update("pods", pod)

    def _outcome(self, namespace: str, name: str) -> None:
        found = self._pod(namespace, name)
        if found is None:
            return
        pod, sim = found
        outcome = sim.script.outcome
        now = rfc3339(time.time())
        status = pod["status"]
        if outcome == "succeed":
            _terminate(pod, 0, "Completed")
            status["phase"] = "Succeeded"
            _not_ready(pod, now, "PodCompleted")
            self._update("pods", pod)
            self._sims.pop(name, None)
            job = self._job(namespace, sim.job)
            if self.on_pod_succeeded is not None and job is not None:
                self.on_pod_succeeded(copy.deepcopy(job), copy.deepcopy(pod))
            self._pod_succeeded(namespace, pod)
            return
        if outcome in ("exit", "oom", "kill137"):
            code, reason = {
                "exit": (sim.script.exit_code, "Error"),
                "oom": (137, "OOMKilled"),
                "kill137": (137, "Error"),
            }[outcome]
            if outcome == "exit":
                self.logs[name] += [
                    "Traceback (most recent call last):",
                    '  File "pipeline.py", line 12, in train',
                    "ValueError: learning rate must be positive",
                ]
            _terminate(pod, code, reason)
            status["phase"] = "Failed"
            _not_ready(pod, now, "PodFailed")
            self._update("pods", pod)
            self._sims.pop(name, None)
            self._pod_failed(namespace, pod)
            return
        if outcome == "pressure":
            message = sim.script.message or (
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: "
                "42Mi. Container main was using 5Gi, which exceeds its request of 4Gi. "
            )
            status["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": message,
                    "lastTransitionTime": now,
                }
            )
            status.update({"phase": "Failed", "reason": "Evicted", "message": message})
            _terminate(pod, 137, "Error")
            _not_ready(pod, now, "PodFailed")
            self._update("pods", pod)
            self._sims.pop(name, None)
            self._pod_failed(namespace, pod)
            return
        if outcome in ("preempt", "evict", "node_lost"):
            reason, message = {
                "preempt": (
                    "PreemptionByScheduler",
                    "default-scheduler: preempting to accommodate a higher priority pod",
                ),
                "evict": ("EvictionByEvictionAPI", "Eviction API: evicting"),
                "node_lost": (
                    "DeletionByTaintManager",
                    "Taint manager: deleting due to NoExecute taint",
                ),
            }[outcome]
            status["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": now,
                }
            )
            pod["metadata"]["deletionTimestamp"] = now
            pod["metadata"]["deletionGracePeriodSeconds"] = 30
            self._update("pods", pod)
            self._after(self.tick, lambda: self._disrupted(namespace, name))
            return
        raise AssertionError(f"unknown outcome {outcome!r}")  # pragma: no cover

    def _disrupted(self, namespace: str, name: str) -> None:
        found = self._pod(namespace, name)
        if found is None:
            return
        pod, sim = found
        now = rfc3339(time.time())
        if sim.script.outcome != "node_lost":  # the kubelet stops the container (SIGTERM)
            _terminate(pod, 143, "Error")
        # node_lost: the kubelet is unreachable, the container status stays stale ("running");
        # PodGC marks the pod Failed and deletes it once the node object is gone.
        pod["status"]["phase"] = "Failed"
        _not_ready(pod, now, "PodFailed")
        self._update("pods", pod)
        self._sims.pop(name, None)
        self._pod_failed(namespace, pod)
        key = ("pods", namespace, name)
        self._after(self.tick, lambda: self._delete(key) and None)

    # ---- HTTP ------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(_Handler):
            emu = emulator

        return Handler

    def _take_fault(self, verb: str) -> tuple[int, float | None] | None:
        if not self._faults:  # the usual case, read without the lock (a list's length)
            return None
        with self.lock:
            for i, (status, fverb, retry_after) in enumerate(self._faults):
                if fverb is None or fverb == verb:
                    del self._faults[i]
                    return status, retry_after
        return None

    def stats(self) -> Obj:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "finished": dict(self.finished_at),
                "rv": self.rv,
            }


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()


def _indexed(job: Obj) -> bool:
    return job["spec"].get("completionMode") == "Indexed"


def _index_of(pod: Obj) -> int | None:
    value = (pod["metadata"].get("annotations") or {}).get(INDEX_KEY)
    return int(value) if value is not None else None


def _parse_indexes(text: str) -> set[int]:
    found: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


def _format_indexes(indexes: set[int]) -> str:
    """``completedIndexes`` as the Job controller writes it: ``"0-2,5"``."""
    parts: list[str] = []
    for index in sorted(indexes):
        if parts and parts[-1].split("-")[-1] == str(index - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ",".join(parts)


def _container_env(pod: Obj, container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet builds it (values and downward-API fields)."""
    env: dict[str, str] = {}
    index = _index_of(pod)
    if index is not None:  # the Job controller injects it into every container of the pod
        env["JOB_COMPLETION_INDEX"] = str(index)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _VAR_REF.sub(
                lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
            )
            continue
        path = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
        meta = pod["metadata"]
        match = _FIELD_REF.fullmatch(path)
        if match:
            env[item["name"]] = str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        elif path in ("metadata.name", "metadata.namespace"):
            env[item["name"]] = str(meta.get(path.split(".")[1], ""))
    return env


def _finished(job: Obj) -> bool:
    return any(
        c["type"] in ("Complete", "Failed") and c["status"] == "True"
        for c in job.get("status", {}).get("conditions", [])
    )


def _terminate(pod: Obj, code: int, reason: str) -> None:
    now = rfc3339(time.time())
    for cs in pod["status"].get("containerStatuses", []):
        started = cs.get("state", {}).get("running", {}).get("startedAt", now)
        cs["state"] = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": now,
                "containerID": cs.get("containerID"),
            }
        }
        cs["ready"] = False
        cs["started"] = False


def _not_ready(pod: Obj, now: str, reason: str) -> None:
    for cond in pod["status"].get("conditions", []):
        if cond["type"] in ("Ready", "ContainersReady"):
            cond.update({"status": "False", "reason": reason, "lastTransitionTime": now})


def _rule_matches(rule: Obj, pod: Obj) -> bool:
    if "onPodConditions" in rule:
        conds = {(c["type"], c["status"]) for c in pod["status"].get("conditions", [])}
        return any((p["type"], p.get("status", "True")) in conds for p in rule["onPodConditions"])
    spec = rule.get("onExitCodes")
    if not spec:
        return False
    for cs in pod["status"].get("containerStatuses", []):
        if spec.get("containerName") and cs["name"] != spec["containerName"]:
            continue
        term = cs.get("state", {}).get("terminated")
        if not term or term["exitCode"] == 0:
            continue
        inside = term["exitCode"] in spec["values"]
        if inside == (spec["operator"] == "In"):
            return True
    return False


def _rule_message(rule: Obj, index: int, pod: Obj, namespace: str) -> str:
    name = f"{namespace}/{pod['metadata']['name']}"
    if "onPodConditions" in rule:
        return f"Pod {name} has condition DisruptionTarget matching FailJob rule at index {index}"
    for cs in pod["status"].get("containerStatuses", []):
        term = cs.get("state", {}).get("terminated")
        if term:
            return (
                f"Container {cs['name']} for pod {name} failed with exit code "
                f"{term['exitCode']} matching FailJob rule at index {index}"
            )
    return ""  # pragma: no cover


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (a backend closing its watch) are normal here."""


class _HttpError(Exception):
    def __init__(self, code: int, body: Obj) -> None:
        super().__init__(code)
        self.code = code
        self.body = body


def rbac_attributes(method: str, path: str) -> tuple[str, str, str] | None:
    """The (API group, resource[/subresource], verb) RBAC checks for one request, as the API
    server's request-info resolver derives them; None for non-resource URLs."""
    url = urlparse(path)
    parts = [p for p in url.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2:3]
    watch = parse_qs(url.query).get("watch", [""])[-1] in ("true", "1")
    verb = {
        "GET": "watch" if watch else "get" if name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method, method.lower())
    return group, "/".join([resource, *sub]), verb


_ROUTES = {
    ("apis", "batch", "v1"): "jobs",
    ("api", "v1"): "pods",
}


def _encode(body: Obj) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class _Handler(BaseHTTPRequestHandler):
    emu: Emulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as Go's net/http does; else keep-alive stalls 40 ms

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        return

    # routing: /apis/batch/v1/namespaces/NS/jobs[/NAME], /api/v1/namespaces/NS/pods[/NAME[/log]]
    def _route(self) -> tuple[str, str, str | None, str | None, dict[str, str]]:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if parts[:1] == ["_emulator"]:
            return "stats", "", None, None, query
        try:
            i = parts.index("namespaces")
        except ValueError as exc:
            raise _HttpError(
                404,
                status_body(404, "NotFound", "the server could not find the requested resource"),
            ) from exc
        resource = parts[i + 2] if len(parts) > i + 2 else ""
        if resource not in ("jobs", "pods", "services", "workloads"):
            raise _HttpError(404, status_body(404, "NotFound", f"unknown resource {resource!r}"))
        name = parts[i + 3] if len(parts) > i + 3 else None
        sub = parts[i + 4] if len(parts) > i + 4 else None
        return resource, parts[i + 1], name, sub, query

    def _send_json(self, code: int, body: Obj) -> None:
        data = _encode(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_encoded(self, code: int, data: bytes) -> None:
        """``_send_json`` of a body encoded while the emulator's lock was held: the socket is
        written after it is released (a slow client must not stall every other request)."""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        access = rbac_attributes(method, self.path)
        if access is not None:
            with self.emu.lock:
                self.emu.access_log.append(access)
        try:
            kind, namespace, name, sub, query = self._route()
            if kind == "stats":
                self._send_json(200, self.emu.stats())
                return
            watch = query.get("watch") in ("true", "1")
            verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch"}.get(method) or (
                "log" if sub == "log" else "watch" if watch else "get" if name else "list"
            )
            with self.emu.lock:
                self.emu.requests[f"{verb} {kind}"] += 1
                self.emu.request_log.append((verb, kind))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            fault = self.emu._take_fault(verb)
            if fault is not None:
                code, retry_after = fault
                reason = {
                    429: "TooManyRequests",
                    500: "InternalError",
                    503: "ServiceUnavailable",
                }.get(code, "InternalError")
                body = status_body(code, reason, f"injected fault {code}")
                if retry_after is not None:
                    body["details"] = {"retryAfterSeconds": int(retry_after)}
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", f"{retry_after:g}")
                self.end_headers()
                self.wfile.write(data)
                return
            if verb == "watch":
                self._watch(kind, namespace, query)
            elif verb == "list":
                self._send_json(200, self._list(kind, namespace, query))
            elif verb == "create":
                body = json.loads(raw or b"{}")
                as_sent = copy.deepcopy(body)
                with self.emu.lock:
                    self.emu.created.append(as_sent)
                    data = _encode(self.emu._create(kind, namespace, body))
                self._send_encoded(201, data)
            elif verb == "get":
                with self.emu.lock:
                    obj = self.emu.objects.get((kind, namespace, name or ""))
                    if obj is None:
                        raise _HttpError(404, _not_found(kind, name))
                    data = _encode(obj)
                self._send_encoded(200, data)
            elif verb == "delete":
                options = json.loads(raw) if raw else {}
                propagation = (
                    options.get("propagationPolicy")
                    or query.get("propagationPolicy")
                    or ("Orphan" if kind == "jobs" else "Background")
                )
                with self.emu.lock:
                    obj = self.emu._delete((kind, namespace, name or ""), propagation)
                    if obj is None:
                        raise _HttpError(404, _not_found(kind, name))
                    data = _encode(obj)
                self._send_encoded(200, data)
            elif verb == "log":
                self._log(namespace, name or "", query)
            elif verb == "patch":
                patch = json.loads(raw or b"{}")
                with self.emu.lock:
                    obj = self.emu.objects.get((kind, namespace, name or ""))
                    if obj is None:
                        raise _HttpError(404, _not_found(kind, name))
                    self.emu.patches.append((kind, name or "", copy.deepcopy(patch)))
                    _merge_patch(obj, patch)
                    self.emu._update(kind, obj)
                    data = _encode(obj)
                self._send_encoded(200, data)
        except _HttpError as exc:
            self._send_json(exc.code, exc.body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _list(self, kind: str, namespace: str, query: dict[str, str]) -> Obj:
        emu = self.emu
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with emu.lock:
            if token:
                snap_id, offset = token.rsplit(":", 1)
                items = emu._snapshots.get(snap_id)
                if items is None:
                    raise _HttpError(410, status_body(410, "Expired", "continue token expired"))
                rv = snap_id.split("-")[0]
            else:
                sel = Selector.parse(query.get("labelSelector"))
                items = [
                    copy.deepcopy(o)
                    for (k, ns, _), o in emu.objects.items()
                    if k == kind
                    and ns == namespace
                    and sel.matches(o["metadata"].get("labels") or {})
                ]
                rv = str(emu.rv)
                snap_id = f"{rv}-{len(emu._snapshots)}"
                offset = "0"
                if limit:
                    emu._snapshots[snap_id] = items
        start = int(offset)
        page = items[start : start + limit] if limit else items
        meta: Obj = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            meta["continue"] = f"{snap_id}:{start + limit}"
        kind_name = {
            "jobs": "JobList",
            "pods": "PodList",
            "services": "ServiceList",
            "workloads": "WorkloadList",
        }[kind]
        api = {"jobs": "batch/v1", "workloads": "kueue.x-k8s.io/v1beta1"}.get(kind, "v1")
        return {"kind": kind_name, "apiVersion": api, "metadata": meta, "items": page}

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, kind: str, namespace: str, query: dict[str, str]) -> None:
        emu = self.emu
        sel = Selector.parse(query.get("labelSelector"))
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        since = int(query.get("resourceVersion") or 0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        with emu.lock:
            gone = emu._gone > 0 or (since and since < emu.compacted_rv)
            if emu._gone > 0:
                emu._gone -= 1
            index = bisect.bisect_right(emu._history_rvs, since)
            emu._watches.add(self.connection)
        try:
            if gone:
                body = status_body(
                    410,
                    "Expired",
                    f"too old resource version: {since} ({emu.compacted_rv or emu.rv})",
                )
                self._chunk(json.dumps({"type": "ERROR", "object": body}).encode() + b"\n")
                self._chunk(b"")
                return
            end = time.monotonic() + timeout
            last_sent = time.monotonic()
            while not emu._stop.is_set():
                with emu.cond:
                    if index >= len(emu.history):
                        emu.cond.wait(min(0.05, max(0.0, end - time.monotonic())))
                    events = emu.history[index:]
                    index += len(events)
                    rv = emu.rv
                out = b"".join(
                    e.line
                    for e in events
                    if e.kind == kind and e.namespace == namespace and sel.matches(e.labels)
                )
                if out:
                    self._chunk(out)
                    last_sent = time.monotonic()
                elif bookmarks and time.monotonic() - last_sent > emu.bookmark_every:
                    mark = {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": "Job" if kind == "jobs" else "Pod",
                            "apiVersion": "batch/v1" if kind == "jobs" else "v1",
                            "metadata": {"resourceVersion": str(rv)},
                        },
                    }
                    self._chunk(json.dumps(mark).encode() + b"\n")
                    last_sent = time.monotonic()
                if time.monotonic() >= end:
                    self._chunk(b"")
                    return
        finally:
            with emu.lock:
                emu._watches.discard(self.connection)
            self.close_connection = True

    def _log(self, namespace: str, name: str, query: dict[str, str]) -> None:
        emu = self.emu
        with emu.lock:
            pod = emu.objects.get(("pods", namespace, name))
            if pod is None:
                raise _HttpError(404, _not_found("pods", name))
            lines = emu.logs.get(name)
            if lines is None:
                raise _HttpError(
                    400,
                    status_body(
                        400,
                        "BadRequest",
                        f'container "main" in pod "{name}" is waiting to start: ContainerCreating',
                    ),
                )
            lines = list(lines)
        if emu.log_delay:  # a slow API server's log reads (tests set it)
            time.sleep(emu.log_delay)
        tail = query.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) else []
        data = "".join(line + "\n" for line in lines).encode()
        limit = query.get("limitBytes")
        if limit is not None:
            data = data[: int(limit)]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _merge_patch(obj: Obj, patch: Obj) -> None:
    """A merge patch (maps merged, lists and scalars replaced, null deletes): enough of a
    strategic merge patch for the fields usina patches (metadata.ownerReferences)."""
    for key, value in patch.items():
        if value is None:
            obj.pop(key, None)
        elif isinstance(value, dict) and isinstance(obj.get(key), dict):
            _merge_patch(obj[key], value)
        else:
            obj[key] = copy.deepcopy(value)


def _not_found(kind: str, name: str | None) -> Obj:
    group = "batch" if kind == "jobs" else ""
    prefix = f"{kind}.{group}" if group else kind
    return status_body(
        404, "NotFound", f'{prefix} "{name}" not found', name=name, kind=kind, group=group
    )


def main() -> None:  # pragma: no cover - used by benchmarks/k8s_scale.py
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=float, default=0.05, help="seconds each pod runs")
    args = parser.parse_args()
    emu = Emulator(bookmark_every=5.0)
    emu.default_script = PodScript(run=args.run)
    emu.start()
    print(f"READY {emu.url}", flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        emu.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
