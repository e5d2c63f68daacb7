"""MLflow as usina's experiment tracker and model registry: the names pipelines and the CLI use.

The pieces live in their own modules: ``adapter`` (the only importer of mlflow), ``uri`` (where
MLflow lives by default), ``tracker`` (runs and steps as MLflow runs), ``flavours`` (the model
flavours logged, gated and served), ``registry`` (the promotion gate) and ``reports`` (drift
references and model KPIs). This module re-exports what users import.
"""

from __future__ import annotations

from usina.tracking.flavours import FLAVOURS, Flavour
from usina.tracking.registry import CHALLENGER, CHAMPION, PromotionDecision, register_model
from usina.tracking.reports import (
    DRIFT_REFERENCE,
    load_drift_reference,
    log_drift_reference,
    model_kpis,
)
from usina.tracking.tracker import MlflowTracker, ensure_experiment
from usina.tracking.uri import default_tracking_uri

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DRIFT_REFERENCE",
    "FLAVOURS",
    "Flavour",
    "MlflowTracker",
    "PromotionDecision",
    "default_tracking_uri",
    "ensure_experiment",
    "load_drift_reference",
    "log_drift_reference",
    "model_kpis",
    "register_model",
]
