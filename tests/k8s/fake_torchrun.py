"""``torchrun``, as the emulator's kubelet runs it: the same command line, no torch import.

The emulator starts this script for a pod whose command is ``torchrun ...`` (with the
rendezvous host already resolved to loopback). It parses the flags usina renders (and rejects
others, as ``torchrun``'s parser would), then does what torchrun's static rendezvous does for
one node: starts ``--nproc-per-node`` processes of ``python -m MODULE ARGS`` with the
environment torchrun gives its workers, and when one of them fails it stops the others
(SIGTERM, then SIGKILL) and exits 1 after printing a ``ChildFailedError`` summary; all exit 0:
exit 0. ``--max-restarts`` must be 0 (usina restarts gangs, never ranks in place).

Elastic gangs (``--nnodes=MIN:MAX --rdzv-backend=c10d --rdzv-endpoint=... --rdzv-id=...``) get
a dynamic rendezvous, emulated with files: each node's torchrun registers under the rendezvous
id; once MIN have come, the round closes after a short last call (or at once with MAX), the
first node to close it writes the members, and each node's rank is its place among them, so
the world is the pods that came.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time

GRACE = 5.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun", allow_abbrev=False)
    p.add_argument("--nnodes", required=True)
    p.add_argument("--nproc-per-node", "--nproc_per_node", dest="nproc", type=int, required=True)
    p.add_argument("--node-rank", "--node_rank", dest="node_rank", type=int, default=0)
    p.add_argument("--master-addr", "--master_addr", dest="master_addr", default="127.0.0.1")
    p.add_argument("--master-port", "--master_port", dest="master_port", type=int, default=29500)
    p.add_argument("--max-restarts", "--max_restarts", dest="max_restarts", type=int, default=0)
    p.add_argument("--rdzv-conf", "--rdzv_conf", dest="rdzv_conf", default="")
    p.add_argument("--rdzv-backend", "--rdzv_backend", dest="rdzv_backend", default="static")
    p.add_argument("--rdzv-endpoint", "--rdzv_endpoint", dest="rdzv_endpoint", default="")
    p.add_argument("--rdzv-id", "--rdzv_id", dest="rdzv_id", default="none")
    p.add_argument("-m", "--module", action="store_true")
    p.add_argument("script")
    p.add_argument("script_args", nargs=argparse.REMAINDER)
    return p


def main() -> int:
    args = parser().parse_args()
    if not args.module:
        print("fake torchrun: only '-m MODULE' is emulated", file=sys.stderr)
        return 2
    if args.max_restarts != 0:
        print("fake torchrun: usina must render --max-restarts=0", file=sys.stderr)
        return 2
    if args.rdzv_backend == "c10d":
        host, _, port = args.rdzv_endpoint.rpartition(":")
        args.master_addr, args.master_port = host, int(port)
        args.node_rank, nnodes = _rendezvous(f"{args.rdzv_id}-{port}", args.nnodes)
    elif args.rdzv_backend == "static":
        nnodes = int(args.nnodes)
    else:
        print(f"fake torchrun: rendezvous {args.rdzv_backend!r} is not emulated", file=sys.stderr)
        return 2
    world = nnodes * args.nproc
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for local in range(args.nproc):
        rank = args.node_rank * args.nproc + local
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(local),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(args.nproc),
            "GROUP_RANK": str(args.node_rank),
            "GROUP_WORLD_SIZE": str(nnodes),
            "ROLE_RANK": str(rank),
            "ROLE_WORLD_SIZE": str(world),
            "MASTER_ADDR": args.master_addr,
            "MASTER_PORT": str(args.master_port),
            "TORCHELASTIC_RESTART_COUNT": "0",
            "TORCHELASTIC_MAX_RESTARTS": "0",
            "TORCHELASTIC_RUN_ID": "none",
        }
        command = [sys.executable, "-m", args.script, *args.script_args]
        procs[local] = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: _stop(procs) or sys.exit(143))
    while True:
        codes = {local: p.poll() for local, p in procs.items()}
        failed = [(local, c) for local, c in codes.items() if c not in (None, 0)]
        if failed:
            local, code = failed[0]
            _stop(procs)
            rank = args.node_rank * args.nproc + local
            print(
                "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
                f"  rank: {rank} (local_rank: {local})\n  exitcode: {code}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        if all(c == 0 for c in codes.values()):
            return 0
        time.sleep(0.02)


LAST_CALL = 1.0  # seconds the round stays open for more nodes once MIN have come


def _rendezvous(rdzv_id: str, nnodes: str) -> tuple[int, int]:
    """(this node's rank, the nodes in the round), by files under the rendezvous id."""
    low, _, high = nnodes.partition(":")
    least, most = int(low), int(high or low)
    folder = os.path.join(tempfile.gettempdir(), "usina-fake-rdzv", rdzv_id)
    os.makedirs(folder, exist_ok=True)
    me = f"{time.time_ns()}-{os.getpid()}"
    open(os.path.join(folder, f"node-{me}"), "w").close()
    closed = os.path.join(folder, "members")
    deadline = time.monotonic() + 60
    enough_at: float | None = None
    while not os.path.exists(closed):
        came = sorted(n for n in os.listdir(folder) if n.startswith("node-"))
        if len(came) >= least and enough_at is None:
            enough_at = time.monotonic()
        if enough_at is not None and (
            len(came) >= most or time.monotonic() - enough_at >= LAST_CALL
        ):
            with contextlib.suppress(FileExistsError):
                fd = os.open(closed + ".tmp", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, "\n".join(came[:most]).encode())
                os.close(fd)
                os.rename(closed + ".tmp", closed)
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"fake torchrun: fewer than {least} nodes came to the rendezvous")
        time.sleep(0.02)
    while not os.path.exists(closed):
        time.sleep(0.02)
    with open(closed) as fh:
        members = fh.read().split("\n")
    name = f"node-{me}"
    if name not in members:
        raise SystemExit("fake torchrun: came after the round closed")
    return members.index(name), len(members)


def _stop(procs: dict[int, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    for p in procs.values():
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == "__main__":
    sys.exit(main())
