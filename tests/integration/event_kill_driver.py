"""Run by ``test_event_atomicity``: drive a run of ``pair`` on a SQL store and SIGKILL this
process just before the store inserts the ``NTH`` event of kind ``KIND`` (an event that reports
a change of the run, a step or an attempt), while the transaction that makes the change is
still open.

Usage: ``python -m tests.integration.event_kill_driver DB_URL ARTIFACTS_DIR RUN_ID KIND NTH``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from usina import FailureClass, Retry, pipeline, step
from usina.engine.engine import Engine, EngineSettings
from usina.stores import sql as sql_store
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.sql import SqlMetadataStore
from usina.testing.backend import FakeBackend
from usina.testing.clock import FakeClock

START = 1_700_000_000.0


@step(retry=Retry(infra=2, backoff=1.0))
def first() -> int:
    return 1


@step
def second(x: int) -> int:
    return x


@pipeline
def pair():  # type: ignore[no-untyped-def]
    second(first())


def engine(url: str, artifacts_dir: str, clock: FakeClock) -> tuple[Engine, FakeBackend]:
    artifacts = FsspecArtifactStore(artifacts_dir)
    backend = FakeBackend(artifacts, clock)
    built = Engine(
        backend=backend,
        metadata=SqlMetadataStore(url),
        artifacts=artifacts,
        clock=clock,
        settings=EngineSettings(environment="test-env", poll_interval=1.0),
    )
    return built, backend


def main(url: str, artifacts_dir: str, run_id: str, kind: str, nth: int) -> None:
    seen = 0
    real = sql_store.event_to_row

    def event_to_row(event: Any) -> dict[str, Any]:
        # The store calls this inside the transaction that writes the event, right before
        # the INSERT: dying here is a SIGKILL between a state change and its event.
        nonlocal seen
        if event.kind == kind:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(event)

    sql_store.event_to_row = event_to_row  # type: ignore[assignment]
    built, backend = engine(url, artifacts_dir, FakeClock(START))
    backend.script("first", FailureClass.INFRA, "ok")
    built.drive(run_id)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
