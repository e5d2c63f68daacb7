"""Triggers across a restart of a real `usina server` on PostgreSQL: the replica is SIGKILLed
after its triggers fired; the alias moves and a file lands while it is down; the restarted
replica fires each new cause once and none of the old ones again."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import CLI, cli_env, free_port, write_pipelines


@pytest.fixture
def replicas(tmp_path: Path, postgres_server: Any) -> Iterator[Callable[[], Any]]:
    """Starts `usina server` processes on one fresh PostgreSQL database and one MLflow registry;
    yields a function that starts one more (and returns its Popen, URL and token)."""
    database = postgres_server.create_database()
    registry = f"sqlite:///{tmp_path}/mlflow.db"
    pipelines = write_pipelines(tmp_path)
    env = {**cli_env(tmp_path), "USINA_DATABASE_URL": database}
    token = subprocess.run(
        [*CLI, "token", "create", "--project", "default", "--role", "editor", "--name", "ana"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    started: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.Client] = []
    logs: list[Any] = []

    def start() -> Any:
        port = free_port()
        log = open(tmp_path / f"server{len(started)}.log", "wb")  # noqa: SIM115
        logs.append(log)
        proc = subprocess.Popen(
            [*CLI, "server", "--port", str(port), "--pipelines", str(pipelines),
             "--registry-uri", registry, "--artifacts-url", str(tmp_path / "artifacts")],
            env=env, cwd=tmp_path, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(proc)
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )  # fmt: skip
        clients.append(client)
        wait_for(lambda: _healthy(client, proc), "the server answers /healthz", 90)
        return proc, client, registry

    yield start
    for client in clients:
        client.close()
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
    for log in logs:
        log.close()


def _healthy(client: httpx.Client, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "the server exited"
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"waited {timeout:.0f}s for {what}")


def triggered(client: httpx.Client) -> list[dict[str, Any]]:
    items = client.get("/api/v1/runs", params={"limit": 100}).json()["items"]
    return [r for r in items if r.get("labels", {}).get("trigger")]


@pytest.mark.postgres
def test_each_cause_fires_once_across_a_server_restart(replicas, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    proc, client, registry = replicas()
    mlflow = MlflowClient(tracking_uri=registry, registry_uri=registry)
    mlflow.create_registered_model("fraud", tags={"usina.project": "default"})
    for _ in range(2):
        mlflow.create_model_version("fraud", source=str(tmp_path))
    mlflow.set_registered_model_alias("fraud", "champion", "1")
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "old.csv").write_text("a\n")
    for name, spec, kind in [
        ("redeploy", {"model": "fraud", "alias": "champion"}, "alias"),
        ("landed", {"prefix": str(landing)}, "objects"),
    ]:
        body = {"name": name, "pipeline": "demo", "kind": kind, "spec": spec,
                "params": {"n": 2}}  # fmt: skip
        made = client.post("/api/v1/triggers", json=body)
        assert made.status_code == 201, made.text

    mlflow.set_registered_model_alias("fraud", "champion", "2")
    (landing / "a.csv").write_text("1\n")
    wait_for(lambda: len(triggered(client)) == 2, "two triggered runs")
    proc.kill()  # SIGKILL: no clean shutdown
    proc.wait(20)

    mlflow.set_registered_model_alias("fraud", "champion", "1")  # a rollback while it is down
    (landing / "b.csv").write_text("2\n")
    _, client, _ = replicas()
    wait_for(lambda: len(triggered(client)) >= 4, "the causes of the downtime")
    # a last cause: once its run exists, the restarted replica has passed over every trigger
    # after the downtime's causes, and would have made any duplicate by then
    (landing / "c.csv").write_text("3\n")
    wait_for(lambda: len(triggered(client)) >= 5, "the last cause")
    causes = [r["labels"]["trigger-cause"] for r in triggered(client)]
    assert len(causes) == 5, causes
    moves = sorted(c for c in causes if c.startswith("fraud@"))
    assert moves == ["fraud@champion=1", "fraud@champion=2"]
    files = sorted(Path(c.rsplit("@", 1)[0]).name for c in causes if not c.startswith("fraud@"))
    assert files == ["a.csv", "b.csv", "c.csv"]
    for run in triggered(client):
        events = client.get(f"/api/v1/runs/{run['id']}/events").json()
        assert len([e for e in events if e["kind"] == "run_triggered"]) == 1
