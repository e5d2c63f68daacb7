"""DDP throughput with 1, 2 and 4 ranks, started the way usina's local backend starts a gang.

    python benchmarks/ddp.py [--ranks 1,2,4] [--seconds 8] [--batch 128]

Each rank is a process forked with the environment ``usina.runtime.gang.rank_env`` gives it
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free port, 2 simulated nodes when the
rank count is even) and one OpenMP thread per rank (torchrun's default; ``--threads``).
Weak scaling: every rank trains on ``--batch`` samples per step; samples/second counts all
ranks. Scaling efficiency = throughput(N) / (N x throughput(1)). On CPU the backend is gloo;
with GPUs present it is NCCL, one GPU per rank, and rank counts above the GPU count are
skipped. On a small CPU machine the numbers say how much the gradient all-reduce and the
shared cores cost, not how a cluster scales.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

from usina.runtime.gang import _free_port, rank_env
from usina.sdk.distributed import Torchrun


def _model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
    )


def _worker(env: dict[str, str], args: argparse.Namespace, out: int) -> None:
    os.environ.update(env)
    gpu = env["USINA_DIST_BACKEND"] == "nccl"
    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group(env["USINA_DIST_BACKEND"])
    device = torch.device(f"cuda:{int(env['LOCAL_RANK'])}" if gpu else "cpu")
    if gpu:
        torch.cuda.set_device(device)
    model = _model(args.width).to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if gpu else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    x = torch.randn(args.batch, 256, device=device)
    y = torch.rand(args.batch, 1, device=device)
    loss_fn = nn.BCEWithLogitsLoss()

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(ddp(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        one()
    if gpu:
        torch.cuda.synchronize()
    dist.barrier()
    steps, start = 0, time.perf_counter()
    while True:
        one()
        steps += 1
        # Every rank must run the same number of steps: rank 0 decides when to stop.
        flag = torch.tensor([time.perf_counter() - start > args.seconds], device=device)
        dist.broadcast(flag, 0)
        if bool(flag.item()):
            break
    if gpu:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if dist.get_rank() == 0:
        world = dist.get_world_size()
        os.write(out, json.dumps({"steps": steps, "seconds": elapsed, "world": world}).encode())
    dist.destroy_process_group()


def run(world: int, args: argparse.Namespace, gpus: list[str]) -> dict[str, float]:
    nodes = 2 if world % 2 == 0 else 1
    spec = Torchrun(nodes=nodes, procs_per_node=world // nodes)
    port = _free_port()
    read, write = os.pipe()
    pids = []
    for rank in range(world):
        env = rank_env(spec, rank, port, f"bench-{world}", gpus[:world])
        env["OMP_NUM_THREADS"] = str(args.threads)
        if gpus:  # one GPU per rank, whichever node it simulates
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[:world])
            env["LOCAL_RANK"] = str(rank)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read)
                _worker(env, args, write)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(write)
    raw = b""
    while chunk := os.read(read, 4096):
        raw += chunk
    os.close(read)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    if any(codes) or not raw:
        raise SystemExit(f"a rank of the {world}-rank run failed: exit codes {codes}")
    result = json.loads(raw)
    samples = result["steps"] * args.batch * world
    return {
        "ranks": world,
        "threads_per_rank": args.threads,
        "steps": result["steps"],
        "samples_per_s": samples / result["seconds"],
    }


def _nvidia_smi() -> list[tuple[str, str]]:
    """(index, name) of each GPU nvidia-smi lists; none when it is absent."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(",", 1) for line in out.splitlines() if "," in line]
    return [(index.strip(), name.strip()) for index, name in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=128, help="samples per rank per step")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="OpenMP threads per rank (torchrun's default: 1)"
    )
    args = parser.parse_args()
    # Ask nvidia-smi, not torch: initialising CUDA here would break it in the forked ranks.
    smi = _nvidia_smi()
    gpus = [index for index, _ in smi]
    ranks = [int(r) for r in args.ranks.split(",")]
    if gpus:
        ranks = [r for r in ranks if r <= len(gpus)]
    backend = "nccl" if gpus else "gloo"
    device = smi[0][1] if gpus else f"{os.cpu_count()} CPU cores"
    print(
        f"DDP weak scaling, backend {backend}, {device}, batch {args.batch}/rank, "
        f"MLP 256-{args.width}-{args.width}-1, {args.seconds:g}s per point",
        flush=True,
    )
    rows = []
    for world in ranks:
        rows.append(run(world, args, gpus))
    base = rows[0]["samples_per_s"] / rows[0]["ranks"]
    print(f"{'ranks':>5} {'threads/rank':>12} {'samples/s':>12} {'efficiency':>10}")
    for row in rows:
        row["efficiency"] = row["samples_per_s"] / (row["ranks"] * base)
        print(
            f"{row['ranks']:>5} {row['threads_per_rank']:>12} {row['samples_per_s']:>12.0f} "
            f"{row['efficiency']:>10.2f}"
        )
    print(json.dumps({"backend": backend, "device": device, "results": rows}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
