"""Schedules through the API and the CLI against a real `usina server`: create, list, show,
pause and resume, backfill (runs with their intervals), delete; a viewer may read but not change
them, and every change is audited."""

from __future__ import annotations

import json
import subprocess
import time

from tests.server.conftest import CLI, cli_env


def test_schedules_through_the_cli_and_the_api(http_server, tmp_path_factory, make_server):
    url, token, client, home = http_server
    here = tmp_path_factory.mktemp("laptop")
    env = {**cli_env(here), "USINA_SERVER": url, "USINA_TOKEN": token}

    def usina(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*CLI, *args], env=env, cwd=here, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == code, done.stdout + done.stderr
        return done

    created = json.loads(
        usina("schedules", "create", "nightly", "--pipeline", "demo", "--cron", "0 3 * * *",
              "--timezone", "America/Sao_Paulo", "-p", "n=3", "--output", "json").stdout
    )  # fmt: skip
    assert created["next_tick"].endswith("T06:00:00Z")  # 03:00 in São Paulo is 06:00 UTC
    assert created["concurrency"] == "forbid"
    listed = json.loads(usina("schedules", "ls", "--output", "json").stdout)
    assert [s["name"] for s in listed] == ["nightly"]
    bad = usina("schedules", "create", "x", "--pipeline", "demo", "--cron", "61 * * * *", code=2)
    assert "not a cron expression" in bad.stderr + bad.stdout

    paused = json.loads(usina("schedules", "pause", "nightly", "--output", "json").stdout)
    assert paused["paused"] is True
    assert paused["next_tick"] is None
    assert (
        json.loads(usina("schedules", "resume", "nightly", "--output", "json").stdout)["paused"]
        is False
    )

    queued = json.loads(
        usina("schedules", "backfill", "nightly", "--start", "2026-11-01T00:00:00Z",
              "--end", "2026-11-03T23:00:00Z", "--output", "json").stdout
    )["queued"]  # fmt: skip
    assert [t["nominal"] for t in queued] == [
        "2026-11-01T06:00:00Z", "2026-11-02T06:00:00Z", "2026-11-03T06:00:00Z",
    ]  # fmt: skip
    # the server's scheduler creates the backfill's runs (two at a time)
    runs = []
    for _ in range(300):
        runs = [r for r in client.get("/api/v1/runs").json()["items"]
                if r.get("labels", {}).get("schedule") == "nightly"]  # fmt: skip
        if len(runs) == 3 and all(r["state"] == "succeeded" for r in runs):
            break
        time.sleep(0.5)
    assert sorted(r["id"] for r in runs) == sorted(t["run_id"] for t in queued)
    shown = usina("schedules", "show", "nightly").stdout
    assert "backfill" in shown
    usina("schedules", "delete", "nightly")
    assert json.loads(usina("schedules", "ls", "--output", "json").stdout) == []


def test_a_viewer_reads_schedules_but_cannot_change_them(make_server):
    server = make_server()
    editor = server.token("default", "editor")
    viewer = server.token("default", "viewer")
    body = {"name": "weekly", "pipeline": "demo", "cron": "0 4 * * 1", "params": {"n": 2}}
    made = server.client.put("/api/v1/schedules", json=body, headers=server.as_(editor))
    assert made.status_code == 200, made.text
    assert (
        server.client.get("/api/v1/schedules", headers=server.as_(viewer)).json()[0]["name"]
        == "weekly"
    )
    refused = server.client.post(
        "/api/v1/schedules/default/weekly/pause", headers=server.as_(viewer)
    )
    assert refused.status_code == 403
    other = server.token("other", "admin")
    hidden = server.client.get("/api/v1/schedules/default/weekly", headers=server.as_(other))
    assert hidden.status_code == 404
    unknown = server.client.put(
        "/api/v1/schedules", json={**body, "pipeline": "nope"}, headers=server.as_(editor)
    )
    assert unknown.status_code == 404
    audit = server.ctx.platform.list_audit(limit=50)
    actions = [(e.action, e.outcome) for e in audit]
    assert ("schedule.put", "ok") in actions
    assert ("schedule.pause", "denied") in actions
