"""W2 for Kedro: a 20-way fan-out/fan-in passing ~8 MB numpy arrays, in this process.

``source`` makes one 8 MB array; 20 ``work`` nodes each return a new 8 MB array; ``join`` takes
all 20 (22 nodes). The ThreadRunner runs them on ``BENCH_CONCURRENCY`` threads (the same
concurrency as the other tools); Kedro's ``MemoryDataset`` hands each node the arrays (it copies
numpy arrays by default).
"""

import math
import os

import numpy as np
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import ThreadRunner

WIDTH = 20
SIZE = 1_000_000  # float64 -> 8 MB
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))


def _checked(total: float) -> float:
    """The same check in every tool's join: all 20 transformed arrays arrived intact."""
    expected = WIDTH * float(np.arange(SIZE, dtype=np.float64).sum()) + SIZE * sum(range(WIDTH))
    if not math.isclose(total, expected, rel_tol=1e-9):
        raise AssertionError(f"join got {total}, expected {expected}")
    return total


def source(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def _work(i: int):
    def work(a: np.ndarray) -> np.ndarray:
        return a + i

    return work


def join(*parts: np.ndarray) -> float:
    return _checked(float(sum(float(x.sum()) for x in parts)))


if __name__ == "__main__":
    nodes = [node(source, "n", "a", name="source")]
    nodes += [node(_work(i), "a", f"a{i}", name=f"work-{i}") for i in range(WIDTH)]
    nodes.append(node(join, [f"a{i}" for i in range(WIDTH)], "total", name="join"))
    catalog = DataCatalog({"n": MemoryDataset(SIZE)})
    out = ThreadRunner(max_workers=CONCURRENCY).run(Pipeline(nodes), catalog)
    total = catalog["total"].load() if "total" in catalog else out["total"]
    _checked(total)
