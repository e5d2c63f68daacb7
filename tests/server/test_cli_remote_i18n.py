"""The CLI against a server speaks its reader's language: the server answers in English with the
message id beside it (``detail``, ``message_id``, ``params``), the CLI shows the id's pt-BR."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.server.conftest import CLI, cli_env

pytestmark = pytest.mark.slow


def test_a_servers_errors_and_advice_read_in_portuguese(http_server, tmp_path_factory):
    url, token, client, _home = http_server
    here = tmp_path_factory.mktemp("laptop-pt")
    env = {**cli_env(here), "USINA_SERVER": url, "USINA_TOKEN": token, "USINA_LANG": "en"}

    def usina(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=env, cwd=here, capture_output=True, text=True, timeout=120
        )

    answer = client.get("/api/v1/runs/nope")
    assert answer.status_code == 404
    body = answer.json()
    assert body["detail"] == "run 'nope' does not exist; `usina runs ls` lists the runs"
    assert body["message_id"] == "run {run!r} does not exist; `usina runs ls` lists the runs"
    assert body["params"] == {"run": "nope"}

    english = usina("runs", "show", "nope")
    assert english.returncode == 2
    assert "error: run 'nope' does not exist; `usina runs ls` lists the runs" in " ".join(
        english.stderr.split()
    )
    portuguese = usina("--lang", "pt-BR", "runs", "show", "nope")
    assert portuguese.returncode == 2
    assert "erro: a execução 'nope' não existe; `usina runs ls` lista as execuções" in " ".join(
        portuguese.stderr.split()
    )

    failed = usina("run", "failing")
    assert failed.returncode == 1
    failed_id = json.loads(usina("runs", "ls", "--output", "json").stdout)[0]["id"]
    why = usina("--lang", "pt-BR", "runs", "why", failed_id)
    assert why.returncode == 1
    assert "o que fazer: corrija o código ou os dados da etapa" in why.stdout
