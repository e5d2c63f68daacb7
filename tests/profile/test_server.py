"""The server's profile endpoint and the run page's resource charts."""

from __future__ import annotations

import re

from tests.profile.factory import GI, World
from tests.server.conftest import make_server  # noqa: F401 - the fixture
from usina.server import profiles
from usina.server.ui import templates


def test_the_profiles_endpoint_returns_each_attempts_series(make_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("USINA_PROFILE_INTERVAL", "0.05")
    server = make_server()
    server.app.include_router(profiles.router)  # as usina.server.app registers it
    token = server.token("default", "editor")
    run = server.client.post(
        "/api/v1/runs",
        json={"pipeline": "demo", "params": {"n": 5}},
        headers=server.as_(token),
    ).json()
    assert server.wait_finished(token, run["id"])["state"] == "succeeded"
    got = server.client.get(f"/api/v1/runs/{run['id']}/profiles", headers=server.as_(token))
    assert got.status_code == 200, got.text
    body = got.json()
    assert [a["node"] for a in body["attempts"]] == ["load", "train", "report"]
    for item in body["attempts"]:
        [profile] = item["profiles"]
        assert profile["series"]["memory"]
        assert profile["limits"]["memory"] == 2 * GI  # the default Resources(memory="2Gi")
        assert profile["summary"]["memory"]["peak"] > 0
    other = server.token("elsewhere", "viewer")
    hidden = server.client.get(f"/api/v1/runs/{run['id']}/profiles", headers=server.as_(other))
    assert hidden.status_code == 404

    charts = profiles.attempt_charts(
        server.ctx.artifacts, server.ctx.metadata.get_attempts(run["id"])
    )
    html = templates.get_template("profile_charts.html").render(charts=next(iter(charts.values())))
    assert 'data-kind="memory"' in html
    assert "request = limit 2.0Gi" in html


def test_charts_draw_one_line_per_rank_and_gpu_with_request_and_limit_lines():
    world = World()
    run = world.run(
        "train",
        [
            {
                "step": "fit",
                "memory": "4Gi",
                "gpus": 2,
                "series": [GI, 2 * GI, 3 * GI],
                "gpu_util": [[90.0, 95.0, 97.0], [2.0, 1.0, 0.0]],
            }
        ],
    )
    [attempt] = world.metadata.get_attempts(run.id)
    charts = profiles.attempt_charts(world.artifacts, [attempt])[attempt.id]
    assert [c["kind"] for c in charts] == ["cpu", "memory", "gpu"]
    memory = charts[1]
    [mark] = memory["marks"]
    assert mark["label"] == "request = limit 4.0Gi"
    # the limit line sits above the 3Gi peak: 3/4 of the way up the plotted range
    [line] = memory["series"]
    ys = [float(p.split(",")[1]) for p in line["points"].split()]
    assert min(ys) > mark["y"]
    gpu = charts[2]
    assert [s["label"] for s in gpu["series"]] == ["GPU 0", "GPU 1"]
    assert gpu["marks"] == []
    html = templates.get_template("profile_charts.html").render(charts=charts)
    assert len(re.findall(r'<polyline class="series"', html)) == 4  # cpu, memory, 2 GPUs
    assert 'class="mark limit"' in html
    assert profiles.attempt_charts(world.artifacts, []) == {}
