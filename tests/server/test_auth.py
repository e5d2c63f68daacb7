"""Auth on real PostgreSQL: tokens are needed, roles are checked on every route, projects
are kept apart, tokens are stored hashed, and the audit log says who did what."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from usina.stores.sql import normalize_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def server(make_server, postgres_server):
    srv = make_server(postgres_server.create_database(), reconcile=False)
    srv.url = srv.ctx.settings.database_url
    return srv


def test_every_api_route_needs_a_token(server):
    paths = [
        path.replace("{run_id}", "r1").replace("{step}", "s").replace("{name}", "n")
        for path in server.app.openapi()["paths"]
    ]
    assert len(paths) > 15
    for path in paths:
        path = path.replace("{alias}", "champion").replace("{token_id}", "t1")
        for method in ("GET", "POST", "PUT", "DELETE"):
            res = server.client.request(method, path)
            assert res.status_code in (401, 405), (method, path, res.status_code)
    assert server.client.get("/api/v1/runs").headers["www-authenticate"] == "Bearer"
    bad = server.client.get("/api/v1/runs", headers=server.as_("usn_nope_secret"))
    assert bad.status_code == 401


def test_a_viewer_can_read_but_not_submit_or_cancel(server):
    editor = server.token("fraud", "editor")
    viewer = server.token("fraud", "viewer")
    run = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "project": "fraud"}, headers=server.as_(editor)
    )
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]

    assert (
        server.client.get(f"/api/v1/runs/{run_id}", headers=server.as_(viewer)).status_code == 200
    )
    submit = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "project": "fraud"}, headers=server.as_(viewer)
    )
    assert submit.status_code == 403
    assert "editor" in submit.json()["detail"]
    cancel = server.client.post(f"/api/v1/runs/{run_id}/cancel", headers=server.as_(viewer))
    assert cancel.status_code == 403
    resume = server.client.post(f"/api/v1/runs/{run_id}/resume", headers=server.as_(viewer))
    assert resume.status_code == 403
    assert server.client.get("/api/v1/audit", headers=server.as_(viewer)).status_code == 403
    tok = server.client.post(
        "/api/v1/tokens",
        json={"name": "x", "project": "fraud", "role": "admin"},
        headers=server.as_(viewer),
    )
    assert tok.status_code == 403
    # The cancel the viewer could not do, the editor can.
    ok = server.client.post(f"/api/v1/runs/{run_id}/cancel", headers=server.as_(editor))
    assert ok.status_code == 200
    assert ok.json()["cancel_requested"] is True


def test_a_token_of_project_a_cannot_see_project_b(server):
    a = server.token("alpha", "editor")
    b = server.token("beta", "editor")
    in_b = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "project": "beta"}, headers=server.as_(b)
    ).json()["id"]
    in_a = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "project": "alpha"}, headers=server.as_(a)
    ).json()["id"]

    listed = server.client.get("/api/v1/runs", headers=server.as_(a)).json()
    assert [r["id"] for r in listed["items"]] == [in_a]
    only_b = server.client.get("/api/v1/runs?project=beta", headers=server.as_(a)).json()
    assert only_b["items"] == []
    for path in ("", "/attempts", "/events", "/lineage"):
        assert (
            server.client.get(f"/api/v1/runs/{in_b}{path}", headers=server.as_(a)).status_code
            == 404
        )
    assert (
        server.client.post(f"/api/v1/runs/{in_b}/cancel", headers=server.as_(a)).status_code == 404
    )
    submit_b = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "project": "beta"}, headers=server.as_(a)
    )
    assert submit_b.status_code == 403
    # A token with a role in every project sees both.
    everyone = server.token("*", "viewer")
    both = server.client.get("/api/v1/runs", headers=server.as_(everyone)).json()
    assert {r["id"] for r in both["items"]} == {in_a, in_b}


def test_tokens_are_stored_hashed_and_can_be_revoked(server):
    admin = server.token("fraud", "admin", name="ops")
    made = server.client.post(
        "/api/v1/tokens",
        json={"name": "ci", "project": "fraud", "role": "viewer"},
        headers=server.as_(admin),
    )
    assert made.status_code == 201
    token = made.json()["token"]
    assert server.client.get("/api/v1/me", headers=server.as_(token)).json()["roles"] == {
        "fraud": "viewer"
    }
    engine = sa.create_engine(normalize_url(server.url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM api_tokens")).mappings().all()
            dump = repr([dict(r) for r in rows])
    finally:
        engine.dispose()
    assert len(rows) == 2
    for secret in (admin, token):
        assert secret not in dump
        assert secret.split("_")[-1] not in dump
    assert all(len(r["token_hash"]) == 64 for r in rows)
    listed = server.client.get("/api/v1/tokens", headers=server.as_(admin)).json()
    assert {t["name"] for t in listed} == {"ops", "ci"}
    assert all("token" not in t for t in listed)

    revoked = server.client.delete(f"/api/v1/tokens/{made.json()['id']}", headers=server.as_(admin))
    assert revoked.status_code == 200
    assert server.client.get("/api/v1/me", headers=server.as_(token)).status_code == 401


def test_the_audit_log_records_who_did_what(server):
    admin = server.token("fraud", "admin", name="alice")
    viewer = server.token("fraud", "viewer", name="bob")
    run_id = server.client.post(
        "/api/v1/runs",
        json={"pipeline": "demo", "project": "fraud", "params": {"n": 3}},
        headers=server.as_(admin),
    ).json()["id"]
    server.client.post(f"/api/v1/runs/{run_id}/cancel", headers=server.as_(viewer))
    server.client.post(f"/api/v1/runs/{run_id}/cancel", headers=server.as_(admin))

    log = server.client.get("/api/v1/audit?project=fraud", headers=server.as_(admin)).json()
    entries = [(e["actor"].split(" ")[0], e["action"], e["target"], e["outcome"]) for e in log]
    assert entries[:3] == [
        ("alice", "run.cancel", run_id, "ok"),
        ("bob", "run.cancel", run_id, "denied"),
        ("alice", "run.submit", run_id, "ok"),
    ]
    assert all(e["at"] > 0 and e["project"] == "fraud" for e in log)
    assert log[2]["detail"] == {"pipeline": "demo"}
