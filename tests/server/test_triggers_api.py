"""Triggers through the API and the CLI against a real server: a promotion through the API fires
an alias trigger once; through `usina server` and the CLI, a file landing under a prefix runs
`demo`, whose success runs `slow` (a chain of an objects and a run-succeeded trigger), each run
carrying its cause; a viewer may read but not change triggers, and every change is audited."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tests.server.conftest import CLI, cli_env


def test_a_promotion_through_the_api_fires_an_alias_trigger_once(make_server, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model("fraud", tags={"usina.project": "default"})
    for _ in range(2):
        mlflow.create_model_version("fraud", source=str(tmp_path))
    mlflow.set_registered_model_alias("fraud", "champion", "1")
    srv = make_server(reconcile=False, registry_uri=uri)
    editor = srv.as_(srv.token("default", "editor"))
    viewer = srv.as_(srv.token("default", "viewer"))
    body = {"name": "redeploy", "pipeline": "demo", "kind": "alias", "params": {"n": 3},
            "spec": {"model": "fraud", "alias": "champion"}}  # fmt: skip
    assert srv.client.post("/api/v1/triggers", json=body, headers=viewer).status_code == 403
    made = srv.client.post("/api/v1/triggers", json=body, headers=editor)
    assert made.status_code == 201, made.text
    assert made.json()["watching"] == "alias fraud@champion moves"
    again = srv.client.post("/api/v1/triggers", json=body, headers=editor)
    assert again.status_code == 409
    assert "triggers delete redeploy" in again.json()["detail"]
    assert srv.ctx.watcher.run_once() == []  # champion -> 1 is the baseline
    moved = srv.client.put(
        "/api/v1/models/fraud/aliases/champion", json={"version": "2"}, headers=editor
    )
    assert moved.status_code == 200, moved.text
    (run_id,) = srv.ctx.watcher.run_once()
    assert srv.ctx.watcher.run_once() == []
    run = srv.client.get(f"/api/v1/runs/{run_id}", headers=viewer).json()
    assert run["labels"] == {"trigger": "redeploy", "trigger-cause": "fraud@champion=2"}
    assert run["params"]["n"] == 3
    events = srv.client.get(f"/api/v1/runs/{run_id}/events", headers=viewer).json()
    assert [e["message"] for e in events if e["kind"] == "run_triggered"] == [
        "trigger redeploy (alias): fraud@champion=2"
    ]
    shown = srv.client.get("/api/v1/triggers/default/redeploy", headers=viewer).json()
    assert [(f["cause"], f["run_id"]) for f in shown["firings"]] == [("fraud@champion=2", run_id)]
    loop = {**body, "name": "loop", "kind": "run-succeeded", "spec": {"pipeline": "demo"}}
    refused = srv.client.post("/api/v1/triggers", json=loop, headers=editor)
    assert refused.status_code == 400
    assert "would loop" in refused.json()["detail"]
    other = srv.as_(srv.token("other", "admin"))
    assert srv.client.get("/api/v1/triggers/default/redeploy", headers=other).status_code == 404
    assert srv.client.delete("/api/v1/triggers/default/redeploy", headers=viewer).status_code == 403
    assert srv.client.delete("/api/v1/triggers/default/redeploy", headers=editor).status_code == 204
    actions = [(e.action, e.outcome) for e in srv.ctx.platform.list_audit(limit=50)]
    assert ("trigger.create", "ok") in actions
    assert ("trigger.create", "denied") in actions
    assert ("trigger.delete", "ok") in actions


def test_objects_and_run_succeeded_triggers_through_the_cli(http_server, tmp_path_factory):
    url, token, client, home = http_server
    here = tmp_path_factory.mktemp("laptop")
    landing = tmp_path_factory.mktemp("landing")
    (landing / "old.csv").write_text("a\n")
    env = {**cli_env(here), "USINA_SERVER": url, "USINA_TOKEN": token}

    def usina(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*CLI, *args], env=env, cwd=here, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == code, done.stdout + done.stderr
        return done

    made = json.loads(
        usina("triggers", "create", "landed", "--pipeline", "demo", "--prefix", str(landing),
              "-p", "n=4", "--output", "json").stdout
    )  # fmt: skip
    assert made["kind"] == "objects"
    assert made["cause_params"] == ["object_path", "object_version"]
    usina("triggers", "create", "after-demo", "--pipeline", "slow", "--after", "demo",
          "-p", "seconds=0.1")  # fmt: skip
    both = usina("triggers", "create", "x", "--pipeline", "demo", "--after", "slow",
                 "--prefix", str(landing), code=2)  # fmt: skip
    assert "once" in both.stdout + both.stderr
    listed = json.loads(usina("triggers", "ls", "--output", "json").stdout)
    assert sorted(t["name"] for t in listed) == ["after-demo", "landed"]

    (landing / "new.csv").write_text("a\n1\n")
    runs: list[dict[str, Any]] = []
    for _ in range(240):  # the watcher polls every 10 s; the chain takes two polls and two runs
        runs = [r for r in client.get("/api/v1/runs").json()["items"]
                if r.get("labels", {}).get("trigger")]  # fmt: skip
        if len(runs) == 2 and all(r["state"] == "succeeded" for r in runs):
            break
        time.sleep(0.5)
    by = {r["labels"]["trigger"]: r for r in runs}
    assert set(by) == {"landed", "after-demo"}, runs
    assert by["landed"]["labels"]["trigger-cause"].startswith(str(landing / "new.csv") + "@")
    assert by["after-demo"]["labels"]["trigger-cause"] == by["landed"]["id"]
    assert all(r["state"] == "succeeded" for r in runs), runs
    detail = usina("runs", "show", by["after-demo"]["id"]).stdout
    assert f"triggered by after-demo: {by['landed']['id']}" in detail
    shown = usina("triggers", "show", "landed").stdout
    assert by["landed"]["id"] in shown
    assert "started" in shown
    paused = json.loads(usina("triggers", "pause", "landed", "--output", "json").stdout)
    assert paused["paused"] is True
    usina("triggers", "delete", "landed")
    usina("triggers", "delete", "after-demo")
    assert json.loads(usina("triggers", "ls", "--output", "json").stdout) == []
