"""GPU profiles on a machine with an NVIDIA GPU (``benchmarks/gpu_profile_check.py`` runs it).

``busy`` multiplies matrices on its GPU for ``seconds``; ``idle`` holds a GPU (a CUDA context
and a tensor) and sleeps as long. Their profiles should show > 80 % and < 5 % utilisation, and
``usina advise`` should flag ``idle``. On a one-GPU machine they run one after the other.
"""

from __future__ import annotations

import time

from usina import Resources, pipeline, step


@step(resources=Resources(memory="8Gi", gpus=1), cache=False)
def busy(seconds: float) -> int:
    import torch

    a = torch.randn(8192, 8192, device="cuda")
    started, n = time.time(), 0
    while time.time() - started < seconds:
        a = (a @ a).tanh()
        n += 1
        if n % 20 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return n


@step(resources=Resources(memory="8Gi", gpus=1), cache=False)
def idle(seconds: float) -> int:
    import torch

    held = torch.ones(1024, 1024, device="cuda")  # the GPU is held, and nothing runs on it
    time.sleep(seconds)
    return int(held[0, 0].item())


@pipeline
def gpu_profiles(seconds: float = 20.0) -> None:
    busy(seconds)
    idle(seconds)
