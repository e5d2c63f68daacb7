"""Helpers of the Kubernetes backend tests: tasks and a fake artifact store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from usina.engine.ports import Task
from usina.sdk.resources import Resources
from usina.sdk.retry import Retry

T = TypeVar("T")


class MemoryArtifacts:
    """The smallest in-memory artifact store the backend needs (records only, and bytes)."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return "memory://artifacts"

    def put_bytes(self, data: bytes) -> str:
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._lock:
            self.blobs[digest] = data
        return digest

    def get_bytes(self, digest: str) -> bytes:
        return self.blobs[digest]

    def exists(self, digest: str) -> bool:
        return digest in self.blobs

    def write_record(self, key: str, data: bytes) -> None:
        with self._lock:
            self.records[key] = data

    def read_record(self, key: str) -> bytes | None:
        with self._lock:
            return self.records.get(key)


def make_task(
    attempt_id: str = "r1-train-1",
    *,
    resources: Resources | None = None,
    timeout: float | None = None,
    node_extra: dict[str, object] | None = None,
    step: str = "train",
) -> Task:
    res = resources or Resources(cpu=2, memory="4Gi")
    node: dict[str, object] = {
        "id": step,
        "step": step,
        "module": "pipe",
        "qualname": step,
        "file": None,
        "inputs": {},
        "upstream": [],
        "outputs": 1,
        "resources": res.to_json(),
        "retry": Retry().to_json(),
        "timeout": timeout,
        "cache": True,
        "cache_version": None,
        "pickle": False,
        "env": [],
        "code_hash": "abc",
        "distributed": None,
    }
    node.update(node_extra or {})
    run_id = attempt_id.rsplit("-", 2)[0] if attempt_id.count("-") >= 2 else "r1"
    return Task(
        attempt_id=attempt_id,
        run_id=run_id,
        pipeline="fraud",
        node=node,
        number=int(attempt_id.rsplit("-", 1)[-1]) if attempt_id[-1].isdigit() else 1,
        resources=res,
        inputs={},
        artifacts_url="s3://bucket/usina",
        params={},
        env={"LOG_LEVEL": "info"},
        timeout=timeout,
        labels={"team": "risk", "run": run_id, "step": step, "pipeline": "fraud"},
    )


def settle(
    backend: object,
    attempt_ids: list[str],
    timeout: float = 10.0,
    done: tuple[str, ...] = ("succeeded", "failed"),
) -> dict[str, object]:
    """Observe until every attempt is in one of ``done`` (waking on watch events)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        obs = backend.observe(attempt_ids)  # type: ignore[attr-defined]
        if all(o.state.value in done for o in obs.values()):
            return obs  # type: ignore[no-any-return]
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"attempts did not settle in {timeout} s: {obs}")
        backend.wait(min(left, 0.5))  # type: ignore[attr-defined]


def wait_for(fn: Callable[[], T | None], seconds: float) -> T | None:
    """``fn()`` once it is truthy, polling for up to ``seconds`` (None if it never is)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.02)
