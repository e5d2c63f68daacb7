"""``usina runs resume RUN --rerun STEP`` through a real ``usina server``: the named step and
its dependents run again with the reasons printed, the others keep their outputs; a succeeded
run with nothing named or changed is left alone; an unknown step is refused."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.server.conftest import CLI, cli_env

pytestmark = pytest.mark.slow


def test_rerun_through_the_server(http_server, tmp_path_factory):
    url, token, client, home = http_server
    here = tmp_path_factory.mktemp("laptop")
    env = {**cli_env(here), "USINA_SERVER": url, "USINA_TOKEN": token}

    def usina(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CLI, *args], env=env, cwd=here, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == code, done.stdout + done.stderr
        return done

    run = json.loads(usina("run", "demo", "-p", "n=4", "--output", "json").stdout)
    assert run["state"] == "succeeded"
    run_id = run["id"]

    def attempts() -> dict[str, int]:
        shown = client.get(f"/api/v1/runs/{run_id}").json()
        return {s["node"]: s["attempts"] for s in shown["steps"]}

    assert attempts() == {"load": 1, "train": 1, "report": 1}
    finished = client.get(f"/api/v1/runs/{run_id}").json()["finished_at"]

    # Nothing named and nothing changed: a no-op that leaves the run's times alone.
    same = usina("runs", "resume", run_id)
    assert "nothing to run" in same.stdout
    assert attempts() == {"load": 1, "train": 1, "report": 1}
    assert client.get(f"/api/v1/runs/{run_id}").json()["finished_at"] == finished

    resumed = usina("runs", "resume", run_id, "--rerun", "train")
    assert "train: runs again (--rerun)" in resumed.stdout
    assert "report: runs again (upstream step 'train' runs again)" in resumed.stdout
    assert "load: runs again" not in resumed.stdout
    assert "succeeded" in resumed.stdout
    assert attempts() == {"load": 1, "train": 2, "report": 2}
    shown = json.loads(usina("runs", "show", run_id, "--output", "json").stdout)
    why = {s["node"]: s["why"] for s in shown["steps"]}
    assert why["train"] == "resume: --rerun"
    assert why["report"] == "resume: upstream step 'train' runs again"
    assert shown["state"] == "succeeded"

    # JSON output: the followed run, finished.
    again = json.loads(
        usina("runs", "resume", run_id, "--rerun", "report", "--output", "json").stdout
    )
    assert again["state"] == "succeeded"
    assert attempts() == {"load": 1, "train": 2, "report": 3}

    unknown = usina("runs", "resume", run_id, "--rerun", "nope", code=2)
    assert "no step 'nope'" in unknown.stderr
    assert "load, report, train" in " ".join(unknown.stderr.split())
    assert attempts() == {"load": 1, "train": 2, "report": 3}
    assert not (here / ".usina").exists()
