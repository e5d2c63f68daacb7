"""A pass repeated on a daemon thread until stopped: how the server runs its scheduler and its
notifier beside the API. A pass that raises is logged and the loop goes on."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, run_once: Callable[[], object], interval: float) -> None:
        self.name = name
        self.run_once = run_once
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a pass never takes the server down
                log.exception("%s: pass failed", self.name)
            self._stop.wait(self.interval)
