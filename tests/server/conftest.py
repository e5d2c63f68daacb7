"""Fixtures of the platform server's tests: a server in this process (FastAPI's TestClient)
on a fresh database, tokens with given roles, and pipeline files with quick steps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from usina.server.app import create_app
from usina.server.context import ServerContext
from usina.server.settings import ReconcilerSettings, ServerSettings
from usina.stores.platform import Role

# A pipeline whose middle step fails once (a marker file remembers) and then succeeds.
PIPELINES = """
import os
from usina import Retry, log_metric, pipeline, step

@step(cache=False)
def load(n: int) -> list:
    print(f"loading {n} rows")
    return list(range(n))

@step(cache=False, retry=Retry(user=2, backoff=0.1))
def train(rows: list, marker: str) -> float:
    print(f"training on {len(rows)} rows")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("feature store timed out while reading rows")
    log_metric("auc", 0.5 + len(rows) / 1000)
    return sum(rows) / max(1, len(rows))

@step(cache=False)
def report(score: float) -> str:
    print(f"score is {score}")
    return f"score={score}"

@pipeline
def demo(n: int = 10, marker: str = ""):
    report(train(load(n), marker))

@step(cache=False)
def sleepy(seconds: float) -> int:
    import time
    print("sleeping", flush=True)
    time.sleep(seconds)
    return 1

@pipeline
def slow(seconds: float = 30.0):
    sleepy(seconds)

@step(cache=False)
def broken() -> int:
    raise ValueError("negative amount in row 2")

@pipeline
def failing():
    broken()
"""


def write_pipelines(folder: Path) -> Path:
    path = folder / "pipelines.py"
    path.write_text(textwrap.dedent(PIPELINES))
    return path


@dataclass
class Server:
    ctx: ServerContext
    app: FastAPI
    client: TestClient
    home: Path

    def token(self, project: str, role: str, name: str | None = None) -> str:
        token, _ = self.ctx.platform.create_token(
            name or f"{role}@{project}", {project: Role.parse(role)}
        )
        return token

    def as_(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def wait_finished(self, token: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run: dict[str, Any] = self.client.get(
                f"/api/v1/runs/{run_id}", headers=self.as_(token)
            ).json()
            if run["state"] in ("succeeded", "failed", "cancelled"):
                return run
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} did not finish in {timeout}s: {run}")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts a server (API + reconciler) in this process on ``database_url``."""
    made: list[tuple[TestClient, ServerContext]] = []

    def make(
        database_url: str | None = None,
        *,
        reconcile: bool = True,
        registry_uri: str | None = None,
        lease_ttl: float = 5.0,
    ) -> Server:
        home = tmp_path / f"home{len(made)}"
        home.mkdir()
        pipelines = write_pipelines(home)
        settings = ServerSettings(
            database_url=database_url or f"sqlite:///{home}/usina.db",
            artifacts_url=str(home / "artifacts"),
            attempts_dir=str(home / "attempts"),
            pipelines=(str(pipelines),),
            registry_uri=registry_uri,
            reconciler=ReconcilerSettings(
                lease_ttl=lease_ttl, poll_interval=0.1, max_runs=8, enabled=reconcile
            ),
        )
        ctx = ServerContext.open(settings)
        app = create_app(ctx)
        client = TestClient(app)
        client.__enter__()
        made.append((client, ctx))
        return Server(ctx, app, client, home)

    yield make
    for client, _ctx in reversed(made):
        client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(client: httpx.Client, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the server behind ``client`` answers ``/healthz``; raises if ``proc`` exits or
    ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
        time.sleep(0.2)


def cli_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "USINA_HOME": str(home / ".usina"), "PYTHONUNBUFFERED": "1"}
    for name in ("USINA_DATABASE_URL", "USINA_ARTIFACTS_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    for name in ("USINA_SERVER", "USINA_TOKEN"):
        env.pop(name, None)
    return env


CLI = [sys.executable, "-m", "usina.cli.main"]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, str, httpx.Client, Path]]:
    """``usina server`` in a subprocess on SQLite; yields its URL, an editor token of project
    "default", a client with that token, and the server's folder."""
    pipelines = write_pipelines(tmp_path)
    env = cli_env(tmp_path)
    token = subprocess.run(
        [*CLI, "token", "create", "--project", "default", "--role", "editor", "--name", "ana"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*CLI, "server", "--port", str(port), "--pipelines", str(pipelines)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        wait_healthy(client, proc, 60)
        yield url, token, client, tmp_path
    finally:
        client.close()
        proc.terminate()
        proc.wait(20)
