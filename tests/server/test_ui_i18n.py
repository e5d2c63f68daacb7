"""The web UI in Portuguese from the same catalogue as the CLI (issue #18): its words, a failed
run's advice and its events' names; the API's JSON and English pages stay as they were."""

from __future__ import annotations

from collections.abc import Callable

from tests.server.conftest import Server
from usina import i18n as catalogue
from usina.server import i18n


def _failed_run(make_server: Callable[..., Server]) -> tuple[Server, str]:
    server = make_server()
    editor = server.token("default", "editor")
    run_id = server.client.post(
        "/api/v1/runs", json={"pipeline": "failing"}, headers=server.as_(editor)
    ).json()["id"]
    assert server.wait_finished(editor, run_id)["state"] == "failed"
    token = server.token("default", "viewer")
    assert (
        server.client.post("/ui/login", data={"token": token, "next": "/ui/runs"}).status_code
        == 200
    )
    return server, run_id


def test_a_failed_run_reads_in_portuguese_and_the_api_stays_english(
    make_server: Callable[..., Server],
) -> None:
    server, run_id = _failed_run(make_server)
    english = server.client.get(f"/ui/runs/{run_id}?lang=en").text
    assert "run_started" in english  # an event's kind as recorded
    assert "code or data (see the traceback)" in english

    pt = server.client.get(f"/ui/runs/{run_id}?lang=pt-BR").text
    assert "execução iniciada" in pt
    assert "tentativa falhou" in pt
    assert "run_started" not in pt
    assert "corrija o código ou os dados da etapa" in pt
    assert f"usina runs resume {run_id}" in pt
    assert "fix the step" not in pt

    attempts = server.client.get(
        f"/api/v1/runs/{run_id}/attempts",
        headers={**server.as_(server.token("default", "viewer")), "Accept-Language": "pt-BR"},
    ).json()
    failed = [a for a in attempts if a["state"] == "failed"]
    assert failed
    assert failed[-1]["advice"].startswith("fix the step's code or data")
    events = server.client.get(f"/api/v1/runs/{run_id}/events").json()
    assert "run_started" in {e["kind"] for e in events}


def test_the_ui_words_are_the_catalogues() -> None:
    assert i18n.MESSAGES["pt-BR"]["runs"] == catalogue.translate("Runs", "pt-BR") == "Execuções"
    for key, english in i18n.WORDS.items():
        assert i18n.MESSAGES["en"][key] == english
        assert i18n.MESSAGES["pt-BR"][key] == catalogue.translate(english, "pt-BR")
    for kind in catalogue.EVENT_KINDS:
        assert i18n.MESSAGES["en"][f"event.{kind}"] == kind
        assert i18n.MESSAGES["pt-BR"][f"event.{kind}"] == catalogue.event_name(kind, "pt-BR")


def test_a_run_of_another_project_reads_like_a_missing_run_in_either_language(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(reconcile=False)
    c = server.client
    editor = server.token("alpha", "editor")
    run_id = c.post(
        "/api/v1/runs", json={"pipeline": "demo", "project": "alpha"}, headers=server.as_(editor)
    ).json()["id"]
    outsider = server.token("beta", "admin")
    missing = c.get("/api/v1/runs/no-such-run", headers=server.as_(outsider))
    hidden = c.get(f"/api/v1/runs/{run_id}", headers=server.as_(outsider))
    assert missing.status_code == hidden.status_code == 404
    assert missing.json()["detail"].replace("no-such-run", run_id) == hidden.json()["detail"]

    assert c.post("/ui/login", data={"token": outsider, "next": "/ui/runs"}).status_code == 200
    for lang, words in (("en", "does not exist"), ("pt-BR", "não existe")):
        gone = c.get(f"/ui/runs/no-such-run?lang={lang}")
        secret = c.get(f"/ui/runs/{run_id}?lang={lang}")
        assert gone.status_code == secret.status_code == 404
        assert words in gone.text
        assert gone.text.replace("no-such-run", run_id) == secret.text
