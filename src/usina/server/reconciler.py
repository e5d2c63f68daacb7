"""The server's reconciler: one loop drives many runs, and several replicas share the work.

Each pass the loop claims unfinished runs whose lease is free or expired (up to ``max_runs``
held, at most ``max_claims_per_pass`` new ones a pass), and makes one ``Engine.reconcile``
pass on each run that may have moved:

- runs it just claimed (a new submission, a resumed run, a run another replica let go);
- runs the backend's change feed names (``changed_runs``: the Kubernetes backend's watch saw
  their Jobs or pods change, or a verdict that changes with time fell due);
- runs whose timer fell due: a step's retry back-off ends, a pass that failed is tried again,
  and every held run's resync (every ``resync_interval`` seconds, spread out), the safety net
  for what no feed reports, e.g. a cancel written by another replica's API.

So a pass costs what changed, not what is held. A backend without a change feed (the local
backend) has every held run reconciled each pass, as before.

Leases: a run's lease is renewed once less than half its TTL is left (a due-time heap, not a
sweep over every held run), and right before a pass on it when that is so; a pass on a run
starts only while the lease has at least half its TTL left, so a replica that stalled (a long
GC, a starved CPU) skips the run instead of acting on a lease that another replica may already
hold. Between passes the loop waits on the backend, which wakes it when something changes. A
replica killed with SIGKILL renews nothing: its leases expire after ``lease_ttl`` seconds and
the other replicas claim its runs; their backends adopt the attempts still running, so no step
runs twice.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from usina.engine.records import StepState
from usina.errors import NotFoundError, UsinaError

if TYPE_CHECKING:
    from usina.engine.engine import Engine
    from usina.server.settings import ReconcilerSettings
    from usina.stores.platform import PlatformStore

log = logging.getLogger(__name__)

#: A pass on a run that raised is tried again this many seconds later (not on every pass).
RETRY_FAILED_PASS_SECONDS = 1.0


@runtime_checkable
class ChangeFeed(Protocol):
    """What a backend may offer so a driver reconciles only the runs that changed
    (``KubernetesBackend`` does)."""

    def changed_runs(self) -> set[str]:
        """Runs to look at again since the last call."""
        ...

    def next_recheck(self) -> float | None:
        """When (epoch seconds) the backend's soonest time-driven change falls due."""
        ...


class Timers:
    """One due time per run, soonest first (a heap with lazy deletion): setting a run's time
    replaces the one it had."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def set(self, run_id: str, when: float) -> None:
        self._due[run_id] = when
        heapq.heappush(self._heap, (when, run_id))
        if len(self._heap) > 4 * len(self._due) + 64:  # drop the replaced entries now and then
            self._heap = [(w, r) for r, w in self._due.items()]
            heapq.heapify(self._heap)

    def drop(self, run_id: str) -> None:
        self._due.pop(run_id, None)

    def pop_due(self, now: float) -> list[str]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            when, run_id = heapq.heappop(self._heap)
            if self._due.get(run_id) == when:
                del self._due[run_id]
                out.append(run_id)
        return out

    def soonest(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None


class Reconciler:
    """Drives unfinished runs from the shared store; see the module docstring."""

    def __init__(
        self, engine: Engine, platform: PlatformStore, settings: ReconcilerSettings
    ) -> None:
        self.engine = engine
        self.platform = platform
        self.settings = settings
        self.owner = engine.owner
        self._held: dict[str, float] = {}  # run id -> when our lease on it expires
        self._renewals = Timers()  # run id -> when its lease is renewed
        self._timers = Timers()  # run id -> when it is reconciled at the latest
        self._dirty: set[str] = set()  # runs to reconcile on the next pass
        self._lock = threading.Lock()  # guards _dirty (``wake`` may be called from anywhere)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self.passes = 0
        self.errors = 0
        self.reconciled = 0  # run passes made, all passes together
        self._backlog = False  # the last pass claimed all it could: more runs wait

    @property
    def held(self) -> list[str]:
        return list(self._held)

    def wake(self, run_id: str) -> None:
        """Have ``run_id`` reconciled on the next pass (a cancel or resume made here), if held."""
        with self._lock:
            self._dirty.add(run_id)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="usina-reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current pass, give every lease back, and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for run_id in list(self._held):
            self._let_go(run_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.pass_once()
            except Exception:  # the store is down, say: keep trying, never die
                self.errors += 1
                log.exception("reconciler pass failed; trying again")
                self._stop.wait(min(self.settings.lease_ttl / 3, 2.0))
                continue
            self.engine.backend.wait(self.wait_time())

    def wait_time(self) -> float:
        """How long to wait for the backend before the next pass: the poll interval, shorter
        when a timer (ours or the backend's) falls due sooner."""
        if self._backlog:
            return 0.0
        longest = max(0.01, min(self.settings.poll_interval, self.settings.lease_ttl / 4))
        now = time.time()
        soonest = [t for t in (self._timers.soonest(), self._renewals.soonest()) if t]
        feed = self._feed()
        if feed is not None:
            recheck = feed.next_recheck()
            if recheck is not None:
                soonest.append(recheck)
        return max(0.0, min([longest, *(t - now for t in soonest)]))

    def _feed(self) -> ChangeFeed | None:
        backend = self.engine.backend
        return backend if isinstance(backend, ChangeFeed) else None

    # -- one pass --------------------------------------------------------------------------

    def pass_once(self) -> int:
        """Claim what there is room for, then reconcile each run that may have moved once.
        Returns how many runs were reconciled."""
        now = time.time()
        fresh = self._claim(now)
        self._renew_due(now)
        feed = self._feed()
        with self._lock:
            woken, self._dirty = self._dirty, set()
        if feed is None:
            due = list(self._held)  # no change feed: every held run, every pass
        else:
            # Ends first (they are what waits), then timers, then the runs just claimed.
            order = [*feed.changed_runs(), *woken, *self._timers.pop_due(now), *fresh]
            due = list(dict.fromkeys(r for r in order if r in self._held))
        done = 0
        for run_id in due:
            if self._stop.is_set():
                with self._lock:
                    self._dirty.update(due)  # a later start picks them up
                break
            if self._reconcile(run_id):
                done += 1
        self.passes += 1
        self.reconciled += done
        return done

    def _claim(self, now: float) -> list[str]:
        """Take the leases of claimable runs there is room for; the runs taken."""
        room = min(self.settings.max_runs - len(self._held), self.settings.max_claims_per_pass)
        taken: list[str] = []
        self._backlog = False
        if room <= 0:
            return taken
        for run_id in self.platform.claimable_runs(self.owner, now, room):
            if run_id in self._held:
                continue
            if len(taken) >= room:
                break
            if self._acquire(run_id):
                log.info("%s: now driving run %s", self.owner, run_id)
                taken.append(run_id)
        # A full slice taken by the per-pass cap (not by max_runs): more may wait, go on at once.
        self._backlog = len(taken) == room == self.settings.max_claims_per_pass
        return taken

    def _renew_due(self, now: float) -> None:
        """Renew the leases that have less than half their TTL left."""
        for run_id in self._renewals.pop_due(now):
            if run_id in self._held and not self._acquire(run_id):
                self._lost(run_id)

    def _reconcile(self, run_id: str) -> bool:
        """One engine pass on a held run; whether it was made."""
        ttl = self.settings.lease_ttl
        if self._held[run_id] - time.time() < ttl / 2:
            if not self._acquire(run_id):
                self._lost(run_id)
                return False
            if self._held[run_id] - time.time() < ttl / 2:
                return False  # stalled since renewing: do not act on a lease about to lapse
        try:
            run = self.engine.reconcile(run_id)
        except NotFoundError:
            self._drop(run_id)
            self.engine.forget(run_id)
            return False
        except UsinaError as exc:
            self.errors += 1
            log.warning("run %s: reconcile pass failed: %s", run_id, exc)
            self._timers.set(run_id, time.time() + RETRY_FAILED_PASS_SECONDS)
            return False
        except Exception:
            self.errors += 1
            log.exception("run %s: reconcile pass failed", run_id)
            self._timers.set(run_id, time.time() + RETRY_FAILED_PASS_SECONDS)
            return False
        if run.state.finished:
            self._let_go(run_id)
        else:
            self._timers.set(run_id, self._next_look(run_id))
        return True

    def _next_look(self, run_id: str) -> float:
        """When to reconcile a run that nothing reports on: its soonest retry back-off, else
        its resync (jittered, so runs claimed together do not resync together)."""
        now = time.time()
        when = now + self.settings.resync_interval * (0.75 + 0.25 * self._rng.random())
        clock_now = self.engine.clock.now()
        for step in self.engine.steps_of(run_id):
            if step.state is StepState.BACKOFF and step.next_attempt_at is not None:
                # The engine's clock may not be wall time: convert the wait, not the instant.
                when = min(when, now + max(0.0, step.next_attempt_at - clock_now))
        return when

    def _acquire(self, run_id: str) -> bool:
        now = time.time()
        try:
            ok = self.engine.metadata.acquire_lease(
                run_id, self.owner, self.settings.lease_ttl, now
            )
        except NotFoundError:
            ok = False
        if ok:
            self._held[run_id] = now + self.settings.lease_ttl
            self._renewals.set(run_id, now + self.settings.lease_ttl / 2)
        return ok

    def _lost(self, run_id: str) -> None:
        log.warning("%s: lost the lease on run %s to another replica", self.owner, run_id)
        self._drop(run_id)
        self.engine.forget(run_id)

    def _drop(self, run_id: str) -> None:
        self._held.pop(run_id, None)
        self._renewals.drop(run_id)
        self._timers.drop(run_id)

    def _let_go(self, run_id: str) -> None:
        self._drop(run_id)
        self.engine.forget(run_id)
        try:
            self.engine.metadata.release_lease(run_id, self.owner)
        except UsinaError as exc:
            log.warning("could not release the lease on run %s: %s", run_id, exc)
