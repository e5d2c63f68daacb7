"""One composition root (``usina.compose``): backends found by name in the ``usina.backends``
entry-point group (a third-party one included) for the CLI and the server, and the CLI's one
runs source, which prints the same table for a run read locally or from a server."""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.server.conftest import Server
from usina.cli.display import run_summary, run_table, runs_table
from usina.cli.source import LocalRuns
from usina.compose import backends
from usina.compose.backends import BackendRequest, backend_factory, backend_names
from usina.compose.settings import Settings
from usina.engine.records import RunId, RunRecord, RunState, StepRecord, StepState
from usina.errors import DefinitionError
from usina.server.context import ServerContext
from usina.server.settings import ReconcilerSettings, ServerSettings
from usina.testing import InMemoryArtifactStore
from usina.testing.backend import FakeBackend
from usina.testing.clock import FakeClock

MADE: list[FakeBackend] = []


def recording_backend(request: BackendRequest) -> FakeBackend:
    """A third-party backend's factory, as an installed package would declare it."""
    backend = FakeBackend(artifacts=request.artifacts, clock=FakeClock())
    backend.name = f"recording:{request.options.get('region', '-')}"
    MADE.append(backend)
    return backend


@pytest.fixture
def third_party(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installs ``recording`` in the entry-point group, as ``pip install`` of a package would."""
    installed = metadata.EntryPoint(
        name="recording", value=f"{__name__}:recording_backend", group=backends.GROUP
    )
    real = metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == backends.GROUP:
            return metadata.EntryPoints([installed])
        return real(**params)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_builtin_backends_are_found_by_name() -> None:
    assert {"local", "kubernetes"} <= set(backend_names())
    request = BackendRequest(artifacts=InMemoryArtifactStore(), attempts_dir="/tmp/x")
    local = backend_factory("local")(request)
    try:
        assert local.name == "local"
    finally:
        local.close()


def test_an_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(DefinitionError, match=r"unknown backend 'slurm'.*kubernetes, local"):
        backend_factory("slurm")


@pytest.mark.usefixtures("third_party")
def test_a_third_party_backend_is_found_through_its_entry_point() -> None:
    assert "recording" in backend_names()
    request = BackendRequest(
        artifacts=InMemoryArtifactStore(), attempts_dir="/tmp/x", options={"region": "eu"}
    )
    assert backend_factory("recording")(request).name == "recording:eu"


@pytest.mark.usefixtures("third_party")
def test_the_server_builds_the_backend_its_settings_name(tmp_path: Path) -> None:
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path}/usina.db",
        artifacts_url=str(tmp_path / "artifacts"),
        attempts_dir=str(tmp_path / "attempts"),
        reconciler=ReconcilerSettings(enabled=False),
        backend="recording",
        backend_options={"region": "us"},
    )
    ctx = ServerContext.open(settings)
    try:
        assert ctx.engine.backend is MADE[-1]
        assert ctx.engine.backend.name == "recording:us"
    finally:
        ctx.close()


def test_the_server_runs_on_the_local_backend_by_default(tmp_path: Path) -> None:
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path}/usina.db",
        artifacts_url=str(tmp_path / "artifacts"),
        attempts_dir=str(tmp_path / "attempts"),
        reconciler=ReconcilerSettings(enabled=False),
    )
    ctx = ServerContext.open(settings)
    try:
        assert ctx.engine.backend.name == "local"
    finally:
        ctx.close()


def _long_run(server: Server) -> None:
    start = time.time() - 400
    run = RunRecord(
        id=RunId("long-run"),
        pipeline="demo",
        plan={"nodes": [{"id": "load"}]},
        params={},
        state=RunState.SUCCEEDED,
        created_at=start,
        started_at=start,
        finished_at=start + 312.4,
    )
    step = StepRecord(
        run_id=run.id,
        node="load",
        state=StepState.SUCCEEDED,
        resources={},
        attempts=1,
        started_at=start,
        finished_at=start + 312.4,
    )
    server.ctx.metadata.create_run(run, [step])


def _text(renderable: object) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_same_run_prints_the_same_tables_locally_and_remotely(make_server: Any) -> None:
    server: Server = make_server()
    token = server.token("default", "editor")
    submitted = server.client.post(
        "/api/v1/runs",
        json={"pipeline": "demo", "params": {"n": 5}},
        headers=server.as_(token),
    ).json()
    server.wait_finished(token, submitted["id"])
    _long_run(server)  # 5m12s: locally it printed "312.4s", remotely "5m12s"
    remote_run = server.client.get(
        f"/api/v1/runs/{submitted['id']}", headers=server.as_(token)
    ).json()
    remote_ls = server.client.get("/api/v1/runs", headers=server.as_(token)).json()["items"]

    local = LocalRuns(
        Settings(
            home=str(server.home),
            database_url=server.ctx.settings.database_url,
            artifacts_url=server.ctx.settings.artifacts_url,
            tracking_uri="sqlite:///unused.db",
        )
    )
    try:
        local_run = local.show(submitted["id"])
        local_ls = local.list_runs(limit=20, state=None, pipeline=None)
        assert (
            local.logs(submitted["id"], "load", None)
            == server.client.get(
                f"/api/v1/runs/{submitted['id']}/steps/load/logs", headers=server.as_(token)
            ).text
        )
    finally:
        local.close()

    assert remote_run["duration"] is not None
    assert _text(run_table(local_run)) == _text(run_table(remote_run))
    assert run_summary(local_run) == run_summary(remote_run)
    assert _text(runs_table(local_ls)) == _text(runs_table(remote_ls))
    assert "5m12s" in _text(runs_table(local_ls))


def test_an_installed_entry_does_not_replace_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built-in names are usina's: ``--backend local`` never means another package's code (and
    never scans the installed packages for it)."""
    impostor = metadata.EntryPoint(
        name="local", value=f"{__name__}:recording_backend", group=backends.GROUP
    )
    monkeypatch.setattr(metadata, "entry_points", lambda **_: metadata.EntryPoints([impostor]))
    assert backend_factory("local") is backends.local_backend
    assert backends.entry_points()["local"].value == backends.BUILTIN["local"]
