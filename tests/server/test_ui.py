"""The web UI without a browser (issue #18): the API docs served from the package (no CDN),
``/ui`` answering, a failed run's headline, times with their zone, model → run links, run
comparison, and actions (cancel, resume, rerun) protected by a CSRF token and audited when
refused."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Server
from usina.server.denials import ACTION

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def test_api_docs_are_served_from_the_package(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    page = server.client.get("/docs")
    assert page.status_code == 200
    assert "swagger-ui" in page.text
    assert not EXTERNAL.search(page.text), EXTERNAL.search(page.text)
    assert "://" not in page.text
    assert 'validatorUrl": null' in page.text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    for asset in assets:
        fetched = server.client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 100, asset
    assert server.client.get("/openapi.json").status_code == 200
    # No second docs page from a CDN either.
    assert server.client.get("/redoc").status_code == 404


def test_api_docs_without_their_assets_name_the_install_line(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)
    server = make_server(reconcile=False)
    page = server.client.get("/docs")
    assert page.status_code == 503
    assert "pip install 'usina[server]'" in page.json()["detail"]


def test_ui_root_leads_to_the_runs(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    c = server.client
    for path in ("/ui", "/ui/"):
        reply = c.get(path, follow_redirects=False)
        assert reply.status_code == 303, path
        assert reply.headers["location"] == "/ui/runs"
        assert c.get(path).status_code == 200  # the sign-in page, then
    c.post("/ui/login", data={"token": server.token("default", "viewer"), "next": "/ui/runs"})
    page = c.get("/ui")
    assert page.status_code == 200
    assert str(page.url).endswith("/ui/runs")


def _signed_in(server: Server, role: str = "viewer") -> str:
    token = server.token("default", role)
    reply = server.client.post("/ui/login", data={"token": token, "next": "/ui/runs"})
    assert reply.status_code == 200
    return token


def _section(page: str, marker: str) -> str:
    found = re.search(rf"<section[^>]*{marker}[^>]*>(.*?)</section>", page, re.DOTALL)
    assert found, f"no section {marker}"
    return found.group(1)


def test_a_failed_runs_page_opens_with_the_failure(make_server: Callable[..., Server]) -> None:
    server = make_server()
    editor = server.token("default", "editor")
    run_id = server.client.post(
        "/api/v1/runs", json={"pipeline": "failing"}, headers=server.as_(editor)
    ).json()["id"]
    assert server.wait_finished(editor, run_id)["state"] == "failed"
    _signed_in(server)
    page = server.client.get(f"/ui/runs/{run_id}").text
    headline = _section(page, 'id="headline"')
    assert "broken" in headline
    assert "user_error" in headline
    assert "ValueError: negative amount in row 2" in headline
    assert f"usina runs resume {run_id}" in headline  # the advice
    # Only the first lines of the evidence, not the whole traceback.
    assert headline.count("File &#34;") + headline.count('File "') <= 1
    links = re.findall(r'href="([^"]+)"', headline)
    assert f"#attempt-{run_id}-broken-1" in links
    assert f"/api/v1/runs/{run_id}/steps/broken/logs?attempt=1" in [
        link.replace("&amp;", "&") for link in links
    ]
    assert f'id="attempt-{run_id}-broken-1"' in page
    assert (
        server.client.get(f"/api/v1/runs/{run_id}/steps/broken/logs?attempt=1").status_code == 200
    )
    pt = server.client.get(f"/ui/runs/{run_id}?lang=pt-BR").text
    assert "A etapa <b>broken</b> falhou" in _section(pt, 'id="headline"')


def test_a_succeeded_run_has_no_failure_headline(make_server: Callable[..., Server]) -> None:
    server = make_server()
    editor = server.token("default", "editor")
    run_id = server.client.post(
        "/api/v1/runs", json={"pipeline": "demo", "params": {"n": 3}}, headers=server.as_(editor)
    ).json()["id"]
    assert server.wait_finished(editor, run_id)["state"] == "succeeded"
    _signed_in(server)
    page = server.client.get(f"/ui/runs/{run_id}").text
    assert 'id="headline"' not in page


def test_every_ui_word_has_both_languages() -> None:
    from pathlib import Path

    from usina.server import i18n

    assert set(i18n.MESSAGES) == set(i18n.LANGS)
    en, pt = i18n.MESSAGES["en"], i18n.MESSAGES["pt-BR"]
    assert set(en) == set(pt), set(en) ^ set(pt)
    assert all(v.strip() for v in (*en.values(), *pt.values()))
    templates = Path(i18n.__file__).with_name("templates")
    used: set[str] = set()
    for page in templates.glob("*.html"):
        text = page.read_text()
        used |= set(re.findall(r"\bt\.([a-z_]+)", text))
        used |= set(re.findall(r"""\bt\[['"]([a-z_.]+)['"]\]""", text))
    assert used, "no words found in the templates"
    assert used <= set(en), used - set(en)


TIME = re.compile(r'<time datetime="([^"]+)" title="([^"]+)">([^<]+)</time>')
STAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def test_times_carry_utc_for_the_browser_to_show_in_its_zone(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    editor = server.token("default", "editor")
    run_id = server.client.post(
        "/api/v1/runs", json={"pipeline": "failing"}, headers=server.as_(editor)
    ).json()["id"]
    run = server.wait_finished(editor, run_id)
    _signed_in(server)
    expected = datetime.fromtimestamp(run["created_at"], tz=UTC)
    for path in ("/ui/runs", f"/ui/runs/{run_id}"):
        page = server.client.get(path).text
        times = TIME.findall(page)
        assert times, path
        for iso, title, shown in times:
            at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
            assert at.utcoffset() == timedelta(0)
            assert title == at.strftime("%Y-%m-%d %H:%M:%S UTC")
            assert shown == title  # until the script puts it in the viewer's zone
        assert expected.strftime("%Y-%m-%dT%H:%M:%SZ") in [iso for iso, _, _ in times]
        # No time outside a <time> element (the script converts them all).
        assert not STAMP.search(TIME.sub("", page)), STAMP.search(TIME.sub("", page))
    script = server.client.get("/static/app.js").text
    assert "time[datetime]" in script


# MLflow's own SQL store uses SQLAlchemy APIs that SQLAlchemy 2.1 deprecates.
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")
def test_a_model_version_links_to_the_run_and_step_that_made_it(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model("fraud", tags={"usina.project": "default"})
    mlflow.create_model_version(
        "fraud", source=str(tmp_path), tags={"usina.run_id": "demo-1", "usina.step": "train"}
    )
    mlflow.create_model_version("fraud", source=str(tmp_path))  # registered by hand
    server = make_server(reconcile=False, registry_uri=uri)
    token = _signed_in(server)
    versions = server.client.get("/api/v1/models/fraud", headers=server.as_(token)).json()
    by_version = {v["version"]: v for v in versions["versions"]}
    assert by_version["1"]["usina_run_id"] == "demo-1"
    assert by_version["1"]["usina_step"] == "train"
    assert by_version["2"]["usina_run_id"] is None
    page = server.client.get("/ui/models").text
    rows = re.findall(r"<tr data-version=\"(\d+)\">(.*?)</tr>", page, re.DOTALL)
    assert dict(rows).keys() == {"1", "2"}
    assert 'href="/ui/runs/demo-1#step-train"' in dict(rows)["1"]
    assert "/ui/runs/" not in dict(rows)["2"]


def _rows(page: str, table: str) -> dict[str, list[str]]:
    found = re.search(rf'<table[^>]*id="{table}"[^>]*>(.*?)</table>', page, re.DOTALL)
    assert found, f"no table {table}"
    rows = {}
    for key, cells in re.findall(r'<tr data-key="([^"]+)"[^>]*>(.*?)</tr>', found.group(1), re.S):
        rows[key] = [
            re.sub(r"<[^>]+>", "", c).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)
        ]
    return rows


def test_two_runs_of_a_pipeline_side_by_side(make_server: Callable[..., Server]) -> None:
    server = make_server()
    editor = server.token("default", "editor")
    ids = []
    for n in (3, 5):
        ids.append(
            server.client.post(
                "/api/v1/runs",
                json={"pipeline": "demo", "params": {"n": n}},
                headers=server.as_(editor),
            ).json()["id"]
        )
    runs = [server.wait_finished(editor, i) for i in ids]
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"]
    _signed_in(server)
    chooser = server.client.get("/ui/pipelines/demo").text
    form = re.search(r'<form[^>]*action="/ui/compare"[^>]*>(.*?)</form>', chooser, re.S)
    assert form, "the pipeline page has no comparison form"
    for name in ("a", "b"):
        select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', form.group(1), re.S)
        assert select, name
        assert set(re.findall(r'<option value="([^"]+)"', select.group(1))) == set(ids)

    page = server.client.get(f"/ui/compare?a={ids[0]}&b={ids[1]}")
    assert page.status_code == 200
    params = _rows(page.text, "compare-params")
    assert params["n"] == ["n", "3", "5"]
    assert 'data-key="n" class="differs"' in page.text
    metrics = _rows(page.text, "compare-metrics")
    steps_of = {r: {s["node"]: s for s in run["steps"]} for r, run in zip(ids, runs, strict=True)}
    auc = [steps_of[r]["train"]["metrics"]["auc"] for r in ids]
    assert metrics["train.auc"][1:] == [str(v) for v in auc]
    steps = _rows(page.text, "compare-steps")
    assert set(steps) == {"load", "train", "report"}
    assert steps["train"][0] == "train"
    assert "succeeded" in steps["train"][1]
    assert "succeeded" in steps["train"][3]
    assert len(steps["train"]) == 5  # step, then (state, duration) per run
    assert all(
        re.fullmatch(r"[\d.]+s|\d+m\d\ds", c) for c in (steps["train"][2], steps["train"][4])
    )
    # A run the viewer cannot see is answered as missing.
    assert server.client.get(f"/ui/compare?a={ids[0]}&b=nope-1").status_code == 404


CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')


def _denials(server: Server, kind: str) -> list[dict[str, Any]]:
    return [
        {**e.detail, "target": e.target}
        for e in server.ctx.platform.list_audit(limit=1000)
        if e.action == ACTION and e.outcome == "denied" and e.detail.get("kind") == kind
    ]


def test_ui_actions_need_the_pages_csrf_token(make_server: Callable[..., Server]) -> None:
    server = make_server()
    c = server.client
    api = server.token("default", "editor", name="api")
    failed = c.post("/api/v1/runs", json={"pipeline": "failing"}, headers=server.as_(api))
    failed_id = failed.json()["id"]
    assert server.wait_finished(api, failed_id)["state"] == "failed"
    slow_id = c.post(
        "/api/v1/runs",
        json={"pipeline": "slow", "params": {"seconds": 60}},
        headers=server.as_(api),
    ).json()["id"]

    editor = _signed_in(server, "editor")
    page = c.get(f"/ui/runs/{slow_id}").text
    forms = dict(re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', page, re.S))
    assert f"/ui/runs/{slow_id}/cancel" in forms
    assert f"/ui/runs/{slow_id}/resume" not in forms  # not finished
    token = CSRF.search(forms[f"/ui/runs/{slow_id}/cancel"]).group(1)

    # Without the token, or with another one: refused, recorded, nothing done.
    for form in ({}, {"csrf": "0" * 64}):
        refused = c.post(f"/ui/runs/{slow_id}/cancel", data=form, follow_redirects=False)
        assert refused.status_code == 403
    assert (
        c.get(f"/api/v1/runs/{slow_id}", headers=server.as_(api)).json()["cancel_requested"]
        is False
    )
    denied = _denials(server, "csrf")
    assert len(denied) == 2
    assert denied[0]["target"] == f"/ui/runs/{slow_id}/cancel"
    assert denied[0]["token_id"] == editor.split("_")[1]
    # With it: done, and back to the run's page.
    done = c.post(f"/ui/runs/{slow_id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/runs/{slow_id}"
    assert server.wait_finished(api, slow_id)["state"] == "cancelled"

    page = c.get(f"/ui/runs/{failed_id}").text
    assert f'action="/ui/runs/{failed_id}/resume"' in page
    assert f'action="/ui/runs/{failed_id}/cancel"' not in page  # finished
    resumed = c.post(f"/ui/runs/{failed_id}/resume", data={"csrf": token}, follow_redirects=False)
    assert resumed.status_code == 303
    assert server.wait_finished(api, failed_id)["state"] == "failed"
    rerun = c.post(f"/ui/runs/{failed_id}/rerun", data={"csrf": token}, follow_redirects=False)
    assert rerun.status_code == 303
    new_id = rerun.headers["location"].rsplit("/", 1)[1]
    assert new_id != failed_id
    assert c.get(f"/api/v1/runs/{new_id}", headers=server.as_(api)).json()["pipeline"] == "failing"
    actions = {(e.action, e.target) for e in server.ctx.platform.list_audit(limit=1000)}
    assert {("run.cancel", slow_id), ("run.resume", failed_id), ("run.submit", new_id)} <= actions

    # A viewer sees no buttons, and a post with the viewer's own token is refused.
    _signed_in(server, "viewer")
    page = c.get(f"/ui/runs/{failed_id}").text
    assert "/resume" not in page
    assert "/rerun" not in page
    own = CSRF.search(page)
    assert own is not None  # the token is on every signed-in page (the sign-out form)
    assert own.group(1) != token
    refused = c.post(f"/ui/runs/{failed_id}/rerun", data={"csrf": own.group(1)})
    assert refused.status_code == 403
    assert "editor" in refused.text
    assert len(_denials(server, "csrf")) == 2  # a role refusal, not a CSRF one


def test_an_editor_submits_a_run_with_parameters_from_the_pipeline_page(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    c = server.client
    api = server.token("default", "editor", name="api")
    _signed_in(server, "editor")
    page = c.get("/ui/pipelines/demo").text
    form = re.search(
        r'<form method="post" action="/ui/pipelines/demo/submit"[^>]*>(.*?)</form>', page, re.S
    )
    assert form, "no submit form for an editor"
    fields = dict(re.findall(r'<input[^>]*name="(p\.[a-z_]+)"[^>]*value="([^"]*)"', form.group(1)))
    assert fields == {"p.n": "10", "p.marker": ""}  # the defaults
    token = CSRF.search(form.group(1)).group(1)
    assert c.post("/ui/pipelines/demo/submit", data={"p.n": "7"}).status_code == 403
    made = c.post(
        "/ui/pipelines/demo/submit",
        data={"csrf": token, "project": "default", "p.n": "7", "p.marker": ""},
        follow_redirects=False,
    )
    assert made.status_code == 303
    run_id = made.headers["location"].rsplit("/", 1)[1]
    run = server.wait_finished(api, run_id)
    assert run["params"]["n"] == 7
    assert run["state"] == "succeeded"
    bad = c.post("/ui/pipelines/demo/submit", data={"csrf": token, "p.n": "many"})
    assert bad.status_code == 400
    assert "expects int" in bad.text

    _signed_in(server, "viewer")
    assert "/ui/pipelines/demo/submit" not in c.get("/ui/pipelines/demo").text


# MLflow's own SQL store uses SQLAlchemy APIs that SQLAlchemy 2.1 deprecates.
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")
def test_an_editor_promotes_a_version_from_the_models_page(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.create_registered_model("fraud", tags={"usina.project": "default"})
    for _ in range(2):
        mlflow.create_model_version("fraud", source=str(tmp_path))
    mlflow.set_registered_model_alias("fraud", "champion", "1")
    server = make_server(reconcile=False, registry_uri=uri)
    c = server.client
    _signed_in(server, "editor")
    page = c.get("/ui/models").text
    rows = dict(re.findall(r"<tr data-version=\"(\d+)\">(.*?)</tr>", page, re.DOTALL))
    assert 'action="/ui/models/fraud/aliases/champion"' in rows["2"]
    assert "/aliases/champion" not in rows["1"]  # already the champion
    token = CSRF.search(rows["2"]).group(1)
    refused = c.post("/ui/models/fraud/aliases/champion", data={"version": "2"})
    assert refused.status_code == 403
    assert str(mlflow.get_model_version_by_alias("fraud", "champion").version) == "1"
    moved = c.post(
        "/ui/models/fraud/aliases/champion",
        data={"version": "2", "csrf": token},
        follow_redirects=False,
    )
    assert moved.status_code == 303
    assert moved.headers["location"] == "/ui/models"
    assert str(mlflow.get_model_version_by_alias("fraud", "champion").version) == "2"
    audit = [e for e in server.ctx.platform.list_audit(limit=100) if e.action == "model.promote"]
    assert [e.outcome for e in audit] == ["ok"]

    _signed_in(server, "viewer")
    assert "/aliases/champion" not in c.get("/ui/models").text


def test_the_endpoints_page_says_how_to_register_one(make_server: Callable[..., Server]) -> None:
    server = make_server(reconcile=False)
    _signed_in(server)
    for lang, words in (("en", "Register an endpoint"), ("pt-BR", "Registre um endpoint")):
        page = server.client.get(f"/ui/endpoints?lang={lang}").text
        hint = _section(page, 'id="how-to-register"')
        assert words in hint
        assert "curl -X PUT" in hint
        assert "/api/v1/endpoints/NAME" in hint
        assert "Content-Type: application/json" in hint
        assert "&#34;url&#34;" in hint or '"url"' in hint


def test_metric_charts_have_axes_and_run_ids(make_server: Callable[..., Server]) -> None:
    server = make_server()
    editor = server.token("default", "editor")
    ids = []
    for n in (100, 300):
        run_id = server.client.post(
            "/api/v1/runs",
            json={"pipeline": "demo", "params": {"n": n}},
            headers=server.as_(editor),
        ).json()["id"]
        assert server.wait_finished(editor, run_id)["state"] == "succeeded"
        ids.append(run_id)
    _signed_in(server)
    page = server.client.get("/ui/pipelines/demo").text
    figure = re.search(r'<figure class="chart" data-key="train.auc">(.*?)</figure>', page, re.S)
    assert figure, "no chart of train.auc"
    svg = figure.group(1)
    assert re.search(r'<line class="axis x"', svg)
    assert re.search(r'<line class="axis y"', svg)
    y_ticks = re.findall(r'<text class="tick y"[^>]*>([^<]+)</text>', svg)
    assert y_ticks == ["0.6", "0.8"]  # auc = 0.5 + n / 1000: the range's ends
    x_ticks = re.findall(r'<text class="tick x"[^>]*>([^<]+)</text>', svg)
    assert x_ticks == ids  # oldest first
    titles = re.findall(r"<title>([^<]+)</title>", svg)
    assert any(t.startswith(f"{ids[1]}: 0.8") for t in titles)


def test_an_editor_pauses_and_resumes_a_schedule_from_the_ui(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(reconcile=False)
    c = server.client
    api = server.as_(server.token("default", "editor", name="api"))
    body = {"name": "nightly", "pipeline": "demo", "cron": "0 3 * * *", "timezone": "UTC"}
    assert c.put("/api/v1/schedules", json=body, headers=api).status_code == 200
    _signed_in(server, "editor")
    page = c.get("/ui/schedules").text
    row = re.search(r'<tr data-schedule="default/nightly">(.*?)</tr>', page, re.S)
    assert row, "the schedule is not listed"
    assert "0 3 * * *" in row.group(1)
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT03:00:00Z"', row.group(1))  # next tick
    pause = "/ui/schedules/default/nightly/pause"
    assert f'action="{pause}"' in row.group(1)
    token = CSRF.search(row.group(1)).group(1)
    assert c.post(pause, data={}).status_code == 403
    assert c.get("/api/v1/schedules/default/nightly", headers=api).json()["paused"] is False
    done = c.post(pause, data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/schedules"
    assert c.get("/api/v1/schedules/default/nightly", headers=api).json()["paused"] is True
    page = c.get("/ui/schedules").text
    assert 'action="/ui/schedules/default/nightly/resume"' in page
    resumed = c.post("/ui/schedules/default/nightly/resume", data={"csrf": token})
    assert resumed.status_code == 200
    assert c.get("/api/v1/schedules/default/nightly", headers=api).json()["paused"] is False

    _signed_in(server, "viewer")
    page = c.get("/ui/schedules").text
    assert 'data-schedule="default/nightly"' in page
    assert "/nightly/pause" not in page
