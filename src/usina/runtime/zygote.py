"""A warm fork server for local attempts.

Started once per local backend with the heavy imports and the user's pipeline module already
loaded, it forks one child per attempt, so each step still runs in its own process (a crash or
an out-of-memory kill never reaches the engine) at the cost of a fork, not an interpreter start.

Protocol, JSON lines: the zygote first says ``{"op": "ready", "pid": N, "subreaper": B}``;
the backend writes ``{"op": "spawn", "attempt": ID, "dir": DIR, "env": {...}, "task": {...}}``
to stdin (``task``, the attempt's ``Task.to_json()``, may be left out: the child then reads the
task record); the zygote answers ``{"op": "spawned", "attempt": ID, "pid": N}`` and, when the
child ends, ``{"op": "exit", "attempt": ID, "pid": N, "code": C, "signal": S}``. When stdin
closes (the engine exited or was killed) the zygote exits; running children carry on, and a new
engine adopts them through their lock files.

Each attempt's process is forked ahead of need (``_spare``): the fork and its first page copies
happen while the previous attempt runs, and the spare is handed its attempt on a pipe.

On Linux the zygote is a child subreaper: processes an attempt leaves orphaned re-parent to it,
not to PID 1, so it reaps them once the backend has killed them (see ``usina.backends.local``).
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import os
import selectors
import signal
import sys
import traceback
from typing import Any

LOCK_BUSY_EXIT = 75  # another process already holds this attempt's lock


def _detach() -> None:
    """A forked child's first moves, before it knows its attempt: a session of its own, the
    default signal handlers, and none of the zygote's pipes (a child holding the zygote's
    stdout would keep the backend from seeing the zygote end)."""
    os.setsid()
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _spare(store: Any, assignments: int) -> int:
    """A child forked ahead of need: it waits for its attempt on ``assignments`` (one JSON line)
    and runs it; it ends with nothing done when the zygote goes (end of file).

    The fork, and the pages an attempt's first moves copy from the zygote (copy-on-write: a
    few hundred per attempt), are paid while the previous step still runs, not between it
    and the next one."""
    _detach()
    _rehearse()
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(assignments, 1 << 16)
        if not chunk:
            return 0
        data += chunk
    os.close(assignments)
    request = json.loads(data)
    return _child(store, request["attempt"], request["dir"], request["env"], request.get("task"))


def _rehearse() -> None:
    """Walk the code an attempt runs before it is handed one, on made-up values and without
    writing anything: its first run in a forked process copies the pages it touches (reference
    counts, the interpreter's inline caches), and that is better done while the previous step
    runs. Anything that fails here simply happens for real later."""
    import hashlib

    from usina.engine.ports import Task
    from usina.runtime.profile import ProcessTree, ProfileSettings, Sampler
    from usina.sdk.context import StepContext, set_current
    from usina.stores import serializers

    try:
        task = Task.from_json(
            json.loads(
                json.dumps(
                    {
                        "attempt_id": "rehearsal-1",
                        "run_id": "rehearsal",
                        "number": 1,
                        "pipeline": "rehearsal",
                        "node": {"id": "x", "step": "x", "module": __name__, "qualname": "_x"},
                        "inputs": {},
                        "params": {},
                        "resources": {"cpu": 1, "memory": "1Gi"},
                        "env": {},
                        "artifacts_url": "file:///nonexistent",
                    }
                )
            )
        )
        data, serializer, type_name = serializers.dump(1)
        serializers.load(data, serializer, type_name)
        hashlib.sha256(data).hexdigest()
        ctx = StepContext(run_id=task.run_id, step="x", attempt=1, attempt_id="r", pipeline="r")
        set_current(ctx)
        set_current(None)
        sampler = Sampler(
            None, "rehearsal", tree=ProcessTree(os.getpid()), settings=ProfileSettings.from_env({})
        )
        sampler.sample()
        json.dumps(sampler.profile(final=True).to_json())
    except Exception:  # a rehearsal: the attempt itself reports what fails
        pass


def _child(
    store: Any, attempt: str, folder: str, env: dict[str, str], inline: dict[str, Any] | None
) -> int:
    """Run one attempt in this process: ``inline`` is its task when the backend sent it (the
    engine may not have written the task record yet), else the record is read."""
    from usina.bundles import ENV_WORKDIR, bootstrap_task
    from usina.engine.ports import Task
    from usina.runtime.execute import execute, load_task

    out = os.open(os.path.join(folder, "output.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives until _exit
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    lock = os.open(os.path.join(folder, "lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return LOCK_BUSY_EXIT
    # The holder's pid is the lock file's content (one file fewer to create per attempt).
    os.ftruncate(lock, 0)
    os.write(lock, str(os.getpid()).encode())
    os.environ.update(env)
    try:
        # A run compiled from an uploaded bundle names it in its paths: fetch, verify and
        # extract it into the attempt's folder (as a pod does, usina.bundles.bootstrap_task).
        task = Task.from_json(inline) if inline is not None else load_task(store, attempt)
        task = bootstrap_task({**os.environ, ENV_WORKDIR: folder}, store, task)
        return execute(store, task)
    except Exception:
        traceback.print_exc()
        return 44


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usina.runtime.zygote")
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--preload", action="append", default=[])
    parser.add_argument("--module", action="append", default=[])
    args = parser.parse_args(argv)

    import importlib

    # Warm imports for the children: what every attempt imports (``_child``) is imported here
    # once, not in each forked child (usina.bundles alone cost each attempt ~15 ms of CPU).
    from usina import bundles as _bundles  # noqa: F401
    from usina.runtime import execute as _execute  # noqa: F401
    from usina.runtime.forking import fork_and_run
    from usina.runtime.loader import load_file
    from usina.stores.artifacts import FsspecArtifactStore

    store = FsspecArtifactStore(args.artifacts)
    reaper = become_subreaper()
    for name in ["numpy", *args.module]:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a child will report it properly if it matters
            print(f"usina zygote: cannot preload {name}: {exc}", file=sys.stderr)
    for path in args.preload:
        try:
            load_file(path)
        except BaseException as exc:
            print(f"usina zygote: cannot preload {path}: {exc}", file=sys.stderr)
    if "torch" in sys.modules:
        # torch's optimizers import torch._dynamo on first use (seconds on a small machine):
        # pay it once here rather than in every attempt and every rank.
        try:
            importlib.import_module("torch._dynamo")
        except Exception as exc:
            print(f"usina zygote: cannot preload torch._dynamo: {exc}", file=sys.stderr)

    out = sys.stdout.buffer

    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    os.set_blocking(rfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
    sel = selectors.DefaultSelector()
    stdin = sys.stdin.buffer
    os.set_blocking(stdin.fileno(), False)
    sel.register(stdin.fileno(), selectors.EVENT_READ, "in")
    sel.register(rfd, selectors.EVENT_READ, "sig")
    children: dict[int, str] = {}
    spare: tuple[int, int] | None = None
    pending = b""
    # Everything imported so far is shared with the children copy-on-write: freezing it keeps
    # the children's garbage collector from touching (and so copying) every page of it.
    gc.collect()
    gc.freeze()
    # "subreaper": every process an attempt leaves stays in this tree, so the backend can look
    # for leftovers here alone (``usina.backends.local_procs``).
    send({"op": "ready", "pid": os.getpid(), "subreaper": reaper})

    def fork_spare() -> tuple[int, int]:
        """Fork a child that waits for its attempt (``_spare``): its pid and the pipe to it."""
        r, w = os.pipe()

        def spare() -> int:
            os.close(w)
            return _spare(store, r)

        pid = fork_and_run(spare, failed=44)
        os.close(r)
        return pid, w

    def assign(request: bytes) -> int:
        """Hand ``request`` to the spare child (forking one if there is none, or if the one
        there died); returns the pid that runs it."""
        nonlocal spare
        for _ in range(2):
            pid, w = spare if spare is not None else fork_spare()
            spare = None
            try:
                _write_all(w, request)
                return pid
            except BrokenPipeError:
                continue  # it died waiting (killed by someone): the next one takes it
            finally:
                os.close(w)
        raise RuntimeError("usina zygote: no child could take the attempt")

    def reap() -> None:
        # Every child, orphans of attempts included (we are their subreaper).
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            attempt = children.pop(pid, None)
            if attempt is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            send(
                {
                    "op": "exit",
                    "attempt": attempt,
                    "pid": pid,
                    "code": code if code >= 0 else None,
                    "signal": -code if code < 0 else None,
                }
            )

    spare = fork_spare()
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "sig":
                try:
                    while os.read(rfd, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
                continue
            try:
                chunk = os.read(stdin.fileno(), 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return 0
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not line.strip():
                    continue
                request = json.loads(line)
                if request.get("op") != "spawn":
                    continue
                pid = assign(line + b"\n")
                children[pid] = request["attempt"]
                send({"op": "spawned", "attempt": request["attempt"], "pid": pid})
                if spare is None:
                    spare = fork_spare()  # for the next attempt, while this one runs
        reap()


if __name__ == "__main__":
    sys.exit(main())
