"""Idle GPU-hours as KPIs and Prometheus counters; every KPI explained; promotions counted."""

from __future__ import annotations

import time

import pytest

from tests.profile.factory import GI, World
from usina.monitoring.kpi import KPI_DEFINITIONS, compute_kpis, explain_kpis
from usina.monitoring.pipeline_metrics import pipeline_registry


def _world() -> World:
    world = World()
    world.run(
        "train",
        [
            # 2 GPUs for 10 s: GPU 0 busy, GPU 1 idle throughout
            {
                "step": "fit",
                "memory": "8Gi",
                "gpus": 2,
                "series": [GI] * 11,
                "gpu_util": [[90.0] * 11, [1.0] * 11],
            },
            {"step": "prep", "memory": "1Gi", "series": [GI] * 5},  # no GPU
            # a GPU attempt without NVML where it ran: allocated, not profiled
            {"step": "eval", "memory": "1Gi", "gpus": 1, "series": [GI] * 5, "profile": False},
        ],
        labels={"team": "fraud"},
    )
    return world


def test_kpi_reports_idle_gpu_hours_per_team_pipeline_and_step():
    world = _world()
    report = compute_kpis(world.metadata, since=0, until=time.time() * 2, artifacts=world.artifacts)
    idle = report["gpu_idle"]
    assert idle["allocated_hours"] == pytest.approx((2 * 10 + 1 * 4) / 3600)
    assert idle["profiled_hours"] == pytest.approx(20 / 3600)
    assert idle["idle_hours"] == pytest.approx(10 / 3600)
    assert idle["idle_share"] == pytest.approx(0.5)
    rows = {r["step"]: r for r in idle["by_step"]}
    assert set(rows) == {"fit", "eval"}
    assert rows["fit"]["team"] == "fraud"
    assert rows["fit"]["pipeline"] == "train"
    assert rows["fit"]["idle_hours"] == pytest.approx(10 / 3600)
    assert rows["eval"]["profiled_hours"] == 0
    assert rows["eval"]["idle_share"] is None
    # without the artifact store the report is what it was
    assert "gpu_idle" not in compute_kpis(world.metadata, since=0, until=time.time() * 2)


def test_prometheus_counts_idle_gpu_seconds_per_step_once():
    world = _world()
    registry = pipeline_registry(world.metadata, world.artifacts, clock=lambda: world.clock + 10)
    for _ in range(2):  # a second scrape must not count the same attempts again
        value = registry.get_sample_value
        labels = {"pipeline": "train", "team": "fraud", "step": "fit"}
        assert value("usina_gpu_seconds_idle_total", labels) == pytest.approx(10.0)
        assert value("usina_gpu_seconds_profiled_total", labels) == pytest.approx(20.0)
        assert value("usina_gpu_seconds_allocated_total", labels) == pytest.approx(20.0)
        eval_labels = {**labels, "step": "eval"}
        assert value("usina_gpu_seconds_allocated_total", eval_labels) == pytest.approx(4.0)
        assert value("usina_gpu_seconds_idle_total", eval_labels) == 0.0
        assert value("usina_gpu_seconds_idle_total", {**labels, "step": "prep"}) is None


def test_every_kpi_of_the_table_is_explained():
    text = explain_kpis()
    for name in (
        "success rate",
        "mean time to recovery",
        "GPU-hours used",
        "GPU-hours wasted",
        "GPU-hours idle",
        "queue wait p50 / p99",
        "promoted",
    ):
        assert f"{name}: " in text
        assert len(KPI_DEFINITIONS[name]) > 40
    assert "incident" in KPI_DEFINITIONS["mean time to recovery"]
    assert "plain MLflow calls" in KPI_DEFINITIONS["promoted"]


def test_promoted_counts_a_champion_moved_by_plain_mlflow_calls(tmp_path):
    from mlflow import MlflowClient

    from usina.tracking.mlflow import model_kpis

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    since = time.time() - 1
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("fraud")
    for _ in range(3):
        client.create_model_version("fraud", source=str(tmp_path / "model"))
    client.set_registered_model_alias("fraud", "champion", "2")  # no gate, no usina
    [model] = model_kpis(tracking_uri=uri, since=since)
    assert model["new_versions"] == 3
    assert model["champion"] == "2"
    assert model["promoted"] == 1


def test_the_kpi_table_shows_idle_gpu_hours_per_step():
    from rich.console import Console

    from usina.cli.display import kpi_table

    world = _world()
    report = compute_kpis(world.metadata, since=0, until=time.time() * 2, artifacts=world.artifacts)
    console = Console(width=200, record=True)
    console.print(kpi_table(report, "7d"))
    text = console.export_text()
    assert "GPU-hours idle (of profiled)" in text
    assert "(50.0%)" in text
    assert "idle in fraud / train / fit" in text
    assert "idle in fraud / train / eval" not in text  # not profiled: never called idle


def test_the_docs_define_every_kpi():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "docs" / "howto" / "profiles.md").read_text()
    section = readme.split("**What each KPI counts**", 1)[1]
    flat = " ".join(section.split())
    for name, text in KPI_DEFINITIONS.items():
        assert f"**{name}**: {' '.join(text.split())}" in flat, name


def test_the_kpis_are_explained_in_portuguese_too():
    from usina.i18n import translate

    english = explain_kpis()
    portuguese = explain_kpis(lambda text: translate(text, "pt-BR"))
    assert english.count("\n") == portuguese.count("\n") == len(KPI_DEFINITIONS) - 1
    assert "taxa de sucesso: bem-sucedidas / (bem-sucedidas + com falha)" in portuguese
    assert not set(english.splitlines()) & set(portuguese.splitlines())  # every line translated
