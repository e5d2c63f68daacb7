"""W2 for Prefect 3: a 20-way fan-out/fan-in passing ~8 MB numpy arrays.

source makes one 8 MB array; 20 ``work`` tasks are submitted to the (default) thread task
runner, bounded to the benchmark's concurrency, each returning a new 8 MB array; ``join`` takes
all 20. 22 tasks in all. The concurrency comes from ``BENCH_CONCURRENCY`` (set by the harness).
"""

import math
import os

import numpy as np
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

WIDTH = 20
SIZE = 1_000_000  # float64 -> 8 MB
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))


def _checked(total: float) -> float:
    """The same check in every tool's join: all 20 transformed arrays arrived intact."""
    expected = WIDTH * float(np.arange(SIZE, dtype=np.float64).sum()) + SIZE * sum(range(WIDTH))
    if not math.isclose(total, expected, rel_tol=1e-9):
        raise AssertionError(f"join got {total}, expected {expected}")
    return total


@task
def source(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@task
def work(a: np.ndarray, i: int) -> np.ndarray:
    return a + i


@task
def join(parts: list[np.ndarray]) -> float:
    return _checked(float(sum(float(x.sum()) for x in parts)))


@flow(task_runner=ThreadPoolTaskRunner(max_workers=CONCURRENCY))
def fan(n: int = SIZE) -> float:
    a = source(n)
    futures = [work.submit(a, i) for i in range(WIDTH)]
    return join(futures)  # Prefect resolves the futures before join runs


if __name__ == "__main__":
    fan()
