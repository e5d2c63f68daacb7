"""One-step run for usina: the fixed cost of a run, to subtract from W1."""

from usina import pipeline, step


@step
def noop(x: int) -> int:
    return x + 1


@pipeline
def one(start: int = 0) -> None:
    noop(start)
