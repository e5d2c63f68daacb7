"""``--help`` of the real ``usina`` command in Portuguese (``--lang pt-BR`` before the command,
``USINA_LANG`` or the locale): the commands' and options' texts from the catalogue, and Click's
and Typer's own words ("Usage:", "Options", "No such option"); English help is the same
whichever way it is asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cli_helpers import Usina

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def usina(tmp_path):
    cli = Usina(tmp_path).in_english_by_default()
    cli.env["PYTHONPATH"] = str(SRC)  # this checkout's usina, whatever is installed
    return cli


def _said(result) -> str:
    assert result.code == 0, result.err
    return " ".join(result.out.split())


def test_run_help_is_in_portuguese_with_lang_before_the_command(usina):
    english = _said(usina("run", "--help"))
    assert "Run a pipeline to its end and show its steps as they go." in english
    assert "run every step, ignore the cache" in english
    portuguese = _said(usina("--lang", "pt-BR", "run", "--help"))
    assert "Executa um pipeline até o fim e mostra suas etapas conforme avançam." in portuguese
    assert "executa todas as etapas, ignorando o cache" in portuguese
    assert "Run a pipeline to its end" not in portuguese
    assert "ignore the cache" not in portuguese
    assert "Uso:" in portuguese  # Click's own words too
    assert "Usage:" not in portuguese


def test_a_subcommands_help_is_in_portuguese_with_usina_lang_or_the_locale(usina):
    english = usina("runs", "ls", "--help")
    assert "List runs, newest first." in english.out
    usina.env["USINA_LANG"] = "pt-BR"
    portuguese = _said(usina("runs", "ls", "--help"))
    assert "Lista as execuções, das mais novas para as mais antigas." in portuguese
    assert "só execuções deste pipeline" in portuguese
    assert "only runs of this pipeline" not in portuguese
    del usina.env["USINA_LANG"]
    usina.env["LANG"] = "pt_BR.UTF-8"
    assert _said(usina("runs", "ls", "--help")) == portuguese
    assert usina("--lang", "en", "runs", "ls", "--help").out == english.out


def test_the_root_help_lists_the_commands_in_portuguese_and_english_is_unchanged(usina):
    english = usina("--help")
    assert english.code == 0
    assert usina("--lang", "en", "--help").out == english.out
    usina.env["LANG"] = "en_US.UTF-8"
    assert usina("--help").out == english.out
    portuguese = _said(usina("--lang", "pt-BR", "--help"))
    assert "Lista e inspeciona execuções; retoma, cancela, explica falhas." in portuguese
    assert "idioma das mensagens: en ou pt-BR" in portuguese
    assert "inspect their runs" not in portuguese


def test_clicks_and_typers_own_words_are_in_portuguese_and_english_is_unchanged(usina):
    english = usina("runs", "--help")
    assert english.code == 0
    words = ("Usage:", "Options", "Commands", "Show this message and exit.")
    assert all(word in " ".join(english.out.split()) for word in words)
    assert usina("--lang", "en", "runs", "--help").out == english.out
    portuguese = _said(usina("--lang", "pt-BR", "runs", "--help"))
    for word in ("Uso:", "Opções", "Comandos", "Mostra esta mensagem e sai."):
        assert word in portuguese
    assert not any(word in portuguese for word in words)

    wrong = usina("runs", "ls", "--bogus")
    assert wrong.code == 2
    assert wrong.err.splitlines()[-1] == "Error: No such option: --bogus"
    assert "Try '" in wrong.err
    assert "for help." in wrong.err
    assert usina("--lang", "en", "runs", "ls", "--bogus").err == wrong.err
    usina.env["USINA_LANG"] = "pt-BR"
    said = usina("runs", "ls", "--bogus")
    assert said.code == 2
    lines = said.err.splitlines()
    assert lines[0].startswith("Uso: ")
    assert lines[1].startswith("Tente '")
    assert lines[1].endswith(" runs ls --help' para ver a ajuda.")
    assert lines[-1] == "Erro: Opção inexistente: --bogus"
    missing = usina("runs", "show").err.splitlines()[-1]
    assert missing == "Erro: Falta o argumento 'run_id'."
    value = usina("runs", "ls", "--limit", "x").err.splitlines()[-1]
    assert value.startswith("Erro: Valor inválido para '--limit': 'x' não é um ")
