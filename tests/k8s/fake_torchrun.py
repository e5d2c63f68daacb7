"""``torchrun``, as the emulator's kubelet runs it: the same command line, no torch import.

The emulator starts this script for a pod whose command is ``torchrun ...`` (with the
rendezvous host already resolved to loopback). It parses the flags usina renders (and rejects
others, as ``torchrun``'s parser would), then does what torchrun's static rendezvous does for
one node: starts ``--nproc-per-node`` processes of ``python -m MODULE ARGS`` with the
environment torchrun gives its workers, and when one of them fails it stops the others
(SIGTERM, then SIGKILL) and exits 1 after printing a ``ChildFailedError`` summary; all exit 0:
exit 0. ``--max-restarts`` must be 0 (usina restarts gangs, never ranks in place).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
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
    nnodes = int(args.nnodes)
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
