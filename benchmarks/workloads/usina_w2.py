"""W2 for usina: a 20-way fan-out/fan-in passing ~8 MB numpy arrays.

source makes one 8 MB array; 20 independent ``work`` steps each return a new 8 MB array; ``join``
takes all 20 (a step cannot take ``*args``, so it names 20 parameters). 22 steps in all.
"""

import math

import numpy as np

from usina import pipeline, step

WIDTH = 20
SIZE = 1_000_000  # float64 -> 8 MB


def _checked(total: float) -> float:
    """The same check in every tool's join: all 20 transformed arrays arrived intact."""
    expected = WIDTH * float(np.arange(SIZE, dtype=np.float64).sum()) + SIZE * sum(range(WIDTH))
    if not math.isclose(total, expected, rel_tol=1e-9):
        raise AssertionError(f"join got {total}, expected {expected}")
    return total


@step
def source(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@step
def work(a: np.ndarray, i: int) -> np.ndarray:
    return a + i


@step
def join(
    a0: np.ndarray,
    a1: np.ndarray,
    a2: np.ndarray,
    a3: np.ndarray,
    a4: np.ndarray,
    a5: np.ndarray,
    a6: np.ndarray,
    a7: np.ndarray,
    a8: np.ndarray,
    a9: np.ndarray,
    a10: np.ndarray,
    a11: np.ndarray,
    a12: np.ndarray,
    a13: np.ndarray,
    a14: np.ndarray,
    a15: np.ndarray,
    a16: np.ndarray,
    a17: np.ndarray,
    a18: np.ndarray,
    a19: np.ndarray,
) -> float:
    inputs = list(locals().values())  # the 20 arrays a0..a19
    return _checked(float(sum(float(x.sum()) for x in inputs)))


@pipeline
def fan(n: int = SIZE) -> None:
    a = source(n)
    parts = [work(a, i) for i in range(WIDTH)]
    join(*parts)  # binds to a0..a19
