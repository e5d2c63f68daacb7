"""A GPU smoke pipeline for a machine with NVIDIA GPUs (``benchmarks/gpu_check.sh`` runs it).

Two steps ask for one GPU each and are independent: on a one-GPU machine the second waits for
the first to release it. A ``Torchrun`` step runs NCCL on its GPU. Each reports what it saw.
"""

from __future__ import annotations

import os
import time

import usina
from usina import Resources, Torchrun, pipeline, step


def _burn(seconds: float) -> dict:
    import torch

    started = time.time()
    a = torch.randn(4096, 4096, device="cuda")
    n = 0
    while time.time() - started < seconds:
        a = (a @ a).tanh()
        n += 1
    torch.cuda.synchronize()
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "matmuls": n,
        "started": started,
        "ended": time.time(),
    }


@step(resources=Resources(memory="8Gi", gpus=1))
def gpu_a(seconds: float) -> dict:
    return _burn(seconds)


@step(resources=Resources(memory="8Gi", gpus=1))
def gpu_b(seconds: float) -> dict:
    return _burn(seconds)


@step(resources=Resources(memory="8Gi", gpus=1), distributed=Torchrun(nodes=1, procs_per_node=1))
def nccl(x: dict) -> dict:
    import torch
    import torch.distributed as dist

    dist.init_process_group(os.environ["USINA_DIST_BACKEND"])
    t = torch.ones(1024, device="cuda") * (dist.get_rank() + 1)
    dist.all_reduce(t)
    out = {
        "backend": dist.get_backend(),
        "world": dist.get_world_size(),
        "sum": float(t[0].item()),
        "rank": usina.current().rank,
    }
    dist.destroy_process_group()
    return out


@pipeline
def gpu_smoke(seconds: float = 3.0):
    a = gpu_a(seconds)
    gpu_b(seconds)
    nccl(a)
