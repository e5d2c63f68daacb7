"""The CLI against a server (USINA_SERVER + USINA_TOKEN): run, runs ls/show/logs/why/resume/
cancel give the same answers as locally, with nothing under the local USINA_HOME."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.server.conftest import CLI, cli_env

pytestmark = pytest.mark.slow


def test_the_cli_drives_a_server(http_server, tmp_path_factory):
    url, token, client, home = http_server
    here = tmp_path_factory.mktemp("laptop")
    env = {**cli_env(here), "USINA_SERVER": url, "USINA_TOKEN": token}

    def usina(*args: str, check_code: int | None = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CLI, *args], env=env, cwd=here, capture_output=True, text=True, timeout=120
        )
        if check_code is not None:
            assert done.returncode == check_code, done.stdout + done.stderr
        return done

    # --no-bundle: the local file only names a pipeline the server has (and checks the
    # parameters here); tests/server/test_bundle_runs.py ships files as bundles.
    ran = usina(
        "run", str(home / "pipelines.py") + ":demo", "-p", "n=4", "--no-bundle", "--output", "json"
    )
    run = json.loads(ran.stdout)
    assert run["state"] == "succeeded"
    assert [s["node"] for s in run["steps"]] == ["load", "train", "report"]

    listed = json.loads(usina("runs", "ls", "--output", "json").stdout)
    assert [r["id"] for r in listed] == [run["id"]]
    shown = json.loads(usina("runs", "show", run["id"], "--output", "json").stdout)
    assert {a["node"] for a in shown["attempts"]} == {"load", "train", "report"}
    assert "loading 4 rows" in usina("runs", "logs", run["id"], "load").stdout
    text = usina("runs", "show", run["id"]).stdout
    assert "train" in text
    assert "succeeded" in text

    failed = usina("run", "failing", check_code=1)
    assert "failed" in failed.stdout
    failed_id = json.loads(usina("runs", "ls", "--output", "json").stdout)[0]["id"]
    why = usina("runs", "why", failed_id, check_code=1)
    assert "user_error" in why.stdout
    assert "negative amount in row 2" in why.stdout
    resumed = usina("runs", "resume", failed_id, check_code=1)
    assert "failed" in resumed.stdout

    slow = client.post("/api/v1/runs", json={"pipeline": "slow"}).json()["id"]
    cancelled = usina("runs", "cancel", slow, "--output", "json")
    assert json.loads(cancelled.stdout)["cancel_requested"] is True
    deadline = time.monotonic() + 30
    while client.get(f"/api/v1/runs/{slow}").json()["state"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # Nothing ran or was written on the "laptop" side.
    assert not (here / ".usina").exists()
    # A bad token is refused with a message that says what to do.
    env["USINA_TOKEN"] = "usn_bad_token"
    refused = usina("runs", "ls", check_code=1)
    assert "USINA_TOKEN" in refused.stderr
