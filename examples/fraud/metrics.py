"""Evaluation of a fraud score: ranking, operating point, money, and calibration.

Every metric is computed overall and per payment method (credit, debit, PIX behave
differently: PIX is instant and irrevocable, credit has chargebacks and parcelas).

- ``roc_auc``, ``pr_auc`` (average precision: the ranking metric that matters when fraud is
  ~1 % of rows);
- ``recall_at_1pct_fpr``: share of fraud caught while declining at most 1 % of good sales;
- ``precision_at_k``: share of fraud among the ``k`` highest scores (a review queue of size k);
- ``expected_cost``: fraud losses let through plus friction on good customers declined, in R$,
  at a decision threshold chosen on validation data (``best_threshold``), and ``cost_saved``,
  the share of the no-model cost (approve everything) that the model saves;
- ``brier`` and ``ece`` (expected calibration error over 10 equal-width bins).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

DEFAULT_FRICTION = 15.0  # R$ lost per good sale declined (margin, support, churn risk)


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01) -> float:
    fpr, tpr, _ = roc_curve(y, score)
    ok = fpr <= max_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def precision_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float:
    k = max(1, min(k, y.size))
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].mean())


def cost(
    y: np.ndarray, score: np.ndarray, amount: np.ndarray, threshold: float, friction: float
) -> float:
    """Fraud amount approved (score < threshold) + friction x good sales declined."""
    declined = score >= threshold
    missed = float(amount[(y == 1) & ~declined].sum())
    return missed + friction * float(((y == 0) & declined).sum())


def best_threshold(
    y: np.ndarray, score: np.ndarray, amount: np.ndarray, friction: float = DEFAULT_FRICTION
) -> float:
    """The threshold that minimises ``cost`` on these rows (use validation data)."""
    order = np.argsort(-score, kind="stable")
    s, yy, a = score[order], y[order], amount[order]
    # Declining the top i rows: caught fraud amount and declined good sales so far.
    caught = np.concatenate([[0.0], np.cumsum(a * (yy == 1))])
    goods = np.concatenate([[0.0], np.cumsum(yy == 0)])
    total = cost(y, score, amount, math.inf, friction)
    costs = total - caught + friction * goods
    # Only cut between distinct scores.
    cut_ok = np.concatenate([[True], s[1:] != s[:-1], [True]])
    costs = np.where(cut_ok, costs, np.inf)
    i = int(np.argmin(costs))
    return math.inf if i == 0 else float(s[i - 1])


def calibration(y: np.ndarray, score: np.ndarray, bins: int = 10) -> tuple[float, float]:
    """(Brier score, expected calibration error)."""
    brier = float(np.mean((score - y) ** 2))
    idx = np.minimum((score * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(float(score[mask].mean()) - float(y[mask].mean()))
    return brier, float(ece)


def summary(
    y: np.ndarray,
    score: np.ndarray,
    amount: np.ndarray,
    *,
    threshold: float,
    friction: float = DEFAULT_FRICTION,
    k_frac: float = 0.005,
) -> dict[str, float]:
    """All metrics on one set of rows; ranking metrics are NaN when only one class is present."""
    y = np.asarray(y).astype(int)
    two_classes = 0 < y.sum() < y.size
    brier, ece = calibration(y, score)
    no_model = float(amount[y == 1].sum())
    spent = cost(y, score, amount, threshold, friction)
    return {
        "rows": float(y.size),
        "fraud_rate": float(y.mean()) if y.size else math.nan,
        "roc_auc": float(roc_auc_score(y, score)) if two_classes else math.nan,
        "pr_auc": float(average_precision_score(y, score)) if two_classes else math.nan,
        "recall_at_1pct_fpr": recall_at_fpr(y, score) if two_classes else math.nan,
        "precision_at_k": precision_at_k(y, score, max(1, round(k_frac * y.size))),
        "expected_cost": spent,
        "cost_no_model": no_model,
        "cost_saved": 1.0 - spent / no_model if no_model > 0 else math.nan,
        "decline_rate": float((score >= threshold).mean()),
        "brier": brier,
        "ece": ece,
    }


def report(
    y: np.ndarray,
    score: np.ndarray,
    amount: np.ndarray,
    method: np.ndarray,
    *,
    threshold: float,
    friction: float = DEFAULT_FRICTION,
) -> dict[str, Any]:
    """``{"overall": {...}, "by_method": {"credit": {...}, ...}, "threshold": t}``."""
    by_method = {}
    for name in sorted(set(method.tolist())):
        mask = method == name
        by_method[str(name)] = summary(
            y[mask], score[mask], amount[mask], threshold=threshold, friction=friction
        )
    return {
        "overall": summary(y, score, amount, threshold=threshold, friction=friction),
        "by_method": by_method,
        "threshold": threshold,
        "friction": friction,
    }


def flatten(rep: dict[str, Any]) -> dict[str, float]:
    """``{"pr_auc": .., "credit.pr_auc": .., ...}`` with only finite numbers (for trackers)."""
    out: dict[str, float] = {}
    for key, value in rep["overall"].items():
        out[key] = value
    for method, values in rep["by_method"].items():
        for key, value in values.items():
            out[f"{method}.{key}"] = value
    if math.isfinite(rep["threshold"]):
        out["threshold"] = rep["threshold"]
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def pr_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision; the gate metric of the model registry."""
    return float(average_precision_score(np.asarray(y).astype(int), score))


def jsonable(value: Any) -> Any:
    """The report with non-finite numbers (NaN, inf) as None, so it is valid JSON."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
