"""PSI per feature and for the score: a shifted feature goes above the alert threshold, the
unshifted ones stay below; the reference travels with the model version in MLflow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from usina.monitoring.drift import (
    PSI_ALERT,
    Distribution,
    DriftMetrics,
    DriftMonitor,
    DriftReference,
    psi,
)

N = 20_000


@pytest.fixture
def training():
    rng = np.random.default_rng(11)
    features = {
        "amount": rng.lognormal(3.0, 1.0, N),
        "hour": rng.uniform(0, 24, N),
        "card_age_days": rng.gamma(2.0, 200.0, N),
        "is_foreign": (rng.random(N) < 0.1).astype(float),
    }
    scores = rng.beta(1, 12, N)
    return features, scores


def _live(rng, n, shift_amount=False):
    amount = rng.lognormal(3.7 if shift_amount else 3.0, 1.0, n)
    return np.column_stack(
        [amount, rng.uniform(0, 24, n), rng.gamma(2.0, 200.0, n), (rng.random(n) < 0.1) * 1.0]
    )


def test_psi_by_hand():
    # reference split 50/50 at 0.5; live 80/20: (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5)
    ref = Distribution(edges=(0.5,), shares=(0.5, 0.5))
    live = [0.1] * 8 + [0.9] * 2
    expected = 0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5)
    assert psi(ref, live) == pytest.approx(expected)
    assert psi([0.1, 0.2, 0.7, 0.9], [0.1, 0.2, 0.7, 0.9], bins=2) == pytest.approx(0.0)
    assert psi([0.0, 1.0], [0.2, 0.8], bins=[0.5]) == pytest.approx(0.0)
    assert math.isnan(psi(ref, [float("nan")]))


def test_reference_is_quantile_binned_and_round_trips_as_json(training):
    features, scores = training
    ref = DriftReference.from_training(features, scores)
    amount = ref.distributions["amount"]
    assert len(amount.edges) == 9
    assert all(s == pytest.approx(0.1, abs=0.01) for s in amount.shares)
    # a binary feature gets few bins (its quantiles repeat), all of its rows in the first two
    binary = ref.distributions["is_foreign"]
    assert binary.edges == (0.0, 1.0)
    assert binary.shares[0] + binary.shares[1] == pytest.approx(1.0)
    again = DriftReference.from_json(ref.to_json())
    assert again == ref
    assert again.features == ("amount", "hour", "card_age_days", "is_foreign")


def test_shifted_feature_crosses_the_alert_and_the_others_do_not(training):
    features, scores = training
    ref = DriftReference.from_training(features, scores)
    registry = CollectorRegistry()
    metrics = DriftMetrics(registry)
    rng = np.random.default_rng(5)

    calm = DriftMonitor(ref, model="fraud", version="1", metrics=metrics, update_every=1000)
    for _ in range(5):
        calm.observe(_live(rng, 1000), rng.beta(1, 12, 1000))
    report = calm.report()
    assert report.rows == 5000
    assert report.drifted() == []
    assert max(report.features.values()) < PSI_ALERT
    assert report.score is not None
    assert report.score < PSI_ALERT

    shifted = DriftMonitor(ref, model="fraud", version="2", metrics=metrics, update_every=1000)
    for _ in range(5):
        shifted.observe(_live(rng, 1000, shift_amount=True), rng.beta(1, 12, 1000))
    report = shifted.report()
    assert report.drifted() == ["amount"]
    assert report.features["amount"] > PSI_ALERT
    for name in ("hour", "card_age_days", "is_foreign"):
        assert report.features[name] < PSI_ALERT

    def gauge(name, **labels):
        return registry.get_sample_value(name, labels)

    assert gauge("usina_drift_psi", model="fraud", version="2", feature="amount") > PSI_ALERT
    assert gauge("usina_drift_psi", model="fraud", version="1", feature="amount") < PSI_ALERT
    assert gauge("usina_drift_window_rows", model="fraud", version="2") == 5000
    shifted.retire()
    assert gauge("usina_drift_psi", model="fraud", version="2", feature="amount") is None


def test_window_slides_and_gauges_wait_for_min_rows(training):
    features, scores = training
    ref = DriftReference.from_training(features, scores)
    registry = CollectorRegistry()
    monitor = DriftMonitor(
        ref,
        model="m",
        version="1",
        metrics=DriftMetrics(registry),
        window=2000,
        min_rows=1000,
        update_every=100,
    )
    rng = np.random.default_rng(3)
    monitor.observe(_live(rng, 500, shift_amount=True))  # no scores: score PSI stays unset
    assert (
        registry.get_sample_value("usina_drift_window_rows", {"model": "m", "version": "1"}) == 500
    )
    labels = {"model": "m", "version": "1", "feature": "amount"}
    assert registry.get_sample_value("usina_drift_psi", labels) is None  # under min_rows
    monitor.observe(_live(rng, 1500, shift_amount=True))
    assert registry.get_sample_value("usina_drift_psi", labels) > PSI_ALERT
    # The window keeps the newest 2000 rows: unshifted traffic pushes the shift out.
    monitor.observe({n: c for n, c in zip(ref.features, _live(rng, 2000).T, strict=True)})
    assert registry.get_sample_value("usina_drift_psi", labels) < PSI_ALERT
    assert monitor.report().score is None
    with pytest.raises(ValueError, match="does not match the reference's 4 features"):
        monitor.observe(np.zeros((3, 2)))


# MLflow's SQLite store uses a loader option SQLAlchemy 2.1 deprecates (MLflow's code, not ours).
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_the_reference_is_stored_with_the_model_version(tmp_path, training):
    import mlflow

    from usina.tracking.mlflow import load_drift_reference, log_drift_reference

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("drift", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    features, scores = training
    ref = DriftReference.from_training(features, scores)
    log_drift_reference(ref.to_json(), run_id=run.info.run_id, tracking_uri=uri)
    client.create_registered_model("fraud")
    version = client.create_model_version(
        "fraud", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("fraud", "champion", version.version)
    for model_uri in (f"models:/fraud/{version.version}", "models:/fraud@champion"):
        loaded = load_drift_reference(model_uri, tracking_uri=uri)
        assert loaded is not None
        assert DriftReference.from_json(loaded) == ref
    other = client.create_run(exp)
    bare = client.create_model_version("fraud", "runs:/x/model", run_id=other.info.run_id)
    assert load_drift_reference(f"models:/fraud/{bare.version}", tracking_uri=uri) is None
