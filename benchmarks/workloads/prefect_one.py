"""One-step run for Prefect 3: the fixed cost of a run, to subtract from W1."""

from prefect import flow, task


@task
def noop(x: int) -> int:
    return x + 1


@flow
def one(start: int = 0) -> int:
    return noop(start)


if __name__ == "__main__":
    assert one() == 1
