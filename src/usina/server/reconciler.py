"""The server's reconciler: one loop drives many runs, and several replicas share the work.

Each pass the loop claims unfinished runs whose lease is free or expired (up to ``max_runs``),
renews the lease of each run it holds right before reconciling it (``acquire_lease``: one
conditional UPDATE, so two replicas never both win), makes one ``Engine.reconcile`` pass, and
lets go of runs that finished. Between passes it waits on the backend, which wakes it when an
attempt ends. A replica killed with SIGKILL renews nothing: its leases expire after
``lease_ttl`` seconds and the other replicas claim its runs; their local backends adopt the
attempts still running through the attempts' lock files, so no step runs twice.

A pass on a run starts only while the lease has at least half its TTL left, so a replica that
stalled (a long GC, a starved CPU) skips the run instead of acting on a lease that another
replica may already hold.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from usina.errors import NotFoundError, UsinaError

if TYPE_CHECKING:
    from usina.engine.engine import Engine
    from usina.server.settings import ReconcilerSettings
    from usina.stores.platform import PlatformStore

log = logging.getLogger(__name__)


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.errors = 0

    @property
    def held(self) -> list[str]:
        return list(self._held)

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
            self.engine.backend.wait(self._wait_time())

    def _wait_time(self) -> float:
        return max(0.01, min(self.settings.poll_interval, self.settings.lease_ttl / 4))

    # -- one pass --------------------------------------------------------------------------

    def pass_once(self) -> int:
        """Claim what there is room for, then reconcile each held run once. Returns how many
        runs were reconciled."""
        ttl = self.settings.lease_ttl
        room = self.settings.max_runs - len(self._held)
        if room > 0:
            now = time.time()
            for run_id in self.platform.claimable_runs(self.owner, now, room + len(self._held)):
                if run_id in self._held or len(self._held) >= self.settings.max_runs:
                    continue
                if self._acquire(run_id):
                    log.info("%s: now driving run %s", self.owner, run_id)
        done = 0
        for run_id in list(self._held):
            if self._stop.is_set():
                break
            if not self._acquire(run_id):
                log.warning("%s: lost the lease on run %s to another replica", self.owner, run_id)
                self._held.pop(run_id, None)
                self.engine.forget(run_id)
                continue
            if self._held[run_id] - time.time() < ttl / 2:
                continue  # stalled since renewing: do not act on a lease about to lapse
            try:
                run = self.engine.reconcile(run_id)
            except NotFoundError:
                self._held.pop(run_id, None)
                self.engine.forget(run_id)
                continue
            except UsinaError as exc:
                self.errors += 1
                log.warning("run %s: reconcile pass failed: %s", run_id, exc)
                continue
            except Exception:
                self.errors += 1
                log.exception("run %s: reconcile pass failed", run_id)
                continue
            done += 1
            if run.state.finished:
                self._let_go(run_id)
        self.passes += 1
        return done

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
        return ok

    def _let_go(self, run_id: str) -> None:
        self._held.pop(run_id, None)
        self.engine.forget(run_id)
        try:
            self.engine.metadata.release_lease(run_id, self.owner)
        except UsinaError as exc:
            log.warning("could not release the lease on run %s: %s", run_id, exc)
