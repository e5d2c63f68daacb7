"""Fixtures: one tiny checkpoint per session, and ``usina serve`` over it in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.llm.llm_support import free_port, make_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def served(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """``usina serve CHECKPOINT`` (the tabular command: it recognises a transformers model)
    in its own process, as users run it; the URL, serving the model as ``assistant``."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "usina.serving", str(checkpoint), "--name", "assistant",
             "--host", "127.0.0.1", "--http-port", str(port), "--no-grpc"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"usina serve did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    yield url
    proc.terminate()
    proc.wait(30)
