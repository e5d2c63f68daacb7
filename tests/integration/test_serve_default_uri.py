"""``usina serve models:/NAME@champion`` finds what ``usina run`` registered, with no variable.

The demo's own suggested command used to exit 3: ``usina run`` logged to SQLite under
``./.usina`` while ``usina serve`` let MLflow pick ``./mlruns``. Both now ask
``usina.tracking.uri``; these tests run the real commands, in a fresh folder, with neither
``MLFLOW_TRACKING_URI`` nor ``USINA_HOME`` set.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from usina.cli.settings import Settings
from usina.server.settings import ServerSettings
from usina.tracking.uri import default_tracking_uri

PIPELINE = """
import numpy as np
import pandas as pd
import usina
from usina import pipeline, step


def data():
    rng = np.random.default_rng(7)
    x = pd.DataFrame({"amount": rng.normal(size=400), "velocity": rng.normal(size=400)})
    y = (x["amount"] + 0.5 * x["velocity"] > 0).astype(int).to_numpy()
    return x, y


@step
def register() -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from usina.tracking.mlflow import register_model

    x, y = data()
    model = LogisticRegression().fit(x, y)
    decision = register_model(
        model, name="fraud", features=x, labels=y, metric=roc_auc_score, flavor="sklearn"
    )
    return decision.to_json()


@pipeline(tracking="mlflow")
def tiny():
    register()
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("MLFLOW_TRACKING_URI", "USINA_HOME", "USINA_DATABASE_URL", "USINA_ARTIFACTS_URL"):
        env.pop(name, None)
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_serve_and_server_agree_on_the_default_uri(tmp_path: Path) -> None:
    env = {"USINA_HOME": str(tmp_path / "home")}
    expected = f"sqlite:///{(tmp_path / 'home' / 'mlflow.db').resolve()}"
    assert Settings.from_env(env).tracking_uri == expected
    assert default_tracking_uri(env) == expected
    server = ServerSettings(
        database_url="sqlite://", artifacts_url="mem://", attempts_dir=str(tmp_path / "home/x")
    )
    assert server.mlflow_tracking_uri() == expected
    remote = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", **env}
    assert Settings.from_env(remote).tracking_uri == default_tracking_uri(remote)


@pytest.mark.timeout(600)
def test_serve_finds_the_champion_usina_run_registered(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(PIPELINE)
    env = _env()
    ran = subprocess.run(
        [sys.executable, "-m", "usina.cli.main", "run", "tiny.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (tmp_path / ".usina" / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists()

    port = _port()
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [
            *(sys.executable, "-m", "usina.cli.main", "serve", "models:/fraud@champion"),
            *("--host", "127.0.0.1", "--http-port", str(port), "--no-grpc"),
            *("--poll-interval", "0"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/v2/models/fraud", timeout=5) as resp:
            meta = json.load(resp)
        assert meta["versions"] == ["1"]
        assert [i["name"] for i in meta["inputs"]] == ["amount", "velocity"]
        rows = np.array([[0.3, -1.2], [-2.0, 0.1], [1.5, 1.5]])
        body = {
            "inputs": [
                {"name": n, "shape": [3], "datatype": "FP64", "data": rows[:, i].tolist()}
                for i, n in enumerate(["amount", "velocity"])
            ]
        }
        request = urllib.request.Request(
            f"{base}/v2/models/fraud/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.load(resp)
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
    assert answer["model_version"] == "1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["predict"]["data"] == [0, 0, 1]
