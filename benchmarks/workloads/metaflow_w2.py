"""W2 for Metaflow: a 20-way fan-out/fan-in passing ~8 MB numpy arrays.

``start`` makes one 8 MB array (it is the source step); a ``foreach`` over 20 indices runs
``work`` 20 times, each returning a new 8 MB array; ``join`` takes all 20. Metaflow runs each
branch as its own process, at most ``--max-workers`` at a time (the harness sets it). Metaflow
also requires an ``end`` step, so this flow has 23 steps where usina and Prefect have 22.
"""

import math

import numpy as np
from metaflow import FlowSpec, step

WIDTH = 20
SIZE = 1_000_000  # float64 -> 8 MB


def _checked(total: float) -> float:
    """The same check in every tool's join: all 20 transformed arrays arrived intact."""
    expected = WIDTH * float(np.arange(SIZE, dtype=np.float64).sum()) + SIZE * sum(range(WIDTH))
    if not math.isclose(total, expected, rel_tol=1e-9):
        raise AssertionError(f"join got {total}, expected {expected}")
    return total


class Fan(FlowSpec):
    @step
    def start(self):
        self.a = np.arange(SIZE, dtype=np.float64)
        self.indices = list(range(WIDTH))
        self.next(self.work, foreach="indices")

    @step
    def work(self):
        self.out = self.a + self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = _checked(float(sum(float(inp.out.sum()) for inp in inputs)))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    Fan()
