"""Logs through the API and ``usina runs logs`` (issue #14, finding 10): terminal control
sequences other than colour are removed, and a cut-off log is marked."""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

from tests.server.conftest import CLI, cli_env
from tests.server.live import live_server

NOISY = textwrap.dedent(
    """
    @step(cache=False)
    def noisy() -> int:
        print("\\x1b[2J\\x1b]0;pwned\\x07\\x1b[31mred\\x1b[0m visible")
        return 1

    @pipeline
    def noisy_pipeline():
        noisy()
    """
)


def test_api_logs_strip_control_sequences_but_colour(tmp_path: Path) -> None:
    with live_server(tmp_path, extra_pipelines=NOISY) as server:
        editor = server.token("default", "editor")
        with server.client(editor) as client:
            run = client.post("/api/v1/runs", json={"pipeline": "noisy_pipeline"}).json()
            deadline = time.monotonic() + 60
            while client.get(f"/api/v1/runs/{run['id']}").json()["state"] != "succeeded":
                assert time.monotonic() < deadline, "the run did not finish"
                time.sleep(0.2)
            text = client.get(f"/api/v1/runs/{run['id']}/steps/noisy/logs").text
    assert "\x1b[31mred\x1b[0m visible" in text
    assert "\x1b[2J" not in text
    assert "pwned" not in text
    assert "\x07" not in text


def test_cli_runs_logs_strips_control_sequences(tmp_path: Path) -> None:
    source = tmp_path / "noisy.py"
    source.write_text("from usina import pipeline, step\n" + NOISY)
    env = cli_env(tmp_path)
    ran = subprocess.run(
        [*CLI, "run", f"{source}:noisy_pipeline"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    listed = subprocess.run(
        [*CLI, "runs", "ls", "--output", "json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    import json

    run_id = json.loads(listed.stdout)[0]["id"]
    shown = subprocess.run(
        [*CLI, "runs", "logs", run_id, "noisy"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "\x1b[31mred\x1b[0m visible" in shown.stdout
    assert "\x1b[2J" not in shown.stdout
    assert "pwned" not in shown.stdout
