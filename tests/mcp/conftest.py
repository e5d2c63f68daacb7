"""A platform server (API + reconciler + the MCP mount) on a loopback port, with tokens."""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# ``fragile`` fails until the file named by its parameter exists: an agent reads why, the
# cause is "fixed" (the file is created), and resume makes the run succeed.
PIPELINES = """
import os
from usina import pipeline, step

@step(cache=False)
def load(n: int) -> list:
    return list(range(n))

@step(cache=False)
def train(rows: list, needs: str) -> float:
    print(f"training on {len(rows)} rows")
    if not os.path.exists(needs):
        raise FileNotFoundError(f"feature file {needs} is missing")
    return sum(rows) / len(rows)

@pipeline
def fragile(n: int = 5, needs: str = ""):
    train(load(n), needs)

@step(cache=False)
def sleepy(seconds: float) -> int:
    import time
    time.sleep(seconds)
    return 1

@pipeline
def slow(seconds: float = 60.0):
    sleepy(seconds)
"""


@dataclass
class Platform:
    url: str
    editor: str
    viewer: str
    admin: str
    home: Path

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def wait(self, token: str, run_id: str, states: tuple[str, ...], timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        with self.api(token) as http:
            while True:
                run = http.get(f"/api/v1/runs/{run_id}").json()
                if run["state"] in states:
                    return run
                if time.monotonic() > deadline:
                    raise AssertionError(f"run {run_id} not in {states} after {timeout}s: {run}")
                time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    import uvicorn

    from usina.mcp.http import mount
    from usina.server.app import create_app
    from usina.server.context import ServerContext
    from usina.server.settings import ReconcilerSettings, ServerSettings
    from usina.stores.platform import Role

    home = tmp_path_factory.mktemp("platform")
    pipelines = home / "pipelines.py"
    pipelines.write_text(textwrap.dedent(PIPELINES))
    settings = ServerSettings(
        database_url=f"sqlite:///{home}/usina.db",
        artifacts_url=str(home / "artifacts"),
        attempts_dir=str(home / "attempts"),
        pipelines=(str(pipelines),),
        reconciler=ReconcilerSettings(poll_interval=0.1, max_runs=8),
    )
    ctx = ServerContext.open(settings)
    app = create_app(ctx)
    mount(app)  # what usina server does when the mcp extra is installed
    editor, _ = ctx.platform.create_token("ana", {"default": Role.EDITOR})
    viewer, _ = ctx.platform.create_token("vera", {"default": Role.VIEWER})
    admin, _ = ctx.platform.create_token("root", {"default": Role.ADMIN})
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "usina server did not start in 30 s"
        assert thread.is_alive(), "usina server stopped while starting"
        time.sleep(0.05)
    yield Platform(f"http://127.0.0.1:{port}", editor, viewer, admin, home)
    server.should_exit = True
    thread.join(30)
