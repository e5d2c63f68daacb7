"""``/metrics`` of the platform server (issue #14, finding 8): protectable by a token or moved
to a port of its own, and the ``team`` label takes a bounded number of values."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from tests.server.conftest import Server
from tests.server.live import live_server
from usina.monitoring.pipeline_metrics import start_metrics_server
from usina.server.app import create_app
from usina.server.guards import GuardSettings


def test_metrics_token_protects_the_scrape(tmp_path: Path) -> None:
    with live_server(tmp_path, GuardSettings(metrics_token="scrape-secret")) as server:
        api = server.token("*", "admin")
        client = server.client()
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        # An API token is not the metrics token either.
        as_api = client.get("/metrics", headers={"Authorization": f"Bearer {api}"})
        assert as_api.status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200
        assert "usina_" in ok.text
        client.close()


def test_metrics_on_a_port_of_their_own(tmp_path: Path) -> None:
    with live_server(tmp_path, GuardSettings(metrics_port=0)) as server:
        with server.client() as client:
            assert client.get("/metrics").status_code == 404
        metrics = start_metrics_server(server.app.state.metrics_registry, 0)
        try:
            reply = httpx.get(f"http://127.0.0.1:{metrics.port}/metrics", timeout=30)
            assert reply.status_code == 200
            assert "usina_" in reply.text
        finally:
            metrics.stop()


def _teams(text: str) -> set[str]:
    return set(re.findall(r'usina_pipeline_runs_active\{[^}]*team="([^"]*)"', text))


def test_team_label_values_are_bounded(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    editor = server.as_(server.token("default", "editor"))
    for i in range(12):
        body = {"pipeline": "demo", "labels": {"team": f"team-{i}"}}
        assert server.client.post("/api/v1/runs", json=body, headers=editor).status_code == 201

    bounded = create_app(server.ctx, manage=False, guards=GuardSettings(metrics_max_teams=5))
    with TestClient(bounded) as client:
        teams = _teams(client.get("/metrics").text)
    assert len(teams) == 6
    assert "other" in teams

    chosen = create_app(
        server.ctx, manage=False, guards=GuardSettings(metrics_teams=("team-3", "team-7"))
    )
    with TestClient(chosen) as client:
        assert _teams(client.get("/metrics").text) == {"team-3", "team-7", "other"}

    # Unbounded, every team would have its own series: the bound is what keeps it small.
    wide = create_app(server.ctx, manage=False, guards=GuardSettings(metrics_max_teams=1000))
    with TestClient(wide) as client:
        assert len(_teams(client.get("/metrics").text)) == 12
