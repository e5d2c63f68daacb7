"""A real Prometheus scrapes usina's metrics on loopback, and PromQL sees what happened.

A pipeline runs through the real CLI on the local backend with one GPU "assigned"
(``USINA_GPUS=0``): its GPU step is killed by its memory limit on the first attempt (``oom``) and
succeeds on the second with more memory. The metrics are then served by the ASGI app that
``usina server`` mounts at ``/metrics`` (``metrics_app(pipeline_registry(store))``), together
with the drift gauges that ``usina serve`` exports (``DriftMetrics`` + ``DriftMonitor`` fed
live batches, one feature shifted), and Prometheus scrapes that endpoint every second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.integration.cli_helpers import Usina
from tests.monitoring.support import AsgiServer, Prometheus, exported_names, metric_names
from usina.monitoring.drift import PSI_ALERT, DriftMetrics, DriftMonitor, DriftReference
from usina.monitoring.pipeline_metrics import metrics_app, pipeline_registry
from usina.stores.sql import SqlMetadataStore

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/helm/usina/files/grafana-dashboard.json"

GPU_OOM = """
from usina import Resources, Retry, pipeline, step
import numpy as np

@step
def prepare() -> int:
    return 1

@step(resources=Resources(gpus=1, memory="150Mi"), retry=Retry(oom=1, oom_grow=4.0, backoff=0.1))
def train(x: int) -> int:
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched: past the first attempt's limit
    return int(block[:10].sum()) + x

@pipeline
def gpu_oom():
    train(prepare())
"""


def _value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("mon")
    usina = Usina(home)
    usina.env["USINA_GPUS"] = "0"
    usina.write("p.py", GPU_OOM)
    res = usina("run", "p.py", "--label", "team=fraud", "--output", "json", timeout=180)
    assert res.code == 0, res.out + res.err
    run = res.json()

    store = SqlMetadataStore(f"sqlite:///{home / '.usina' / 'usina.db'}")
    registry = pipeline_registry(store)

    # The serving side: the drift gauges a `usina serve` worker exports, fed live batches.
    rng = np.random.default_rng(7)
    train = {"amount": rng.lognormal(3.0, 1.0, 20_000), "hour": rng.uniform(0, 24, 20_000)}
    reference = DriftReference.from_training(train, scores=rng.beta(1, 9, 20_000))
    monitor = DriftMonitor(
        reference, model="fraud", version="3", metrics=DriftMetrics(registry), update_every=1000
    )
    live = np.column_stack([rng.lognormal(3.8, 1.0, 4000), rng.uniform(0, 24, 4000)])
    for batch in np.array_split(live, 8):
        monitor.observe(batch, rng.beta(1, 9, batch.shape[0]))

    server = AsgiServer(metrics_app(registry))
    prom = Prometheus(home, [f"127.0.0.1:{server.port}"])
    try:
        prom.wait_for('up{job="usina"} == 1')
        prom.wait_for("usina_attempts_total")
        yield {"run": run, "prom": prom, "server": server}
    finally:
        prom.close()
        server.close()
        store.close()


def test_the_oom_attempt_is_counted_once(world):
    prom = world["prom"]
    assert _value(prom.query('sum(usina_attempts_total{failure_class="oom"})')) == 1
    assert _value(prom.query('sum(usina_attempts_total{outcome="failed"})')) == 1
    # prepare, and train's second attempt
    assert _value(prom.query('sum(usina_attempts_total{outcome="succeeded"})')) == 2
    ok = prom.query('usina_pipeline_runs_total{pipeline="gpu_oom",outcome="succeeded"}')
    assert _value(ok) == 1
    assert ok[0]["metric"]["team"] == "fraud"


def test_wasted_gpu_seconds_are_positive_and_part_of_the_used(world):
    prom = world["prom"]
    wasted = _value(
        prom.query('sum(usina_gpu_seconds_wasted_total{failure_class="oom",team="fraud"})')
    )
    used = _value(prom.query('sum(usina_gpu_seconds_total{pipeline="gpu_oom"})'))
    assert wasted > 0
    assert used > wasted  # the successful attempt's GPU time is used, not wasted


def test_step_durations_and_queue_wait_are_histograms(world):
    prom = world["prom"]
    steps = prom.query('sum by (step) (usina_step_duration_seconds_count{pipeline="gpu_oom"})')
    assert {r["metric"]["step"]: float(r["value"][1]) for r in steps} == {
        "prepare": 1.0,
        "train": 1.0,
    }
    # three attempts launched and started: three queue-wait observations
    assert _value(prom.query("sum(usina_queue_wait_seconds_count)")) == 3


def test_drift_of_the_shifted_feature_is_above_the_alert(world):
    prom = world["prom"]
    psi = {
        r["metric"]["feature"]: float(r["value"][1])
        for r in prom.query('usina_drift_psi{model="fraud",version="3"}')
    }
    assert psi["amount"] > PSI_ALERT
    assert psi["hour"] < PSI_ALERT
    assert _value(prom.query('usina_drift_score_psi{model="fraud"}')) < PSI_ALERT


def _serving_names() -> set[str]:
    """Metric names ``usina serve`` exports: from its own definitions when the serving package
    is installed here, else the names its ``usina.serving.metrics`` module defines (pinned)."""
    try:
        from usina.serving.metrics import ServingMetrics  # type: ignore[import-not-found]
    except ImportError:
        pinned = {
            "usina_serving_requests": "counter",
            "usina_serving_request_duration_seconds": "histogram",
            "usina_serving_queue_duration_seconds": "histogram",
            "usina_serving_compute_duration_seconds": "histogram",
            "usina_serving_batch_size": "histogram",
            "usina_serving_queue_depth": "gauge",
            "usina_serving_prediction_score": "histogram",
            "usina_serving_model_load_duration_seconds": "histogram",
            "usina_serving_model_load_failures": "counter",
            "usina_serving_model_version_info": "gauge",
            "usina_serving_build_info": "gauge",
        }
        text = "".join(f"# TYPE {name} {kind}\n" for name, kind in pinned.items())
        return exported_names(text)
    return exported_names(ServingMetrics().render().decode())


def test_every_dashboard_query_names_an_exported_metric(world):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    assert len(exprs) >= 12
    live = exported_names(world["server"].get("/metrics"))
    known = live | _serving_names()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= known, f"{expr!r} reads {sorted(names - known)}, which nothing exports"
    read = set().union(*(metric_names(e) for e in exprs))
    for wanted in (
        "usina_gpu_seconds_wasted_total",
        "usina_drift_psi",
        "usina_serving_request_duration_seconds_bucket",
        "usina_pipeline_runs_total",
    ):
        assert wanted in read
