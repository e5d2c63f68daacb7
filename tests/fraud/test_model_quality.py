"""On the default demo size the patterns are learnable but not leaked.

The model's PR-AUC on the out-of-time test must be clearly above a baseline that sees the
amount alone (a LightGBM on that one column, stronger than ranking by raw amount), and below
0.99 (near-perfect would mean a label leaked into a feature).
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from examples.fraud import data, features, metrics, model, split


def test_pr_auc_beats_an_amount_only_baseline_and_is_not_leaked() -> None:
    began = time.perf_counter()
    raw = data.generate()  # the demo size
    generated = time.perf_counter()
    table = features.build(raw)
    featured = time.perf_counter()
    train, valid, test = split.split(table, split.boundaries(table))
    booster = model.train(train, valid, model.Hyperparameters())
    trained = time.perf_counter()

    y = test["label"].to_numpy()
    pr_auc = metrics.pr_auc(y, model.score(booster, test))

    def amount_only(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(pl.lit(0.0).alias(c) for c in features.FEATURES if c != "amount")

    baseline_model = model.train(amount_only(train), amount_only(valid), model.Hyperparameters())
    baseline = metrics.pr_auc(y, model.score(baseline_model, amount_only(test)))
    raw_amount = metrics.pr_auc(y, test["amount"].to_numpy())

    print(
        f"\nrows={raw.height:,} test={test.height:,} fraud in test={int(y.sum())}"
        f"\nPR-AUC model={pr_auc:.4f}  amount-only LightGBM={baseline:.4f}  "
        f"raw amount={raw_amount:.4f}"
        f"\ngenerate={generated - began:.1f}s features={featured - generated:.1f}s "
        f"train={trained - featured:.1f}s (best iteration {booster.best_iteration})"
    )
    assert pr_auc > baseline + 0.3
    assert pr_auc > 2 * baseline
    assert pr_auc < 0.99
    assert np.isfinite(raw_amount)
