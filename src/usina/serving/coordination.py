"""Workers of one server switch versions together: no worker serves a version until every
worker has loaded it.

``usina serve --workers N`` runs N processes; each follows the alias on its own, so without
agreement two versions would answer side by side for as long as their loads differ (seconds).
Each worker writes, in a folder the supervisor shares with them, which version of each model it
has ready; a worker that has loaded a new version waits, still serving the old one, until every
live worker reports the same version, then switches. Every worker polls the folder while
waiting, so the switches land within one check interval of each other. A worker that fails to
load the version holds everyone on the old one (a version is served by every worker or by none);
a dead worker is struck off by the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.02


class Coordinator:
    """One worker's view of the shared folder ``directory``."""

    def __init__(self, directory: str, pid: int | None = None) -> None:
        self.root = Path(directory)
        self.pid = pid if pid is not None else os.getpid()
        (self.root / "workers").mkdir(parents=True, exist_ok=True)

    def _ready_file(self, model: str, pid: int) -> Path:
        return self.root / "ready" / model / str(pid)

    def report(self, model: str, version: str) -> None:
        """Record that this worker has ``version`` of ``model`` ready (atomically)."""
        path = self._ready_file(model, self.pid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(version)
        os.replace(tmp, path)

    def join(self) -> None:
        """Count this worker in (after its initial load and ``report``)."""
        (self.root / "workers" / str(self.pid)).touch()

    def workers(self) -> list[int]:
        return [int(p.name) for p in (self.root / "workers").iterdir() if p.name.isdigit()]

    def versions(self, model: str) -> dict[int, str | None]:
        out: dict[int, str | None] = {}
        for pid in self.workers():
            try:
                out[pid] = self._ready_file(model, pid).read_text()
            except FileNotFoundError:
                out[pid] = None
        return out

    def all_ready(self, model: str, version: str) -> bool:
        return all(v == version for v in self.versions(model).values())

    async def agree(
        self,
        model: str,
        version: str,
        *,
        still_wanted: Callable[[], Awaitable[bool]],
        recheck_s: float,
    ) -> bool:
        """Report ``version`` ready and wait until every worker does: True, switch now. False
        when ``still_wanted()`` (asked every ``recheck_s``) says the version is no longer
        the target: then this worker stays on what it serves."""
        self.report(model, version)
        next_check = time.monotonic() + recheck_s
        while not self.all_ready(model, version):
            if time.monotonic() >= next_check:
                if not await still_wanted():
                    return False
                next_check = time.monotonic() + recheck_s
            await asyncio.sleep(CHECK_INTERVAL_S)
        return True


def strike_off(directory: str, pid: int) -> None:
    """The supervisor's part: a dead worker no longer holds the others back."""
    with contextlib.suppress(FileNotFoundError):
        (Path(directory) / "workers" / str(pid)).unlink()
