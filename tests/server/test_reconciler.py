"""The server's reconciler reconciles what changed: runs the backend's feed names, runs just
claimed, and runs whose timer fell due (a retry back-off, a resync); the rest are left alone.
Without a feed every held run is reconciled each pass. Leases are renewed when half their TTL is
gone, not on every pass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from usina.engine.records import RunState, StepState
from usina.server.reconciler import Reconciler
from usina.server.settings import ReconcilerSettings


@dataclass
class Step:
    state: StepState = StepState.RUNNING
    next_attempt_at: float | None = None


@dataclass
class Run:
    state: RunState = RunState.RUNNING


class Clock:
    def now(self) -> float:
        return time.time()


@dataclass
class Leases:
    """The store's lease calls, counted."""

    acquired: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    holders: dict[str, str] = field(default_factory=dict)

    def acquire_lease(self, run_id: str, owner: str, ttl: float, now: float) -> bool:
        self.acquired.append(run_id)
        self.holders[run_id] = owner
        return True

    def release_lease(self, run_id: str, owner: str) -> None:
        self.released.append(run_id)
        self.holders.pop(run_id, None)


class FeedBackend:
    """A backend with a change feed: ``changed`` is handed out once."""

    name = "feed"

    def __init__(self) -> None:
        self.changed: set[str] = set()
        self.recheck: float | None = None

    def changed_runs(self) -> set[str]:
        out, self.changed = self.changed, set()
        return out

    def next_recheck(self) -> float | None:
        return self.recheck

    def wait(self, timeout: float) -> None:
        pass


class PlainBackend:
    name = "plain"

    def wait(self, timeout: float) -> None:
        pass


class Engine:
    """What the reconciler uses of the engine; records which runs it reconciled."""

    owner = "replica-a"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.metadata = Leases()
        self.clock = Clock()
        self.calls: list[str] = []
        self.steps: dict[str, list[Step]] = {}
        self.finished: set[str] = set()

    def reconcile(self, run_id: str) -> Run:
        self.calls.append(run_id)
        return Run(RunState.SUCCEEDED if run_id in self.finished else RunState.RUNNING)

    def steps_of(self, run_id: str) -> list[Step]:
        return self.steps.get(run_id, [Step()])

    def forget(self, run_id: str) -> None:
        pass


class Platform:
    """``PlatformStore.claimable_runs`` over the fake's leases: the runs nobody holds."""

    def __init__(self, runs: list[str], leases: Leases) -> None:
        self.runs = runs
        self.leases = leases

    def claimable_runs(self, owner: str, now: float, limit: int) -> list[str]:
        return [r for r in self.runs if r not in self.leases.holders][:limit]


def make(backend: Any, runs: list[str], **settings: Any) -> tuple[Reconciler, Engine, Platform]:
    engine = Engine(backend)
    platform = Platform(runs, engine.metadata)
    values: dict[str, Any] = {"lease_ttl": 60.0, "max_runs": 100, "resync_interval": 3600.0}
    values.update(settings)
    rec = Reconciler(engine, platform, ReconcilerSettings(**values))  # type: ignore[arg-type]
    return rec, engine, platform


def test_only_new_and_changed_runs_are_reconciled() -> None:
    backend = FeedBackend()
    runs = [f"r{i}" for i in range(50)]
    rec, engine, _ = make(backend, runs)
    assert rec.pass_once() == 50  # claimed: each is reconciled once
    engine.calls.clear()
    assert rec.pass_once() == 0  # nothing changed: nothing to do
    backend.changed = {"r7", "r30", "not-held"}
    assert rec.pass_once() == 2
    assert sorted(engine.calls) == ["r30", "r7"]
    assert len(rec.held) == 50


def test_without_a_feed_every_held_run_is_reconciled_each_pass() -> None:
    rec, engine, _ = make(PlainBackend(), ["a", "b", "c"])
    rec.pass_once()
    engine.calls.clear()
    assert rec.pass_once() == 3
    assert sorted(engine.calls) == ["a", "b", "c"]


def test_a_retry_back_off_falls_due_without_any_change() -> None:
    backend = FeedBackend()
    rec, engine, _ = make(backend, ["waits", "idle"])
    engine.steps["waits"] = [Step(StepState.BACKOFF, next_attempt_at=time.time() + 0.2)]
    rec.pass_once()
    engine.calls.clear()
    assert rec.pass_once() == 0
    assert 0.0 <= rec.wait_time() <= 0.2  # the loop wakes for the back-off
    time.sleep(0.25)
    assert rec.pass_once() == 1
    assert engine.calls == ["waits"]


def test_every_held_run_is_resynced_within_the_interval() -> None:
    rec, engine, _ = make(FeedBackend(), ["a", "b"], resync_interval=0.2)
    rec.pass_once()
    engine.calls.clear()
    time.sleep(0.25)  # jittered within [0.75, 1] x the interval
    assert rec.pass_once() == 2


def test_finished_runs_are_let_go_and_woken_runs_reconciled() -> None:
    backend = FeedBackend()
    rec, engine, platform = make(backend, ["a", "b"])
    rec.pass_once()
    engine.finished.add("a")
    platform.runs = ["b"]
    rec.wake("a")
    engine.calls.clear()
    assert rec.pass_once() == 1
    assert engine.calls == ["a"]
    assert rec.held == ["b"]
    assert engine.metadata.released == ["a"]


def test_claims_per_pass_are_capped() -> None:
    rec, _, _ = make(FeedBackend(), [f"r{i}" for i in range(10)], max_claims_per_pass=4)
    assert rec.pass_once() == 4
    assert rec.pass_once() == 4
    assert rec.pass_once() == 2
    assert len(rec.held) == 10


def test_leases_are_renewed_at_half_their_ttl_not_every_pass() -> None:
    backend = FeedBackend()
    rec, engine, _ = make(backend, ["a", "b"], lease_ttl=0.4)
    rec.pass_once()
    assert sorted(engine.metadata.acquired) == ["a", "b"]
    engine.metadata.acquired.clear()
    rec.pass_once()
    assert engine.metadata.acquired == []  # fresh leases: no renewal
    time.sleep(0.25)  # past half the TTL
    backend.changed = set()
    rec.pass_once()
    assert sorted(engine.metadata.acquired) == ["a", "b"]


def test_a_claim_backlog_is_taken_without_waiting() -> None:
    rec, _, _ = make(FeedBackend(), [f"r{i}" for i in range(10)], max_claims_per_pass=4)
    rec.pass_once()
    assert rec.wait_time() == 0.0  # more runs wait to be claimed
    rec.pass_once()
    rec.pass_once()
    assert rec.wait_time() > 0.0
