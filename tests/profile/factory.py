"""Synthetic runs, attempts and profiles in the in-memory stores (advice, KPIs, CLI, UI)."""

from __future__ import annotations

import json
from typing import Any

from usina.engine.profiles import GpuSeries, Profile, profile_key, summarise
from usina.engine.records import (
    AttemptId,
    AttemptRecord,
    AttemptState,
    RunId,
    RunRecord,
    RunState,
    StepRecord,
    StepState,
)
from usina.sdk.retry import FailureClass
from usina.testing import InMemoryArtifactStore, InMemoryMetadataStore

GI = 2**30
MI = 2**20


def make_profile(
    attempt_id: str,
    memory: list[float],
    *,
    cpu: float = 1.0,
    request: float | None = None,
    gpu_util: list[list[float]] | None = None,
    final: bool = True,
) -> Profile:
    """One sample a second; ``memory`` in bytes; ``gpu_util`` one list per GPU."""
    n = len(memory)
    t = tuple(float(i) for i in range(n))
    series = {
        "cpu": tuple([cpu] * n),
        "memory": tuple(memory),
        "rss": tuple(m + 30 * MI for m in memory),
    }
    gpus = tuple(
        GpuSeries(i, f"GPU-{i}", "fake", tuple(u), tuple([GI] * n), tuple([300.0] * n))
        for i, u in enumerate(gpu_util or [])
    )
    summary = summarise(t, series, gpus, cpu_seconds=cpu * (n - 1))
    return Profile(
        attempt_id=attempt_id,
        started_at=1000.0,
        interval=1.0,
        t=t,
        series=series,
        gpus=gpus,
        summary=summary,
        pid=1,
        requests={"memory": request, "cpu": 1.0, "gpus": float(len(gpus))},
        limits={"memory": request, "cpu": 1.0},
        final=final,
    )


class World:
    """A metadata and an artifact store with runs added one call at a time."""

    def __init__(self) -> None:
        self.metadata = InMemoryMetadataStore()
        self.artifacts = InMemoryArtifactStore()
        self.clock = 1_000_000.0

    def run(
        self,
        pipeline: str,
        attempts: list[dict[str, Any]],
        *,
        state: RunState = RunState.SUCCEEDED,
        labels: dict[str, str] | None = None,
    ) -> RunRecord:
        """``attempts``: dicts with step, memory (request), peak/series, state, failure, gpus."""
        self.clock += 3600.0
        rid = RunId(f"{pipeline}-{int(self.clock)}")
        run = RunRecord(
            id=rid,
            pipeline=pipeline,
            plan={},
            params={},
            state=state,
            created_at=self.clock,
            started_at=self.clock,
            finished_at=self.clock + 600,
            labels=labels or {},
        )
        steps = sorted({a["step"] for a in attempts})
        self.metadata.create_run(run, [StepRecord(rid, s, StepState.SUCCEEDED, {}) for s in steps])
        numbers: dict[str, int] = {}
        for spec in attempts:
            step = spec["step"]
            numbers[step] = numbers.get(step, 0) + 1
            aid = AttemptId(f"{rid}-{step}-{numbers[step]}")
            request = spec.get("memory", "4Gi")
            gpus = int(spec.get("gpus", 0))
            failure = spec.get("failure")
            memory = spec.get("series") or [0.2 * GI, spec.get("peak", GI), 0.5 * GI]
            duration = float(len(memory) - 1)
            self.metadata.save_attempt(
                AttemptRecord(
                    id=aid,
                    run_id=rid,
                    node=step,
                    number=numbers[step],
                    state=AttemptState.FAILED if failure else AttemptState.SUCCEEDED,
                    resources={"memory": request, "cpu": 1, "gpus": gpus},
                    started_at=self.clock,
                    finished_at=self.clock + duration,
                    failure_class=FailureClass(failure) if failure else None,
                    gpus=gpus,
                )
            )
            if spec.get("profile", True):
                from usina.sdk.resources import memory_bytes

                profile = make_profile(
                    aid,
                    memory,
                    request=float(memory_bytes(request)),
                    gpu_util=spec.get("gpu_util"),
                    final=not failure,
                )
                self.artifacts.write_record(
                    profile_key(aid), json.dumps(profile.to_json()).encode()
                )
        return run
