# Over 600 lines: the backend, its watchdog and the process sweep share one lock and table.
"""The local backend: each attempt is a process forked from a warm zygote.

A watchdog thread enforces each attempt's memory limit (an ``oom`` kill) and timeout, and a
reader thread turns the zygote's exit reports into observations. Every attempt holds an
exclusive lock on ``<work_dir>/<attempt>/lock`` while it runs, so a backend started after a
crash can tell a live attempt (lock held: adopt it) from a dead one (lock free: read its
result or error record) without trusting process ids.

No process outlives its attempt. Each attempt runs in a session (and process group) of its own,
and when its main process ends — normally, cancelled or timed out — ``_end_tree`` kills what is
left of it: the process group, then a sweep of every process that is in the attempt's session
or carries its ``USINA_ATTEMPT_ID`` in its environment (a child that made a session of its own,
or double-forked away, still inherits that variable when it executes a program). The zygote is
a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so orphans of an attempt re-parent to it
rather than to PID 1 and are reaped there, never left as zombies in a container whose PID 1
does not reap; and so the sweep searches the zygote's process tree alone
(``usina.backends.local_procs``), not every process of the user, except for an attempt adopted
after a crash, whose orphans went elsewhere. Why not a cgroup per attempt: it needs a delegated
cgroup tree (systemd or root), which a developer laptop or an unprivileged container does not give;
groups, sessions and the environment mark need nothing. A process that both clears its
environment and leaves the session escapes the sweep; only a cgroup would catch it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.backends import local_procs
from usina.engine.failures import ErrorRecord, exit_code_for, exit_failure
from usina.engine.ports import (
    EXIT_OK,
    ArtifactStore,
    Observation,
    Task,
    TaskState,
    error_key,
    log_key,
    result_key,
)
from usina.errors import BackendError
from usina.logtext import truncation_mark
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psutil  # loaded where used: a run that leaves nothing behind never needs it

log = logging.getLogger(__name__)

LOCK_BUSY_EXIT = 75
_LOG_COPY_LIMIT = 4 * 1024 * 1024


@dataclass(slots=True)
class _Attempt:
    id: str
    folder: str
    memory_limit: int | None
    deadline: float | None
    started_at: float
    pid: int | None = None
    adopted: bool = False
    state: TaskState = TaskState.PENDING
    code: int | None = None
    signal: int | None = None
    kill_reason: FailureClass | None = None
    kill_message: str = ""
    kill_sent_at: float | None = None
    finished_at: float | None = None
    peak_memory: int = 0
    gpus: list[int] = field(default_factory=list)
    recorded: ErrorRecord | None = None  # the runtime's error record, for a concluded attempt
    task: dict[str, Any] | None = None  # what the zygote's child runs (``Task.to_json()``)


def detect_gpus() -> list[int]:
    """GPU indices present here: ``USINA_GPUS`` ("0,1" or "none") wins, else nvidia-smi."""
    override = os.environ.get("USINA_GPUS")
    if override is not None:
        return [] if override.strip() in ("", "none") else [int(x) for x in override.split(",")]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(line) for line in out.split() if line.strip().isdigit()]


def _lock_held(path: str) -> bool:
    """Whether some live process holds the attempt's lock (the attempt is running)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _tree_memory(pid: int) -> int:
    """Private memory (USS) of a process and its children; shared zygote pages not counted."""
    import psutil

    total = 0
    for member in [pid, *local_procs.descendants(pid)]:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(member).memory_full_info().uss
    return total


def zygote_command(
    python: str, artifacts_url: str, preload: Sequence[str], modules: Sequence[str] = ()
) -> list[str]:
    """The command line of the zygote of a backend on these arguments."""
    cmd = [python, "-m", "usina.runtime.zygote", "--artifacts", artifacts_url]
    for path in preload:
        cmd += ["--preload", path]
    for module in modules:
        cmd += ["--module", module]
    return cmd


def _start_zygote(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )


# Zygotes started ahead of their backend (``prestart_zygote``), by command line.
_PRESTARTED: dict[tuple[str, ...], subprocess.Popen[bytes]] = {}


def prestart_zygote(
    artifacts_url: str, preload: Sequence[str] = (), *, python: str = sys.executable
) -> None:
    """Start, now, the zygote that a ``LocalBackend`` on these arguments would start at its
    first attempt; the first such backend in this process takes it over.

    Its interpreter start and imports (~0.3 s of CPU) then run while the caller does other
    work (``usina run`` opens the stores meanwhile, another ~0.3 s on a new store) instead of
    after it, on a machine with a second core. One that no backend takes exits when this
    process does: its stdin closes."""
    cmd = zygote_command(python, artifacts_url, preload)
    if tuple(cmd) not in _PRESTARTED:
        _PRESTARTED[tuple(cmd)] = _start_zygote(cmd)


class LocalBackend:
    """Runs attempts as local processes; see the module docstring."""

    name = "local"
    # The zygote's child gets the task in the spawn message, not from the task record: the
    # engine may write the record after the launch (one file fewer between two steps).
    task_inline = True

    def __init__(
        self,
        work_dir: str,
        artifacts: ArtifactStore,
        *,
        preload: Sequence[str] = (),
        modules: Sequence[str] = (),
        python: str = sys.executable,
        watch_interval: float = 0.05,
        kill_grace: float = 3.0,
        gpus: Sequence[int] | None = None,
        enforce_memory: bool = True,
    ) -> None:
        self.work_dir = os.path.abspath(work_dir)
        self.artifacts = artifacts
        self.preload = list(preload)
        self.modules = list(modules)
        self.python = python
        self.watch_interval = watch_interval
        self.kill_grace = kill_grace
        self.enforce_memory = enforce_memory
        self._gpus_all = list(detect_gpus() if gpus is None else gpus)
        self._gpus_free = list(self._gpus_all)
        self._waiting: list[tuple[_Attempt, dict[str, str], int]] = []
        self._attempts: dict[str, _Attempt] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._seen_version = 0
        self._zygote: subprocess.Popen[bytes] | None = None
        # The zygote's pid when it is the subreaper of the attempts' orphans: their leftovers
        # are then all in its process tree (``local_procs``); None: search every process.
        self._reaper: int | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self._warned_gpu: set[str] = set()
        os.makedirs(self.work_dir, exist_ok=True)
        self._watchdog = threading.Thread(target=self._watch, name="usina-watchdog", daemon=True)
        self._watchdog.start()

    # -- Backend protocol -----------------------------------------------------------------

    def launch(self, task: Task) -> None:
        folder = os.path.join(self.work_dir, task.attempt_id)
        with self._lock:
            if task.attempt_id in self._attempts:
                return
            if os.path.exists(os.path.join(folder, "lock")):
                # Started before (by us before a crash, or by an earlier engine): never twice.
                self._adopt_or_conclude(task.attempt_id)
                return
            os.makedirs(folder, exist_ok=True)
            # A distributed step's resources are per node; its gang runs here as one tree.
            nodes = task.nodes
            limit = task.resources.memory_bytes * nodes if self.enforce_memory else None
            now = time.time()
            attempt = _Attempt(
                id=task.attempt_id,
                folder=folder,
                memory_limit=limit,
                deadline=now + task.timeout if task.timeout else None,
                started_at=now,
                task=task.to_json(),
            )
            env = dict(task.env)
            env["USINA_ATTEMPT_ID"] = task.attempt_id
            wanted = task.total_gpus
            self._attempts[task.attempt_id] = attempt
            if wanted and wanted > len(self._gpus_all):
                env["CUDA_VISIBLE_DEVICES"] = ""
                message = (
                    f"step asks for {wanted} GPU(s) but only {len(self._gpus_all)} "
                    "are present here; running on the CPU"
                )
                log.warning("attempt %s: %s", task.attempt_id, message)
                with open(os.path.join(folder, "output.log"), "a") as fh:
                    fh.write(f"usina: warning: {message}\n")
            elif wanted:
                # Wait (PENDING) for enough free GPUs; the watchdog starts it when they are.
                self._waiting.append((attempt, env, wanted))
                self._start_waiting()
                return
            self._spawn(attempt, env)

    def _spawn(self, attempt: _Attempt, env: dict[str, str]) -> None:
        if attempt.deadline is not None:  # the timeout counts from the start, not the queue
            attempt.deadline += time.time() - attempt.started_at
        message: dict[str, object] = {
            "op": "spawn",
            "attempt": attempt.id,
            "dir": attempt.folder,
            "env": env,
        }
        if attempt.task is not None:
            message["task"] = attempt.task
            attempt.task = None  # sent: not kept for the attempt's lifetime
        self._send(message)

    def _start_waiting(self) -> None:
        """Start queued GPU attempts, first come first served, while GPUs are free."""
        while self._waiting:
            attempt, env, wanted = self._waiting[0]
            if attempt.state is not TaskState.PENDING:  # cancelled while it waited
                self._waiting.pop(0)
                continue
            if len(self._gpus_free) < wanted:
                return
            self._waiting.pop(0)
            attempt.gpus = [self._gpus_free.pop(0) for _ in range(wanted)]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, attempt.gpus))
            self._spawn(attempt, env)

    def observe(self, attempt_ids: Sequence[str]) -> dict[str, Observation]:
        seen: dict[str, Observation] = {}
        with self._lock:
            for aid in attempt_ids:
                attempt = self._attempts.get(aid)
                if attempt is None:
                    attempt = self._adopt_or_conclude(aid)
                seen[aid] = self._observation(aid, attempt)
        return seen

    def cancel(self, attempt_id: str) -> None:
        with self._lock:
            attempt = self._attempts.get(attempt_id) or self._adopt_or_conclude(attempt_id)
            if attempt is None or attempt.state not in (TaskState.PENDING, TaskState.RUNNING):
                return
            if attempt.pid is None and any(w[0] is attempt for w in self._waiting):
                attempt.kill_reason = FailureClass.CANCELLED
                attempt.kill_message = "cancelled by a user while it waited for a GPU"
                attempt.state = TaskState.FAILED
                attempt.finished_at = time.time()
                self._notify()
                return
            self._kill(attempt, FailureClass.CANCELLED, "cancelled by a user")

    def logs(self, attempt_id: str) -> str:
        return read_log(self.work_dir, attempt_id)

    def wait(self, timeout: float) -> None:
        with self._changed:
            if self._version == self._seen_version:
                self._changed.wait(timeout)
            self._seen_version = self._version

    def close(self) -> None:
        self._closed = True
        zygote = self._zygote
        if zygote is not None and zygote.stdin is not None:
            with contextlib.suppress(OSError):
                zygote.stdin.close()
            if self._reader is not None:
                # It ends when the zygote's stdout closes, i.e. when the zygote exits: woken
                # by that, not by the polling sleeps of ``Popen.wait(timeout)``.
                self._reader.join(timeout=5)
            try:
                zygote.wait(timeout=5)
            except subprocess.TimeoutExpired:
                zygote.kill()
                zygote.wait(timeout=5)
            if zygote.stdout is not None:
                zygote.stdout.close()
        self._zygote = None
        self._reader = None

    # -- internals ------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _observation(self, aid: str, attempt: _Attempt | None) -> Observation:
        if attempt is None:
            return Observation(TaskState.UNKNOWN)
        if attempt.state in (TaskState.PENDING, TaskState.RUNNING):
            return Observation(attempt.state, started_at=attempt.started_at)
        failure, reason, message = self._classify(attempt)
        return Observation(
            TaskState.SUCCEEDED if failure is None else TaskState.FAILED,
            failure_class=failure,
            exit_code=attempt.code,
            reason=reason,
            message=message,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
        )

    def _classify(self, a: _Attempt) -> tuple[FailureClass | None, str | None, str | None]:
        if a.kill_reason is FailureClass.OOM:
            return FailureClass.OOM, "OOMKilled", a.kill_message
        if a.kill_reason is FailureClass.TIMEOUT:
            return FailureClass.TIMEOUT, "DeadlineExceeded", a.kill_message
        if a.kill_reason is FailureClass.CANCELLED:
            return FailureClass.CANCELLED, "Cancelled", a.kill_message
        if a.kill_reason is FailureClass.NODE_LOST:
            return FailureClass.NODE_LOST, "ProcessLost", a.kill_message
        near = bool(a.memory_limit) and a.peak_memory > 0.8 * (a.memory_limit or 0)
        ended = exit_failure(a.code, signal=a.signal, memory_near_limit=near)
        if ended is None:
            return None, None, None
        # Concluded from the runtime's own error record (no engine watched it end): its class.
        failure = a.recorded.kind if a.recorded is not None else ended.failure
        return failure, ended.reason, ended.message

    def _adopt_or_conclude(self, aid: str) -> _Attempt | None:
        """An attempt this backend did not start: adopt it if alive, else read its outcome."""
        folder = os.path.join(self.work_dir, aid)
        lock = os.path.join(folder, "lock")
        if not os.path.exists(lock):
            return None
        attempt = _Attempt(
            id=aid,
            folder=folder,
            memory_limit=None,
            deadline=None,
            started_at=os.path.getmtime(lock),
            adopted=True,
        )
        if _lock_held(lock):
            attempt.state = TaskState.RUNNING
            attempt.pid = _read_pid(folder)
            log.info("adopted running attempt %s (pid %s)", aid, attempt.pid)
        else:
            self._conclude_from_records(attempt)
        self._attempts[aid] = attempt
        return attempt

    def _conclude_from_records(self, attempt: _Attempt) -> None:
        attempt.finished_at = time.time()
        if self.artifacts.read_record(result_key(attempt.id)) is not None:
            attempt.state = TaskState.SUCCEEDED
            attempt.code = EXIT_OK
            return
        attempt.state = TaskState.FAILED
        raw = self.artifacts.read_record(error_key(attempt.id))
        if raw is None:
            attempt.kill_reason = FailureClass.NODE_LOST
            attempt.kill_message = (
                "the process running this attempt ended without a result while no engine was "
                "watching it (killed, or the machine restarted)"
            )
            return
        attempt.recorded = ErrorRecord.from_json(json.loads(raw))
        attempt.code = exit_code_for(attempt.recorded.kind)

    def _ensure_zygote(self) -> subprocess.Popen[bytes]:
        if self._zygote is not None and self._zygote.poll() is None:
            return self._zygote
        cmd = zygote_command(self.python, self.artifacts.url, self.preload, self.modules)
        started = _PRESTARTED.pop(tuple(cmd), None)
        if started is not None and started.poll() is None:
            self._zygote = started
        else:
            self._zygote = _start_zygote(cmd)
        zygote = self._zygote
        assert zygote.stdout is not None
        first = zygote.stdout.readline()
        if not first:
            raise BackendError(
                f"the local worker process (zygote) failed to start: {' '.join(cmd)}"
            )
        try:
            ready = json.loads(first)
        except ValueError:
            ready = {}
        self._reaper = zygote.pid if ready.get("subreaper") else None
        reader = threading.Thread(
            target=self._read, args=(zygote,), name="usina-zygote", daemon=True
        )
        reader.start()
        self._reader = reader
        return zygote

    def _send(self, message: dict[str, object]) -> None:
        zygote = self._ensure_zygote()
        assert zygote.stdin is not None
        try:
            zygote.stdin.write(json.dumps(message).encode() + b"\n")
            zygote.stdin.flush()
        except OSError as exc:
            raise BackendError(f"the local worker process is gone: {exc}") from exc

    def _read(self, zygote: subprocess.Popen[bytes]) -> None:
        assert zygote.stdout is not None
        for line in zygote.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                attempt = self._attempts.get(message.get("attempt", ""))
                if attempt is None:
                    continue
                if message["op"] == "spawned":
                    attempt.pid = int(message["pid"])
                    if attempt.state is TaskState.PENDING:
                        attempt.state = TaskState.RUNNING
                    if attempt.kill_reason is not None:  # cancelled before it had a pid
                        self._kill(attempt, attempt.kill_reason, attempt.kill_message)
                    # No wake-up: the engine counts an attempt as running from its launch, so
                    # it would make a pass with nothing to do (one of every two in a chain).
                    continue
                if message["op"] == "exit":
                    if message.get("code") == LOCK_BUSY_EXIT:
                        # A process from before a crash still runs it: watch that one instead.
                        attempt.adopted = True
                        attempt.pid = _read_pid(attempt.folder)
                        attempt.state = TaskState.RUNNING
                    else:
                        self._finish(attempt, message.get("code"), message.get("signal"))
            self._notify()
        # The zygote is gone: its children may live on; watch them through their locks.
        with self._lock:
            for attempt in self._attempts.values():
                if attempt.state in (TaskState.PENDING, TaskState.RUNNING) and not attempt.adopted:
                    attempt.adopted = True
        self._notify()

    def _finish(self, attempt: _Attempt, code: int | None, sig: int | None) -> None:
        attempt.code = code
        attempt.signal = sig
        attempt.finished_at = time.time()
        attempt.state = (
            TaskState.SUCCEEDED
            if code == EXIT_OK and attempt.kill_reason is None
            else TaskState.FAILED
        )
        self._gpus_free.extend(attempt.gpus)
        attempt.gpus = []
        self._end_tree(attempt)
        self._copy_log(attempt)

    def _end_tree(self, attempt: _Attempt) -> None:
        """Kill whatever the attempt's main process left running (see the module docstring)."""
        if attempt.pid is not None:
            # An adopted attempt's pid comes from its lock file, maybe from before a reboot:
            # then it may name anyone's process group now, so only the environment mark counts.
            before_boot = attempt.adopted and attempt.started_at < _boot_time()
            # One this zygote started: what it left is in the zygote's tree (we reap for it).
            within = None if attempt.adopted else self._reaper
            end_process_tree(attempt.pid, attempt.id, by_session=not before_boot, within=within)

    def _copy_log(self, attempt: _Attempt) -> None:
        path = os.path.join(attempt.folder, "output.log")
        try:
            data = _tail_marked(path, _LOG_COPY_LIMIT)
            if data:  # an attempt that printed nothing reads "" without a copy as with one
                self.artifacts.write_record(log_key(attempt.id), data)
        except FileNotFoundError:
            pass
        except Exception as exc:
            log.warning("could not keep the log of %s: %s", attempt.id, exc)

    def _kill(self, attempt: _Attempt, why: FailureClass, message: str) -> None:
        if attempt.kill_reason is None:
            attempt.kill_reason = why
            attempt.kill_message = message
        attempt.kill_sent_at = time.time()
        if attempt.pid is None:
            return
        sig = signal.SIGKILL if why is FailureClass.OOM else signal.SIGTERM
        _signal_group(attempt.pid, sig)

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(self.watch_interval)
            now = time.time()
            changed = False
            with self._lock:
                if self._waiting and not self._closed:
                    try:
                        self._start_waiting()
                    except Exception as exc:  # the zygote is gone: launch reports it next time
                        log.warning("could not start a queued attempt: %s", exc)
                live = [
                    a
                    for a in self._attempts.values()
                    if a.state in (TaskState.PENDING, TaskState.RUNNING) and a.pid is not None
                ]
            for attempt in live:
                pid = attempt.pid
                assert pid is not None
                if attempt.adopted and not _lock_held(os.path.join(attempt.folder, "lock")):
                    with self._lock:
                        if attempt.kill_reason is None:
                            self._conclude_from_records(attempt)
                        else:
                            attempt.state = TaskState.FAILED
                            attempt.finished_at = now
                        self._end_tree(attempt)
                        self._copy_log(attempt)
                    changed = True
                    continue
                if attempt.kill_sent_at is not None:
                    if now - attempt.kill_sent_at > self.kill_grace:
                        _signal_group(pid, signal.SIGKILL)
                    continue
                if attempt.memory_limit:
                    rss = local_procs.tree_rss(pid)
                    if rss > attempt.memory_limit:  # RSS >= private memory: cheap first check
                        used = _tree_memory(pid)
                        attempt.peak_memory = max(attempt.peak_memory, used)
                        if used > attempt.memory_limit:
                            with self._lock:
                                self._kill(
                                    attempt,
                                    FailureClass.OOM,
                                    f"used {used / 2**20:.0f}Mi of its "
                                    f"{attempt.memory_limit / 2**20:.0f}Mi memory limit",
                                )
                            changed = True
                            continue
                    attempt.peak_memory = max(attempt.peak_memory, rss)
                if attempt.deadline is not None and now > attempt.deadline:
                    with self._lock:
                        self._kill(
                            attempt,
                            FailureClass.TIMEOUT,
                            f"ran past its timeout of {attempt.deadline - attempt.started_at:.0f}s",
                        )
                    changed = True
            if changed:
                self._notify()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _boot_time() -> float:
    import psutil

    return float(psutil.boot_time())


def _leftovers(session: int | None, attempt_id: str) -> list[psutil.Process]:
    """Processes of this user in the attempt's session (when given) or marked with its
    attempt id."""
    import psutil

    me = os.getuid()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None:
                continue
            if proc.info["uids"].real != me:
                continue
            if session is not None and os.getsid(proc.pid) == session:
                found.append(proc)
                continue
            if proc.environ().get("USINA_ATTEMPT_ID") == attempt_id:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def end_process_tree(
    pid: int,
    attempt_id: str,
    *,
    by_session: bool = True,
    rounds: int = 5,
    within: int | None = None,
) -> int:
    """SIGKILL every process left of the attempt whose main process was ``pid`` (its group
    and session when ``by_session``, and its environment mark); repeated while a round still
    finds some (a process may fork while it is swept). Returns how many were killed.

    within: the pid of a subreaper every process of the attempt descends from (the zygote that
    forked it): only its tree is searched, a few reads instead of every process's environment
    (``usina.backends.local_procs``). None, or no ``/proc`` to walk: the whole process table."""
    if by_session:
        _signal_group(pid, signal.SIGKILL)
    killed = 0
    session = pid if by_session else None
    for _ in range(rounds):
        found = _live_leftovers(session, attempt_id, within)
        if not found:
            break
        import psutil  # only when something is left to kill (a run's start need not load it)

        for proc in found:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed += 1
        psutil.wait_procs(found, timeout=0.5)
    if killed:
        log.info("attempt %s: killed %d process(es) it left running", attempt_id, killed)
    return killed


def _live_leftovers(
    session: int | None, attempt_id: str, within: int | None
) -> list[psutil.Process]:
    pids = None if within is None else local_procs.leftovers_under(within, session, attempt_id)
    if pids is not None and not pids:
        return []  # the usual end: nothing left (psutil is not even loaded for it)
    import psutil

    if pids is not None:
        found = []
        for leftover in pids:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(leftover))
        return found
    found = []
    for proc in _leftovers(session, attempt_id):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _read_pid(folder: str) -> int | None:
    """The pid of the process holding the attempt's lock: the lock file's content (a ``pid``
    file beside it for attempts started by an earlier usina)."""
    for name in ("lock", "pid"):
        try:
            with open(os.path.join(folder, name)) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            continue
    return None


def read_log(work_dir: str, attempt_id: str) -> str:
    """The combined stdout/stderr of an attempt run here ("" when there is none)."""
    path = os.path.join(work_dir, attempt_id, "output.log")
    try:
        return _tail_marked(path, _LOG_COPY_LIMIT).decode(errors="replace")
    except FileNotFoundError:
        return ""


def _tail_marked(path: str, limit: int) -> bytes:
    """The last ``limit`` bytes of a log, starting with "… N bytes not shown" when the start
    was left out (at a line start when one is near, so the first line shown is whole)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        start = max(0, size - limit)
        fh.seek(start)
        data = fh.read()
    if start == 0:
        return data
    newline = data.find(b"\n", 0, 4096)
    if newline >= 0:
        data = data[newline + 1 :]
    omitted = size - len(data)
    return truncation_mark(omitted).encode() + data
