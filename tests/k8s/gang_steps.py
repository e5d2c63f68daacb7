"""The distributed step of the gang-on-Kubernetes tests (imported by name by each rank).

``GANG_FAIL_RANK`` (set through the backend's env) makes that rank raise in the first attempt
while the others keep training until the Job controller stops their pod; with ``GANG_BARRIER``
(a folder) it raises only once every rank has started, as after a rendezvous.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import usina
from usina import Resources, Retry, Torchrun, pipeline, step


@step(
    distributed=Torchrun(nodes=2, procs_per_node=2),
    retry=Retry(user=1, oom=1),
    resources=Resources(cpu=1, memory="1Gi"),
)
def fit() -> str:
    ctx = usina.current()
    node = os.environ["GROUP_RANK"]
    print(f"rank {ctx.rank} of {ctx.world_size} on node {node}, attempt {ctx.attempt}", flush=True)
    failing = os.environ.get("GANG_FAIL_RANK")
    if ctx.attempt == 1 and failing is not None:
        if os.environ.get("GANG_BARRIER"):
            _barrier(Path(os.environ["GANG_BARRIER"]), ctx.attempt_id, ctx.rank, ctx.world_size)
        if int(failing) == ctx.rank:
            raise ValueError(f"rank {ctx.rank}: loss is NaN")
        time.sleep(60)  # training, until the gang is stopped
    return f"trained on {ctx.world_size} ranks"


def _barrier(folder: Path, attempt_id: str, rank: int, world_size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{attempt_id}-{rank}").touch()
    deadline = time.monotonic() + 30
    while len(list(folder.glob(f"{attempt_id}-*"))) < world_size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank}: the other ranks did not start in 30 s")
        time.sleep(0.02)


@pipeline
def gang_k8s():
    fit()
