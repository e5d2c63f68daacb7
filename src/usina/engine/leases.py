"""Leases: one driver per run at a time, claimed and renewed through the metadata store.

A driver takes a run's lease before it reconciles it and renews it while it drives; a second
driver is refused with a message naming the holder. A holder on this machine whose process is
gone (killed) is replaced at once instead of waiting for its lease to expire.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import TYPE_CHECKING

from usina.errors import StateError

if TYPE_CHECKING:
    from usina.engine.ports import Clock, MetadataStore


def default_owner() -> str:
    """``<host>:<pid>:<6 hex>``: names this driver in the run's lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    """The leases one driver (``owner``) holds, each lasting ``ttl`` seconds unrenewed."""

    def __init__(self, metadata: MetadataStore, clock: Clock, owner: str, ttl: float) -> None:
        self.metadata = metadata
        self.clock = clock
        self.owner = owner
        self.ttl = ttl
        self._renewed: dict[str, float] = {}

    def take(self, run_id: str) -> None:
        """Claim the run, or raise ``StateError`` naming the driver that holds it."""
        now = self.clock.now()
        self._renewed[run_id] = now
        if self.metadata.acquire_lease(run_id, self.owner, self.ttl, now):
            return
        run = self.metadata.get_run(run_id)
        holder = run.lease_owner or ""
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            # The previous driver on this machine is gone (killed): take over at once.
            self.metadata.release_lease(run_id, holder)
            if self.metadata.acquire_lease(run_id, self.owner, self.ttl, now):
                return
        raise StateError(
            f"run {run_id} is being driven by {holder} (lease until "
            f"{time.strftime('%H:%M:%S', time.localtime(run.lease_expires or now))}); "
            "wait for it, or cancel it with 'usina runs cancel'"
        )

    def renew(self, run_id: str) -> None:
        """Renew once a third of the TTL has passed, not on every pass (it is a write)."""
        now = self.clock.now()
        if now - self._renewed.get(run_id, float("-inf")) < self.ttl / 3:
            return
        if not self.metadata.acquire_lease(run_id, self.owner, self.ttl, now):
            raise StateError(f"lost the lease on run {run_id} to another driver")
        self._renewed[run_id] = now

    def release(self, run_id: str) -> None:
        self.metadata.release_lease(run_id, self.owner)

    def forget(self, run_id: str) -> None:
        self._renewed.pop(run_id, None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Leases", "default_owner"]
