"""Pipelines the image tests render with ``usina k8s render`` and run in the runtime image
(their file is mounted into the container at the same path, standing in for the code bundle)."""

from __future__ import annotations

from usina import Resources, Retry, pipeline, step

#: What ``hog`` allocates, far past its memory limit (``HOG_LIMIT``).
HOG_BYTES = 600 * 2**20
HOG_LIMIT = "256Mi"


@step(resources=Resources(cpu=1, memory="1Gi"))
def rows() -> list[int]:
    print("making 5 rows")
    return [1, 2, 3, 4, 5]


@step(retry=Retry(user=0), resources=Resources(cpu=1, memory="1Gi"))
def broken() -> int:
    raise ValueError("learning rate must be positive")


@step(retry=Retry(oom=0), resources=Resources(cpu=1, memory=HOG_LIMIT))
def hog() -> int:
    block = bytearray(HOG_BYTES)
    for i in range(0, len(block), 4096):  # touch every page: the memory is really used
        block[i] = 1
    return len(block)


@pipeline
def good():
    rows()


@pipeline
def bad():
    broken()


@pipeline
def greedy():
    hog()
