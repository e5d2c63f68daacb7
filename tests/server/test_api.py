"""The REST API with its reconciler, in this process on SQLite: runs list pagination, a
failed-then-retried step's attempts and logs, streamed logs, lineage, metrics, cancel and
resume, serving endpoints' health and the MLflow model registry."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.server.conftest import free_port
from usina.server.guards import GuardSettings


@pytest.fixture
def server(make_server):
    return make_server()


def test_runs_list_pages_newest_first_without_gaps(make_server):
    srv = make_server(reconcile=False)
    editor = srv.as_(srv.token("default", "editor"))
    made = [
        srv.client.post("/api/v1/runs", json={"pipeline": "demo"}, headers=editor).json()["id"]
        for _ in range(7)
    ]
    seen, cursor = [], None
    while True:
        page = srv.client.get(
            "/api/v1/runs",
            params={"limit": 3, **({"cursor": cursor} if cursor else {})},
            headers=editor,
        ).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    assert srv.client.get("/api/v1/runs?cursor=nonsense", headers=editor).status_code == 400
    pending = srv.client.get("/api/v1/runs?state=pending", headers=editor).json()["items"]
    assert len(pending) == 7
    assert pending[0]["step_states"] == {"pending": 3}
    assert srv.client.get("/api/v1/runs?state=running", headers=editor).json()["items"] == []


def test_a_retried_step_its_attempts_logs_lineage_and_metrics(server):
    editor = server.token("default", "editor")
    h = server.as_(editor)
    marker = str(server.home / "marker")
    res = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "params": {"n": 5, "marker": marker}}, headers=h
    )
    assert res.status_code == 201, res.text
    run_id = res.json()["id"]
    run = server.wait_finished(editor, run_id)
    assert run["state"] == "succeeded"
    assert {s["node"]: s["attempts"] for s in run["steps"]} == {"load": 1, "train": 2, "report": 1}

    attempts = server.client.get(f"/api/v1/runs/{run_id}/attempts?step=train", headers=h).json()
    assert [(a["number"], a["state"], a["failure_class"]) for a in attempts] == [
        (1, "failed", "user_error"),
        (2, "succeeded", None),
    ]
    assert "feature store timed out" in attempts[0]["message"]
    assert "usina runs resume" in attempts[0]["advice"]
    log = server.client.get(f"/api/v1/runs/{run_id}/steps/train/logs?attempt=1", headers=h)
    assert log.headers["content-type"].startswith("text/plain")
    assert "training on 5 rows" in log.text
    assert "RuntimeError" in log.text
    tail = server.client.get(f"/api/v1/runs/{run_id}/steps/train/logs?tail=1", headers=h).text
    assert tail == "training on 5 rows"

    lineage = server.client.get(f"/api/v1/runs/{run_id}/lineage", headers=h).json()
    by_node = {item["producer"]["node"]: item for item in lineage}
    assert by_node["load"]["consumers"] == [{"node": "train", "input": "rows", "key": None}]
    assert by_node["train"]["consumers"] == [{"node": "report", "input": "score", "key": None}]
    assert by_node["report"]["consumers"] == []
    assert all(
        item["stored"] and item["artifact"]["digest"].startswith("sha256:") for item in lineage
    )

    metrics = server.client.get("/api/v1/pipelines/demo/metrics", headers=h).json()
    assert metrics == [
        {
            "run_id": run_id,
            "created_at": run["created_at"],
            "step": "train",
            "metrics": {"auc": 0.505},
        }
    ]
    kinds = [
        e["kind"] for e in server.client.get(f"/api/v1/runs/{run_id}/events", headers=h).json()
    ]
    assert kinds[0] == "run_submitted"
    assert "step_retry" in kinds
    assert kinds[-1] == "run_succeeded"
    pipes = {p["name"]: p for p in server.client.get("/api/v1/pipelines", headers=h).json()}
    assert pipes["demo"]["steps"] == ["load", "train", "report"]
    assert {p["name"] for p in pipes["demo"]["params"]} == {"n", "marker"}
    bad = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "params": {"n": "many"}}, headers=h
    )
    assert bad.status_code == 400
    assert "expects int" in bad.json()["detail"]
    assert (
        server.client.post("/api/v1/runs", json={"pipeline": "nope"}, headers=h).status_code == 404
    )


def test_logs_stream_while_running_and_cancel_and_resume(server):
    editor = server.token("default", "editor")
    h = server.as_(editor)
    quick = server.client.post(
        "/api/v1/runs", json={"pipeline": "slow", "params": {"seconds": 1.5}}, headers=h
    ).json()["id"]
    for _ in range(100):
        attempts = server.client.get(f"/api/v1/runs/{quick}/attempts", headers=h).json()
        if attempts:
            break
        threading.Event().wait(0.1)
    with server.client.stream(
        "GET", f"/api/v1/runs/{quick}/steps/sleepy/logs?follow=true", headers=h
    ) as streamed:
        body = b"".join(streamed.iter_bytes())
    assert b"sleeping" in body
    assert server.wait_finished(editor, quick)["state"] == "succeeded"

    slow = server.client.post("/api/v1/runs", json={"pipeline": "slow"}, headers=h).json()["id"]
    assert server.client.post(f"/api/v1/runs/{slow}/resume", headers=h).status_code == 409
    assert server.client.post(f"/api/v1/runs/{slow}/cancel", headers=h).status_code == 200
    done = server.wait_finished(editor, slow)
    assert done["state"] == "cancelled"

    failing = server.client.post("/api/v1/runs", json={"pipeline": "failing"}, headers=h).json()
    assert server.wait_finished(editor, failing["id"])["state"] == "failed"
    again = server.client.post(f"/api/v1/runs/{failing['id']}/resume", headers=h)
    assert again.status_code == 200
    assert server.wait_finished(editor, failing["id"])["state"] == "failed"
    attempts = server.client.get(f"/api/v1/runs/{failing['id']}/attempts", headers=h).json()
    assert [a["number"] for a in attempts] == [1, 2]


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_serving_endpoints_report_their_health(make_server):
    srv = make_server(reconcile=False)
    # The inference servers here are on loopback, which the default probe policy refuses
    # (tests/server/test_probe_policy.py): allow it for this test.
    srv.app.state.guards = GuardSettings(probe_allow_private=True)
    admin = srv.as_(srv.token("default", "admin"))
    editor = srv.as_(srv.token("default", "editor"))
    httpd = HTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        up = f"http://127.0.0.1:{httpd.server_port}"
        down = f"http://127.0.0.1:{free_port()}"
        denied = srv.client.put("/api/v1/endpoints/fraud", json={"url": up}, headers=editor)
        assert denied.status_code == 403
        assert (
            srv.client.put("/api/v1/endpoints/fraud", json={"url": up}, headers=admin).status_code
            == 200
        )
        assert (
            srv.client.put("/api/v1/endpoints/risk", json={"url": down}, headers=admin).status_code
            == 200
        )
        found = {e["name"]: e for e in srv.client.get("/api/v1/endpoints", headers=editor).json()}
        assert found["fraud"]["ready"] is True
        assert found["risk"]["ready"] is False
        assert srv.client.delete("/api/v1/endpoints/risk", headers=admin).status_code == 204
        assert [
            e["name"]
            for e in srv.client.get("/api/v1/endpoints?check=false", headers=editor).json()
        ] == ["fraud"]
    finally:
        httpd.shutdown()
        httpd.server_close()


# MLflow's own SQL store uses SQLAlchemy APIs that SQLAlchemy 2.1 deprecates.
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")
def test_models_are_read_and_promoted_in_the_mlflow_registry(make_server, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model("fraud", tags={"usina.project": "default"})
    for _ in range(2):
        mlflow.create_model_version("fraud", source=str(tmp_path))
    mlflow.set_registered_model_alias("fraud", "champion", "1")

    srv = make_server(reconcile=False, registry_uri=uri)
    viewer = srv.as_(srv.token("default", "viewer"))
    editor = srv.as_(srv.token("default", "editor", name="carla"))
    other = srv.as_(srv.token("elsewhere", "admin"))
    models = srv.client.get("/api/v1/models", headers=viewer).json()
    assert [m["name"] for m in models] == ["fraud"]
    assert models[0]["aliases"] == {"champion": "1"}
    assert [v["version"] for v in models[0]["versions"]] == ["2", "1"]
    assert srv.client.get("/api/v1/models", headers=other).json() == []
    assert srv.client.get("/api/v1/models/fraud", headers=other).status_code == 404

    body = {"version": "2"}
    assert (
        srv.client.put(
            "/api/v1/models/fraud/aliases/champion", json=body, headers=viewer
        ).status_code
        == 403
    )
    moved = srv.client.put("/api/v1/models/fraud/aliases/champion", json=body, headers=editor)
    assert moved.status_code == 200, moved.text
    assert moved.json()["aliases"] == {"champion": "2"}
    assert str(mlflow.get_model_version_by_alias("fraud", "champion").version) == "2"
    missing = srv.client.put(
        "/api/v1/models/fraud/aliases/champion", json={"version": "9"}, headers=editor
    )
    assert missing.status_code == 404
    admin = srv.as_(srv.token("default", "admin"))
    audit = srv.client.get("/api/v1/audit", headers=admin).json()
    promoted = [e for e in audit if e["action"] == "model.promote" and e["outcome"] == "ok"]
    assert promoted[0]["actor"].startswith("carla")
    assert promoted[0]["detail"] == {"alias": "champion", "version": "2"}


def test_metrics_endpoint_reports_pipeline_runs_and_attempts(server):
    editor = server.token("default", "editor")
    h = server.as_(editor)
    marker = str(server.home / "marker")
    res = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "params": {"n": 3, "marker": marker}}, headers=h
    )
    run = server.wait_finished(editor, res.json()["id"])
    assert run["state"] == "succeeded"
    text = server.client.get("/metrics/").text  # no token: Prometheus scrapes it
    assert "usina_pipeline_metrics_up 1.0" in text
    runs = 'usina_pipeline_runs_total{outcome="succeeded",pipeline="demo",team="default"} 1.0'
    assert runs in text
    assert (
        'usina_attempts_total{failure_class="user_error",outcome="failed",pipeline="demo",'
        'team="default"} 1.0'
    ) in text


def test_a_cancel_or_resume_wakes_this_replicas_reconciler(make_server, monkeypatch):
    """With a backend that reports its changes (Kubernetes), a replica reconciles only changed
    runs: a cancel or a resume written through the API must wake it, not wait for its
    resync."""
    srv = make_server()
    woken: list[str] = []
    wake = srv.ctx.reconciler.wake
    monkeypatch.setattr(srv.ctx.reconciler, "wake", lambda run: (woken.append(run), wake(run)))
    editor = srv.token("default", "editor")
    h = srv.as_(editor)
    run = srv.client.post("/api/v1/runs", json={"pipeline": "slow"}, headers=h).json()["id"]
    assert srv.client.post(f"/api/v1/runs/{run}/cancel", headers=h).status_code == 200
    assert woken == [run]
    assert srv.wait_finished(editor, run)["state"] == "cancelled"
    assert srv.client.post(f"/api/v1/runs/{run}/resume", headers=h).status_code == 200
    assert woken == [run, run]
