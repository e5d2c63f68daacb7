"""The real ``usina`` command in Portuguese (``--lang pt-BR`` or ``LANG=pt_BR.UTF-8``): the
same exit codes, the same JSON, the words from the pt-BR catalogue; English stays English."""

from __future__ import annotations

import pytest

from tests.integration.cli_helpers import Usina

FAILING = """
from usina import pipeline, step

@step
def fine() -> int:
    return 41

@step
def broken(x: int) -> int:
    raise ValueError("negative amount")

@pipeline
def p():
    broken(fine())
"""


@pytest.fixture
def usina(tmp_path):
    return Usina(tmp_path).in_english_by_default()


def test_a_missing_run_is_reported_in_the_language_asked_for(usina):
    english = usina("runs", "show", "nope")
    assert english.code == 2
    assert "error: run 'nope' does not exist: no usina store at" in " ".join(english.err.split())
    flag = usina("--lang", "pt-BR", "runs", "show", "nope")
    assert flag.code == 2
    said = " ".join(flag.err.split())
    assert "erro: a execução 'nope' não existe: não há armazenamento do usina em" in said
    assert "does not exist" not in said
    usina.env["LANG"] = "pt_BR.UTF-8"
    from_locale = usina("runs", "show", "nope")
    assert (from_locale.code, from_locale.err) == (flag.code, flag.err)
    usina.env["USINA_LANG"] = "en"  # usina's own variable wins over the locale
    assert usina("runs", "show", "nope").err == english.err
    assert usina("--lang", "en", "runs", "show", "nope").err == english.err


def test_a_missing_pipeline_file_is_a_usage_error_in_either_language(usina):
    english = usina("run", "absent.py")
    assert english.code == 2
    assert "error: no such pipeline file: absent.py" in english.err
    portuguese = usina("--lang", "pt-BR", "run", "absent.py")
    assert portuguese.code == 2
    assert "erro: arquivo de pipeline não encontrado: absent.py" in portuguese.err


def test_a_failed_run_shows_in_portuguese_and_its_json_stays_the_same(usina):
    usina.write("p.py", FAILING)
    ran = usina("--lang", "pt-BR", "run", "p.py")
    assert ran.code == 1
    run_id = usina.last_run()["id"]
    assert f"execução {run_id} do pipeline p" in ran.out
    assert f"veja o motivo: usina runs why {run_id}   depois: usina runs resume {run_id}" in ran.out

    shown = usina("--lang", "pt-BR", "runs", "show", run_id)
    assert shown.code == 0, shown.err
    assert "etapa" in shown.out
    assert "tentativa" in shown.out
    assert "duração" in shown.out
    assert f"execução {run_id} falhou em" in shown.out
    assert "falharam: broken" in shown.out
    english = usina("runs", "show", run_id)
    assert f"run {run_id} failed in" in english.out
    assert "failed: broken" in english.out

    as_json = usina("--lang", "pt-BR", "runs", "show", run_id, "--output", "json").json()
    assert as_json["state"] == "failed"  # records and JSON stay language-neutral
    assert as_json == usina("runs", "show", run_id, "--output", "json").json()

    missing = usina("--lang", "pt-BR", "runs", "show", "nope")
    assert missing.code == 2
    said = " ".join(missing.err.split())
    assert "erro: a execução 'nope' não existe; `usina runs ls` lista as execuções" in said
    assert "(armazenamento: " in said

    why = usina("--lang", "pt-BR", "runs", "why", run_id)
    assert why.code == 1
    assert f"execução {run_id}: falhou" in why.out
    assert "broken tentativa 1: user_error (saída " in why.out
    assert "últimas linhas do log:" in why.out
    said = " ".join(why.out.split())
    assert (
        "o que fazer: corrija o código ou os dados da etapa (veja o traceback) e depois "
        + (f"'usina runs resume {run_id}'")
        in said
    )
    english = usina("runs", "why", run_id)
    assert "what to do: fix the step's code or data" in english.out
    assert "broken attempt 1: user_error (exit " in english.out
    why_json = usina("--lang", "pt-BR", "runs", "why", run_id, "--output", "json").json()
    assert why_json["failed_attempts"][0]["advice"].startswith("fix the step's code")

    listed = usina("--lang", "pt-BR", "runs", "ls")
    assert "execução" in listed.out
    assert "falhou" in listed.out
