"""Denials in the audit log and token expiry (issue #14, finding 6): unknown, revoked and
expired tokens, reads of another project's run, cookie-only writes and failed UI logins are
recorded with the token's id (never the token) and the client's address, rate-limited; tokens
expire (``--expires``, a server default) and listings show when."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.server.conftest import Server
from usina.cli.tokens import tokens_app
from usina.server.denials import ACTION, DenialLog
from usina.stores.platform import Role


def _denials(server: Server) -> list[dict[str, Any]]:
    return [
        {**e.detail, "actor": e.actor, "project": e.project, "target": e.target}
        for e in server.ctx.platform.list_audit(limit=1000)
        if e.action == ACTION and e.outcome == "denied"
    ]


def _no_secret(server: Server, *tokens: str) -> None:
    text = json.dumps(
        [(e.actor, e.target, e.detail) for e in server.ctx.platform.list_audit(limit=1000)]
    )
    for token in tokens:
        secret = token.rsplit("_", 1)[1]
        assert secret not in text


def test_refused_tokens_are_recorded_with_their_id(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    c = server.client
    unknown = "usn_nosuchid_secretsecretsecret"
    assert c.get("/api/v1/runs", headers=server.as_(unknown)).status_code == 401

    revoked = server.token("default", "viewer")
    revoked_id = revoked.split("_")[1]
    server.ctx.platform.revoke_token(revoked_id)
    server.ctx.tokens.clear()
    assert c.get("/api/v1/runs", headers=server.as_(revoked)).status_code == 401

    expired, info = server.ctx.platform.create_token(
        "short", {"default": Role.VIEWER}, expires_at=time.time() + 0.5
    )
    assert c.get("/api/v1/runs", headers=server.as_(expired)).status_code == 200
    time.sleep(0.6)
    server.ctx.tokens.clear()
    reply = c.get("/api/v1/runs", headers=server.as_(expired))
    assert reply.status_code == 401
    assert "expired" in reply.json()["detail"]

    kinds = {d["kind"]: d for d in _denials(server)}
    assert kinds["token_unknown"]["token_id"] == "nosuchid"
    assert kinds["token_revoked"]["token_id"] == revoked_id
    assert kinds["token_expired"]["token_id"] == info.id
    assert all(d["client"] == "testclient" for d in kinds.values())
    _no_secret(server, unknown, revoked, expired)


def test_other_projects_runs_cookie_writes_and_failed_logins_are_recorded(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(reconcile=False)
    c = server.client
    editor = server.token("alpha", "editor")
    outsider = server.token("beta", "admin")
    run = c.post(
        "/api/v1/runs",
        json={"pipeline": "demo", "project": "alpha"},
        headers=server.as_(editor),
    ).json()
    missing = c.get("/api/v1/runs/no-such-run", headers=server.as_(outsider))
    hidden = c.get(f"/api/v1/runs/{run['id']}", headers=server.as_(outsider))
    assert hidden.status_code == missing.status_code == 404
    assert c.get(f"/api/v1/runs/{run['id']}/events", headers=server.as_(outsider)).status_code == (
        404
    )

    c.cookies.set("usina_token", editor)
    assert c.post(f"/api/v1/runs/{run['id']}/cancel").status_code == 401
    c.cookies.clear()

    bad = "usn_abc123_wrongsecret"
    assert c.post("/ui/login", data={"token": bad, "next": "/ui/runs"}).status_code == 401

    found = _denials(server)
    other = [d for d in found if d["kind"] == "other_project"]
    assert len(other) == 2
    assert other[0]["project"] == "alpha"
    assert other[0]["target"] == run["id"]
    assert other[0]["token_id"] == outsider.split("_")[1]
    cookie = next(d for d in found if d["kind"] == "cookie_write")
    assert cookie["token_id"] == editor.split("_")[1]
    login = next(d for d in found if d["kind"] == "ui_login")
    assert login["token_id"] == "abc123"
    assert login["verdict"] == "unknown"
    assert all(d["client"] == "testclient" for d in found)
    _no_secret(server, editor, outsider, bad)
    # A missing run is not a denial: nothing was hidden.
    assert not any(d["target"] == "no-such-run" for d in found)


def test_denials_are_rate_limited_per_client(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    for _ in range(80):
        server.client.get("/api/v1/runs", headers=server.as_("usn_flood_xxxxxxxx"))
    assert len(_denials(server)) == 30  # GuardSettings.audit_denials_per_minute


def test_denial_log_counts_what_it_left_out() -> None:
    now = [0.0]
    written: list[dict[str, Any]] = []

    class Platform:
        def audit(self, actor: str, action: str, **kw: Any) -> None:
            written.append(kw["detail"])

    class Ctx:
        platform = Platform()

    log = DenialLog(2, clock=lambda: now[0])
    results = [log.record(Ctx(), "k", client="a", token_id=None) for _ in range(5)]  # type: ignore[arg-type]
    assert results == [True, True, False, False, False]
    assert log.record(Ctx(), "k", client="b", token_id=None)  # type: ignore[arg-type]
    now[0] = 61.0
    assert log.record(Ctx(), "k", client="a", token_id=None)  # type: ignore[arg-type]
    assert written[-1]["suppressed"] == 3
    assert "suppressed" not in written[0]


def test_tokens_expire_by_default_and_on_request(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    admin = server.as_(server.token("*", "admin"))
    c = server.client
    day = 86400.0
    body = {"name": "n", "project": "default", "role": "viewer"}
    default = c.post("/api/v1/tokens", json=body, headers=admin).json()
    assert abs(default["expires_at"] - (time.time() + 90 * day)) < 60
    month = c.post("/api/v1/tokens", json={**body, "expires": "30d"}, headers=admin).json()
    assert abs(month["expires_at"] - (time.time() + 30 * day)) < 60
    forever = c.post("/api/v1/tokens", json={**body, "expires": "never"}, headers=admin).json()
    assert forever["expires_at"] is None
    bad = c.post("/api/v1/tokens", json={**body, "expires": "soon"}, headers=admin)
    assert bad.status_code == 422
    assert "30d" in bad.json()["detail"]
    listed = {t["id"]: t for t in c.get("/api/v1/tokens", headers=admin).json()}
    assert listed[month["id"]]["expires_at"] == month["expires_at"]


def test_cli_token_create_expires_and_ls_shows_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/usina.db"
    runner = CliRunner()
    made = runner.invoke(
        tokens_app,
        ["create", "--project", "p", "--role", "viewer", "--expires", "30d", "--database-url", url],
    )
    assert made.exit_code == 0, made.output
    assert made.output.startswith("usn_")
    forever = runner.invoke(
        tokens_app,
        [
            "create",
            "--project",
            "p",
            "--role",
            "viewer",
            "--expires",
            "never",
            "--database-url",
            url,
        ],
    )
    assert forever.exit_code == 0, forever.output
    bad = runner.invoke(
        tokens_app,
        [
            "create",
            "--project",
            "p",
            "--role",
            "viewer",
            "--expires",
            "soon",
            "--database-url",
            url,
        ],
    )
    assert bad.exit_code != 0
    listed = runner.invoke(tokens_app, ["ls", "--database-url", url], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "expires" in listed.output
    soon = time.strftime("%Y-%m-%d", time.localtime(time.time() + 30 * 86400))
    assert soon in listed.output
    assert "never" in listed.output
