"""Helpers of the distributed tests: a temporary pipeline folder with the fraud MLP next to it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from tests.integration.cli_helpers import Usina

ROOT = Path(__file__).resolve().parents[2]
TORCH_MODEL = ROOT / "examples" / "fraud" / "torch_model.py"


def usina_with_model(home: Path) -> Usina:
    """The CLI in ``home``, with ``torch_model.py`` copied there (pipelines import it)."""
    shutil.copy(TORCH_MODEL, home / "torch_model.py")
    return Usina(home)


def read_progress(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line being written while we read
            continue
    return rows


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
