"""A real Prometheus scrapes the real processes: ``usina server`` (pipeline metrics at
``/metrics``) and ``usina serve`` (serving metrics). After a pipeline whose GPU step fails once
with ``oom`` and some inference traffic, PromQL sees the oom attempt once, wasted GPU-seconds,
and exactly as many requests as were sent."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serving_support import free_port, post_json, row_request, start_server

from tests.integration.cli_helpers import Usina
from tests.monitoring.support import Prometheus
from tests.monitoring.test_prometheus import GPU_OOM, _value

SERVING = Path(__file__).resolve().parents[1] / "serving"

pytestmark = pytest.mark.timeout(600)
REQUESTS = 25


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("live")
    usina = Usina(home)
    usina.env["USINA_GPUS"] = "0"
    usina.write("p.py", GPU_OOM)
    res = usina("run", "p.py", "--label", "team=fraud", "--output", "json", timeout=180)
    assert res.code == 0, res.out + res.err

    # usina server over the run's store (no reconciler: it only needs to report)
    port = free_port()
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        usina.cmd(
            "server",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--no-reconcile",
            "--database-url",
            f"sqlite:///{home}/.usina/usina.db",
        ),
        cwd=home,
        env=usina.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # usina serve with a LightGBM model from a local MLflow registry
    registry = home / "mlflow"
    registry.mkdir()
    uri = f"sqlite:///{registry / 'mlflow.db'}"
    subprocess.run(
        [sys.executable, str(SERVING / "make_models.py"), uri, str(registry / "out")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    serve = start_server(uri, "models:/fraud@champion", home)
    x = np.load(registry / "out" / "x.npy")
    columns = (registry / "out" / "columns.txt").read_text().split("\n")
    prom = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        for i in range(REQUESTS):
            status, _ = post_json(serve.http, "/v2/models/fraud/infer", row_request(x[i], columns))
            assert status == 200
        prom = Prometheus(home, [f"127.0.0.1:{port}", serve.http])
        prom.wait_for('count(up{job="usina"} == 1) == 2')
        prom.wait_for("usina_attempts_total")
        prom.wait_for("usina_serving_requests_total")
        yield prom
    finally:
        if prom is not None:
            prom.close()
        serve.stop()
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_prometheus_sees_the_oom_attempt_once_from_usina_server(live):
    assert _value(live.query('sum(usina_attempts_total{failure_class="oom"})')) == 1
    wasted = live.query('sum(usina_gpu_seconds_wasted_total{failure_class="oom",team="fraud"})')
    assert _value(wasted) > 0


def test_prometheus_counts_every_request_usina_serve_answered(live):
    total = live.query('sum(usina_serving_requests_total{model="fraud",status="200"})')
    assert _value(total) == REQUESTS


def test_both_targets_are_up(live):
    assert _value(live.query('count(up{job="usina"} == 1)')) == 2
