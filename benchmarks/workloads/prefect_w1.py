"""W1 for Prefect 3: a 50-step linear chain of no-op tasks; each takes the previous one's output."""

from prefect import flow, task

STEPS = 50


@task
def noop(x: int) -> int:
    return x + 1


@flow
def chain(start: int = 0) -> int:
    x = noop(start)
    for _ in range(STEPS - 1):
        x = noop(x)
    return x


if __name__ == "__main__":
    assert chain() == STEPS
