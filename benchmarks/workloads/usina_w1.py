"""W1 for usina: a 50-step linear chain of no-op steps; each takes the previous one's output."""

from usina import pipeline, step

STEPS = 50


@step
def noop(x: int) -> int:
    return x + 1


@pipeline
def chain(start: int = 0) -> None:
    x = noop(start)
    for _ in range(STEPS - 1):
        x = noop(x)  # repeated calls become nodes noop, noop-2, ..., noop-50
