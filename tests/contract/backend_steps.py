"""Steps the backend contract suite runs (imported by name in worker processes)."""

from __future__ import annotations

import time

from usina import step


@step
def ok(x: int) -> int:
    print(f"ok got {x}")
    return x + 1


@step
def fail(x: int) -> int:
    raise RuntimeError(f"failing on purpose with {x}")


@step
def sleepy(x: int) -> int:
    time.sleep(60)
    return x


@step
def show_gpus(x: int) -> str:
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
