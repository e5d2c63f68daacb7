"""A platform server listening on loopback inside the test process (uvicorn in a thread), for
tests that need real connections: many at once, clients that go away, large bodies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.server.conftest import free_port, write_pipelines
from usina.server.app import create_app
from usina.server.context import ServerContext
from usina.server.guards import GuardSettings
from usina.server.settings import ReconcilerSettings, ServerSettings
from usina.stores.platform import Role


@dataclass
class LiveServer:
    url: str
    port: int
    ctx: ServerContext
    app: Any
    home: Path

    def token(self, project: str, role: str, name: str | None = None) -> str:
        token, _ = self.ctx.platform.create_token(
            name or f"{role}@{project}", {project: Role.parse(role)}
        )
        return token

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, follow_redirects=True
        )


@contextmanager
def live_server(
    home: Path,
    guards: GuardSettings | None = None,
    database_url: str | None = None,
    extra_pipelines: str | None = None,
) -> Iterator[LiveServer]:
    home.mkdir(parents=True, exist_ok=True)
    pipelines = write_pipelines(home)
    if extra_pipelines is not None:
        pipelines.write_text(pipelines.read_text() + "\n" + extra_pipelines)
    settings = ServerSettings(
        database_url=database_url or f"sqlite:///{home}/usina.db",
        artifacts_url=str(home / "artifacts"),
        attempts_dir=str(home / "attempts"),
        pipelines=(str(pipelines),),
        reconciler=ReconcilerSettings(lease_ttl=5.0, poll_interval=0.1, max_runs=8),
    )
    ctx = ServerContext.open(settings)
    app = create_app(ctx, guards=guards)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the live server did not start in 30 s")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", port, ctx, app, home)
    finally:
        server.should_exit = True
        thread.join(30)
