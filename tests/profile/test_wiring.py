"""The profile pieces as the CLI and the server wire them: ``runs why`` on an OOM shows the
memory curve, ``runs show`` the figures, ``advise`` and ``runs top`` are commands, and the run
page draws each attempt's charts."""

from __future__ import annotations

import pytest

from tests.integration.cli_helpers import Usina
from tests.profile.test_cli import GROWING_OOM
from tests.server.conftest import make_server  # noqa: F401 - the fixture


@pytest.fixture
def usina(tmp_path):
    u = Usina(tmp_path)
    u.env["USINA_PROFILE_INTERVAL"] = "0.05"
    return u


def test_the_cli_shows_profiles_the_oom_curve_and_advice(usina):
    usina.write("p.py", GROWING_OOM)
    assert usina("run", "p.py").code == 0
    run = usina.last_run()["id"]
    why = usina("runs", "why", run)
    assert "memory over the last" in why.out
    assert "limit 150Mi" in why.out
    as_json = usina("runs", "why", run, "-o", "json").json()
    [oom] = as_json["failed_attempts"]
    assert oom["memory_curve"][0].startswith("memory over the last")
    shown = usina("runs", "show", run)
    assert "resources used (peak / p95 / requested)" in shown.out
    profiles = usina("runs", "show", run, "-o", "json").json()["profiles"]
    assert [p["number"] for p in profiles] == [1, 2]
    assert profiles[0]["memory"]["limit"] == 150 * 2**20
    advice = usina("advise", "p", "-o", "json").json()
    assert advice[0]["oom"][0]["would_suffice"] > 150 * 2**20
    top = usina("runs", "top", run, "--once")
    assert top.code == 0
    assert "has finished" in top.out


def test_the_run_page_draws_each_attempts_curves(make_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("USINA_PROFILE_INTERVAL", "0.05")
    server = make_server()
    token = server.token("default", "viewer")
    editor = server.token("default", "editor")
    run = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "params": {"n": 5}}, headers=server.as_(editor)
    ).json()
    assert server.wait_finished(editor, run["id"])["state"] == "succeeded"
    assert server.client.get(
        f"/api/v1/runs/{run['id']}/profiles", headers=server.as_(token)
    ).json()["attempts"]
    server.client.post("/ui/login", data={"token": token, "next": "/ui/runs"})
    page = server.client.get(f"/ui/runs/{run['id']}")
    assert page.status_code == 200
    html = page.text
    assert html.count('class="chart profile-chart" data-kind="memory"') == 3  # load, train, report
    assert "request = limit 2.0Gi" in html


def test_kpi_explains_every_kpi_and_reports_idle_gpu_hours(usina):
    from usina.monitoring.kpi import KPI_DEFINITIONS

    explained = usina("kpi", "--explain")
    assert explained.code == 0
    for name in KPI_DEFINITIONS:
        assert f"{name}: " in explained.out
    usina.write("p.py", GROWING_OOM)
    assert usina("run", "p.py").code == 0
    report = usina("kpi", "--no-models", "-o", "json").json()
    assert report["gpu_idle"]["allocated_hours"] == 0  # no GPU step ran
    assert "GPU-hours idle" in usina("kpi", "--no-models").out
