"""The issue's variant of the platform test: a researcher changes one line of a helper module and
submits again with ``usina run --server URL pipeline.py``. The server (Kubernetes backend on the
API emulator, SeaweedFS as the artifact store) runs only the step whose code changed as a new
Job, in the same image: the new code reaches the pod as a code bundle, not an image build.

The pods are processes (``ProcessKubelet``) whose ``PYTHONPATH`` holds usina but not the
project: they can only import the user's code from the bundle they fetch from S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.k8s.emulator import Emulator
from tests.k8s.process_kubelet import ProcessKubelet
from tests.seaweedfs import SeaweedS3

pytestmark = [pytest.mark.slow]

CLI = [sys.executable, "-m", "usina.cli.main"]
IMAGE = "usina-runtime:test"

PIPELINE = """
from usina import pipeline, step

from features import ROWS, featurize, label


@step
def extract() -> list[int]:
    print(f"extracting {ROWS} rows")
    return featurize(list(range(ROWS)))


@step
def train(rows: list[int]) -> int:
    return sum(rows)


@step
def score(model: int) -> str:
    print(label(model))
    return label(model)


@pipeline
def fraud_edit():
    score(train(extract()))
"""

FEATURES = """
ROWS = 64


def featurize(rows: list[int]) -> list[int]:
    return [r * 2 for r in rows]


def label(model: int) -> str:
    return f"model {model}"
"""


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3.start(tmp_path / "seaweedfs")
    yield server
    server.stop()


def test_a_helper_edit_reruns_only_its_step_as_a_job_in_the_same_image(
    tmp_path: Path, s3: SeaweedS3
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'fraud-edit'\n")
    (project / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    (project / "features.py").write_text(textwrap.dedent(FEATURES))
    kubelet = ProcessKubelet(tmp_path / "pods")
    kubelet.add_secret("s3-credentials", s3.env())
    assert str(project) not in kubelet.base_env["PYTHONPATH"]

    with Emulator(kubelet=kubelet) as emulator:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emu", "cluster": {"server": emulator.url}}],
                    "users": [{"name": "emu", "user": {"token": "x"}}],
                    "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
                    "current-context": "emu",
                }
            )
        )
        config = tmp_path / "backends.json"
        options = {
            "namespace": "ml",
            "image": IMAGE,
            "env_from_secrets": ["s3-credentials"],
            "log_sync_seconds": 0.5,
        }
        config.write_text(json.dumps({"backend": "kubernetes", "options": options}))
        env = {
            **os.environ,
            **s3.env(),
            "USINA_HOME": str(tmp_path / "server-home"),
            "USINA_ARTIFACTS_URL": s3.url("platform"),
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("USINA_SERVER", "USINA_TOKEN", "USINA_DATABASE_URL", "MLFLOW_TRACKING_URI"):
            env.pop(name, None)
        token = subprocess.run(
            [*CLI, "token", "create", "--project", "default", "--role", "editor", "--name", "ana"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(tmp_path / "server.log", "wb") as log:
            server = subprocess.Popen(
                [*CLI, "server", "--port", str(port), "--backend-config", str(config)],
                env=env, cwd=tmp_path, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        try:

            def up() -> bool:
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    assert server.poll() is None, (tmp_path / "server.log").read_text()
                    return False

            wait_until(up, 90, "the server to start")
            laptop = {
                **env,
                "USINA_SERVER": url,
                "USINA_TOKEN": token,
                "USINA_HOME": str(tmp_path / "laptop"),
            }

            def submit() -> dict[str, Any]:
                done = subprocess.run(
                    [*CLI, "run", str(project / "pipeline.py"), "--output", "json"],
                    env=laptop, cwd=project, capture_output=True, text=True, timeout=240,
                )  # fmt: skip
                assert done.returncode == 0, done.stdout + done.stderr
                assert "code bundle sha256:" in done.stderr
                run: dict[str, Any] = json.loads(done.stdout)
                assert run["state"] == "succeeded", run
                return run

            first = submit()
            assert {s["node"]: s["cached"] for s in first["steps"]} == dict.fromkeys(
                ("extract", "train", "score"), False
            )
            assert emulator.count("create jobs") == 3

            features = project / "features.py"
            features.write_text(features.read_text().replace('f"model {model}"', 'f"#{model}"'))
            second = submit()
            cached = {s["node"]: s["cached"] for s in second["steps"]}
            assert cached == {"extract": True, "train": True, "score": False}, second
            assert emulator.count("create jobs") == 4  # one new Job: score's
            jobs = {
                run["id"]: emulator.get("jobs", f"{run['id']}-score-1") for run in (first, second)
            }
            assert all(job is not None for job in jobs.values())  # ttl_seconds: 1 h
            images = {
                c["image"]
                for job in jobs.values()
                for c in (job or {})["spec"]["template"]["spec"]["containers"]
            }
            assert images == {IMAGE}
            logs = client.get(f"/api/v1/runs/{second['id']}/steps/score/logs").text
            assert "#4032" in logs
        finally:
            client.close()
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
