"""The local launcher of a distributed step: one attempt, ``nodes x procs_per_node`` ranks.

The attempt's worker process (forked from the zygote) becomes the launcher: it forks one process
per rank with the environment ``torchrun`` would give it (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR=127.0.0.1``, a free
``MASTER_PORT``), so the function's ``init_process_group()`` rendezvouses over loopback (gloo on
CPU, NCCL where GPUs were given). Each simulated node sees only its own slice of the attempt's
GPUs. Ranks are forked, not started as new interpreters: the user's module, usina and torch are
already imported, so a gang starts in milliseconds; every rank is still its own process.

A gang lives and dies together: when any rank fails, the others get SIGTERM (SIGKILL after a
grace period), and the launcher exits with the root cause's code, so the engine sees one failed
attempt and starts the whole gang again as the next one (which resumes from its checkpoint).
An elastic gang (``Torchrun(nodes=(MIN, MAX))``) that loses a node (a rank killed from outside)
is restarted in place instead, as torchrun's elastic agent does: the remaining nodes start
again, a smaller world, from the checkpoint, at most ``max_restarts`` times and while at least
``MIN`` nodes remain; any other failure ends the attempt as above.
Root cause (``usina.engine.failures.root_cause``, the same ranking the Kubernetes backend uses
for the pods of a gang): a rank killed from outside (SIGKILL/SIGTERM/SIGHUP that the launcher
did not send, reported as ``node_lost``, exit ``EXIT_RANK_LOST``) or one that ran out of memory
comes before one that failed by itself, because its peers then fail in their collectives as a
consequence; among equals, the first that ended, with its own error record.

Process tree: the launcher and its ranks share one process group, so the backend's watchdog
(memory limit, timeout, cancel) stops the whole gang with one ``killpg``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from usina.engine.failures import (
    ErrorRecord,
    ExitFailure,
    MemberEnd,
    exit_code_for,
    exit_failure,
    root_cause,
)
from usina.engine.ports import (
    EXIT_INFRA,
    EXIT_OK,
    EXIT_OOM,
    EXIT_USER_ERROR,
    error_key,
    rank_error_key,
)
from usina.runtime.forking import fork_and_run
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from usina.engine.ports import ArtifactStore, Task
    from usina.sdk.distributed import Torchrun

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for the surviving ranks of a failed gang


@dataclass(slots=True)
class _Rank:
    rank: int
    node: int
    pid: int
    code: int | None = None
    signal: int | None = None
    ended_at: float | None = None
    self_inflicted: bool = True  # ended before the launcher sent it anything that could


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rank_env(
    spec: Torchrun, rank: int, port: int, attempt_id: str, gpus: list[str]
) -> dict[str, str]:
    """The environment of rank ``rank``: what torchrun sets, plus usina's own."""
    node, local = divmod(rank, spec.procs_per_node)
    env = {
        "RANK": str(rank),
        "LOCAL_RANK": str(local),
        "WORLD_SIZE": str(spec.world_size),
        "LOCAL_WORLD_SIZE": str(spec.procs_per_node),
        "GROUP_RANK": str(node),
        "GROUP_WORLD_SIZE": str(spec.nodes),
        "ROLE_RANK": str(rank),
        "ROLE_WORLD_SIZE": str(spec.world_size),
        "NODE_RANK": str(node),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RUN_ID": attempt_id,
        "USINA_DIST_BACKEND": "nccl" if gpus else "gloo",
    }
    if gpus:
        per_node = max(1, len(gpus) // spec.nodes)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[node * per_node : (node + 1) * per_node])
    return env


def threads_per_rank(world_size: int) -> int:
    """``OMP_NUM_THREADS`` for a rank that has none set: 1 in a gang, as torchrun does. The
    ranks share this machine's cores, and OpenMP threads that spin-wait for cores they do
    not get cost far more than they bring (measured on a busy 2-core machine: one MLP rank
    with 2 threads ran ~45x slower than with 1)."""
    return 1 if world_size > 1 else max(1, os.cpu_count() or 1)


def _start_rank(store: ArtifactStore, task: Task, env: dict[str, str], threads: int) -> int:
    from usina.runtime.execute import execute

    os.environ.update(env)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:  # imported before the fork: its thread pool size is already read
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"usina: rank {env['RANK']}/{env['WORLD_SIZE']} pid {os.getpid()}", flush=True)
    return execute(store, task)


def launch_gang(store: ArtifactStore, task: Task) -> int:
    """Run every rank of ``task`` as a child process; returns the attempt's exit code."""
    asked = task.distributed
    if asked is None:
        raise ValueError(f"attempt {task.attempt_id} is not a distributed step")
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    per_node = len(gpus) // asked.nodes if gpus else 0
    spec = asked.sized(asked.nodes) if asked.elastic else asked
    restarts = 0
    while True:
        mine = gpus if spec.nodes == asked.nodes else gpus[: spec.nodes * max(1, per_node)]
        ranks = _start_gang(store, task, spec, mine, restarts)
        ended, cause = _supervise(spec, ranks)
        if cause is None:
            return EXIT_OK
        lost = {m.node for m in ended if m.self_inflicted and _lost(m)}
        left = spec.nodes - len(lost)
        if not (asked.elastic and lost and left >= asked.fewest_nodes):
            return _report(store, task, spec, cause, ended)
        if restarts >= asked.max_restarts:
            print(
                f"usina: elastic gang: {len(lost)} node(s) lost after {restarts} restart(s), "
                f"the most allowed (max_restarts={asked.max_restarts})",
                flush=True,
            )
            return _report(store, task, spec, cause, ended)
        restarts += 1
        print(
            f"usina: elastic gang: node(s) {sorted(lost)} lost (rank {cause.rank} was killed); "
            f"restarting {left} of {asked.nodes} node(s) in place (at least "
            f"{asked.fewest_nodes}), restart {restarts} of {asked.max_restarts}",
            flush=True,
        )
        spec = asked.sized(left)


def _lost(member: _Rank) -> bool:
    return _ended(member).failure is FailureClass.NODE_LOST


def _start_gang(
    store: ArtifactStore, task: Task, spec: Torchrun, gpus: list[str], restart: int
) -> dict[int, _Rank]:
    port = _free_port()
    threads = threads_per_rank(spec.world_size)
    print(
        f"usina: starting a gang of {spec.world_size} rank(s) ({spec.nodes} node(s) x "
        f"{spec.procs_per_node}), rendezvous 127.0.0.1:{port}, "
        f"backend {'nccl' if gpus else 'gloo'}",
        flush=True,
    )
    ranks: dict[int, _Rank] = {}
    for rank in range(spec.world_size):
        env = rank_env(spec, rank, port, task.attempt_id, gpus)
        env["TORCHELASTIC_RESTART_COUNT"] = str(restart)
        pid = fork_and_run(partial(_start_rank, store, task, env, threads), failed=EXIT_INFRA)
        ranks[pid] = _Rank(rank=rank, node=rank // spec.procs_per_node, pid=pid)
    return ranks


def _supervise(spec: Torchrun, ranks: dict[int, _Rank]) -> tuple[list[_Rank], _Rank | None]:
    """Wait for every rank; the ranks as they ended and the root cause (None: all succeeded)."""
    live = dict(ranks)
    ended: list[_Rank] = []
    term_sent: float | None = None
    kill_sent = False
    while live:
        pid, status = os.waitpid(-1, os.WNOHANG if term_sent is not None else 0)
        if pid == 0:
            if term_sent is not None and not kill_sent and time.time() - term_sent > KILL_GRACE:
                _signal_all(live, signal.SIGKILL)
                kill_sent = True
            time.sleep(0.02)
            continue
        member = live.pop(pid, None)
        if member is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        member.code, member.signal = (code, None) if code >= 0 else (None, -code)
        member.ended_at = time.time()
        if term_sent is not None and (
            member.signal not in (None, signal.SIGKILL) or (member.signal and kill_sent)
        ):
            member.self_inflicted = False
        ended.append(member)
        if term_sent is None and member.code != EXIT_OK:
            term_sent = time.time()
            _signal_all(live, signal.SIGTERM)
    failed = [m for m in ended if m.code != EXIT_OK and m.self_inflicted]
    if not failed:
        return ended, None
    order = {id(m): n for n, m in enumerate(ended)}
    cause = root_cause(
        failed,
        lambda m: MemberEnd(_ended(m).failure, order=(order[id(m)],), index=m.rank),
    )
    return ended, cause


def _ended(member: _Rank) -> ExitFailure:
    """How a rank ended; a signal the launcher did not send means the rank was lost."""
    found = exit_failure(member.code, signal=member.signal, outside_kill=True)
    return found or ExitFailure(FailureClass.USER_ERROR, "Error", "ended without a result")


def _signal_all(live: dict[int, _Rank], sig: int) -> None:
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _report(
    store: ArtifactStore, task: Task, spec: Torchrun, cause: _Rank, ended: list[_Rank]
) -> int:
    where = f"rank {cause.rank} of {spec.world_size} (node {cause.node}, pid {cause.pid})"
    others = ", ".join(
        f"rank {m.rank}: {'signal ' + signal.Signals(m.signal).name if m.signal else m.code}"
        for m in ended
        if m is not cause and m.code != EXIT_OK
    )
    ended_as = _ended(cause)
    if cause.signal is not None:
        record = ErrorRecord(
            kind=ended_as.failure,
            type="RankLost" if ended_as.failure is FailureClass.NODE_LOST else "Signal",
            message=f"{where} was killed by {signal.Signals(cause.signal).name}",
        )
    else:
        raw = store.read_record(rank_error_key(task.attempt_id, cause.rank))
        own = (
            ErrorRecord.from_json(json.loads(raw))
            if raw
            else ErrorRecord(ended_as.failure, ended_as.reason, f"exit {cause.code}")
        )
        record = replace(own, message=f"{where} failed: {own.message}")
    if others:
        record = replace(record, message=f"{record.message}; the gang was stopped ({others})")
    record = replace(record, rank=cause.rank)
    print(f"usina: {record.message}", file=sys.stderr, flush=True)
    store.write_record(error_key(task.attempt_id), json.dumps(record.to_json()).encode())
    return exit_code_for(record.kind) if cause.signal is not None else _own_code(cause.code)


def _own_code(code: int | None) -> int:
    """The gang's exit code for a rank that exited by itself: its own, when it is one of the
    runtime's (user error, MemoryError, infra), else 1 (a failure of no known kind)."""
    return code if code in (EXIT_USER_ERROR, EXIT_OOM, EXIT_INFRA) else 1
