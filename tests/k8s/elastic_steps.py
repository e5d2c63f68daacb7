"""The elastic step of the partial-admission test (imported by name by each rank): a gang of
2 to 4 nodes that counts to ``STEPS``, checkpointing every 5; in its first attempt it stops
after the checkpoint at 10 and waits (until Kueue evicts it)."""

from __future__ import annotations

import os
import time

import usina
from usina import Resources, Retry, Torchrun, checkpoint, pipeline, step

STEPS = 20


@step(
    distributed=Torchrun(nodes=(2, 4), procs_per_node=1),
    retry=Retry(user=0),
    resources=Resources(cpu=1, memory="1Gi"),
)
def fit() -> dict:
    ctx = usina.current()
    start, count = 0, 0
    found = checkpoint.load_latest()
    if found is not None:
        state, start = found
        count = state["count"]
    print(f"rank {ctx.rank} of {ctx.world_size} from step {start}, attempt {ctx.attempt}")
    for i in range(start, STEPS):
        count += 1
        if (i + 1) % 5 == 0:
            checkpoint.save({"count": count}, i + 1)
        if ctx.attempt == 1 and i + 1 == 10:
            print(f"rank {ctx.rank}: checkpoint 10 written, waiting", flush=True)
            time.sleep(120)  # until the gang is evicted
    return {
        "world": ctx.world_size,
        "start": start,
        "count": count,
        "node": os.environ["GROUP_RANK"],
    }


@pipeline
def elastic_k8s():
    fit()
