"""The alert rules file is valid Prometheus, and each alert fires (and stays silent) as its
promtool unit tests say (tests/monitoring/rules_test.yaml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.monitoring.support import PROMTOOL, binary

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "deploy/helm/usina/files/prometheus-rules.yaml"
ALERTS = {
    "UsinaPipelineFailureRateHigh",
    "UsinaStepsStuckPending",
    "UsinaWastedGpuShareHigh",
    "UsinaPipelineMetricsDown",
    "UsinaEndpointErrorRateHigh",
    "UsinaEndpointLatencyObjective",
    "UsinaFeatureDrift",
    "UsinaScoreDrift",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary(PROMTOOL), *args], cwd=HERE, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_rules_file():
    res = _promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in res.stdout


def test_every_alert_has_a_unit_test_that_passes():
    tests = (HERE / "rules_test.yaml").read_text()
    for alert in ALERTS:
        assert f"alertname: {alert}" in tests, f"{alert} has no promtool unit test"
    rules = RULES.read_text()
    assert {line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line} == (
        ALERTS
    )
    res = _promtool("test", "rules", "rules_test.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_a_wrong_expectation_fails(tmp_path):
    """The unit tests can fail: the drift alert expected silent while the feature drifts."""
    broken = (
        (HERE / "rules_test.yaml")
        .read_text()
        .replace(
            "      - eval_time: 20m\n        alertname: UsinaFeatureDrift\n        exp_alerts:\n",
            "      - eval_time: 20m\n        alertname: UsinaFeatureDrift\n        exp_alerts: []\n"
            "      - eval_time: 21m\n        alertname: UsinaFeatureDrift\n        exp_alerts:\n",
            1,
        )
    )
    broken = broken.replace("../../deploy/", f"{HERE.parents[1]}/deploy/")
    path = tmp_path / "broken_test.yaml"
    path.write_text(broken)
    res = _promtool("test", "rules", str(path))
    assert res.returncode != 0
    assert "UsinaFeatureDrift" in res.stdout + res.stderr
