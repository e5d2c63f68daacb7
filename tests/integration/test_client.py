"""``usina.Client`` loads a finished run's outputs as Python values (a pandas DataFrame, a numpy
array, a dict), its metrics and its logs: from the local store, and through ``usina server``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import usina
from tests.integration.cli_helpers import Usina

PIPE = """
import numpy as np
import pandas as pd

import usina
from usina import pipeline, step

@step
def frame(n: int) -> pd.DataFrame:
    print("making", n, "rows")
    return pd.DataFrame({"a": list(range(n)), "b": [x * 0.5 for x in range(n)]})

@step
def array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) * 2

@step
def summary(df: pd.DataFrame, arr: np.ndarray) -> dict:
    usina.log_metric("total", float(arr.sum()))
    return {"rows": len(df), "total": float(arr.sum())}

@pipeline
def p(n: int = 4):
    summary(frame(n), array(n))
"""


def check(client: usina.Client, run_id: str) -> None:
    run = client.run(run_id)
    assert run.state == "succeeded"
    assert [s.node for s in run.steps] == ["frame", "array", "summary"]
    df = client.load(run_id, "frame")
    assert isinstance(df, pd.DataFrame)
    assert df["a"].tolist() == [0, 1, 2, 3]
    arr = client.load(run_id, "array")
    assert isinstance(arr, np.ndarray)
    np.testing.assert_array_equal(arr, [0.0, 2.0, 4.0, 6.0])
    assert client.load(run_id, "summary") == {"rows": 4, "total": 12.0}
    assert client.metrics(run_id, "summary") == {"total": 12.0}
    assert "making 4 rows" in client.logs(run_id, "frame")
    assert [r.id for r in client.runs(pipeline="p")] == [run_id]
    assert client.latest_run("p").id == run_id
    with pytest.raises(usina.UsinaError, match="no step 'nope'"):
        client.load(run_id, "nope")


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Usina, str]:
    u = Usina(tmp_path)
    u.write("p.py", PIPE)
    res = u("run", "p.py", "-o", "json")
    assert res.code == 0, res.out + res.err
    return u, res.json()["id"]


def test_the_client_reads_a_local_run(finished):
    u, run_id = finished
    with usina.Client(str(u.home / ".usina")) as client:
        check(client, run_id)


def test_the_client_reads_a_run_through_usina_server(finished):
    u, run_id = finished
    env = dict(u.env)
    token = subprocess.run(
        [*u.cmd("token", "create", "--project", "default", "--role", "viewer", "--name", "nb")],
        env=env,
        cwd=u.home,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with open(u.home / "server.log", "wb") as log:
        proc = subprocess.Popen(
            u.cmd("server", "--port", str(port), "--pipelines", str(u.home / "p.py")),
            env=env,
            cwd=u.home,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((u.home / "server.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        os.environ.pop("USINA_SERVER", None)
        with usina.Client(server=url, token=token) as client:
            check(client, run_id)
    finally:
        proc.terminate()
        proc.wait(30)


def test_importing_the_client_stays_light():
    code = "import sys, usina; usina.Client(); print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
