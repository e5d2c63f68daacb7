"""Steps run by the process kubelet's tests (imported by name by the runtime in each "pod"):
one that reports where it runs, one that needs more memory than its first limit, one that
fails."""

from __future__ import annotations

import os
import time

from usina import Resources, Retry, pipeline, step


@step
def extract() -> int:
    print(f"extract: cwd={os.getcwd()} attempt={os.environ.get('USINA_ATTEMPT_ID')}")
    return 41


@step(retry=Retry(oom=1, oom_grow=3), resources=Resources(cpu=1, memory="128Mi"))
def train(x: int) -> int:
    blob = b"\1" * (200 << 20)  # ~200 MiB: killed under 128Mi, fits in 384Mi
    time.sleep(0.5)  # held long enough for the kubelet's poll to see it
    print(f"train: held {len(blob) >> 20} MiB")
    return x + 1


@step(retry=Retry(user=0))
def score(model: int) -> float:
    print(f"scoring model {model}")
    return model / 100


@pipeline
def process_ok() -> None:
    score(train(extract()))


@step(retry=Retry(user=0))
def broken() -> int:
    raise ValueError("learning rate must be positive")


@pipeline
def process_fails() -> None:
    broken()
