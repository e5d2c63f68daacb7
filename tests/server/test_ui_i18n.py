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
