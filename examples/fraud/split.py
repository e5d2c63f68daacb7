"""Split by time into train / validation / out-of-time test, and attach the known label.

Rows are assigned by timestamp, never at random: the validation window follows training and
the test window follows validation, as when a model trained on the past scores the future.
The label is what was known on ``label_cutoff``: a chargeback had arrived by then. Recent
transactions have had less time to be charged back, so their labels are less complete; pick a
cutoff a few weeks after the data ends (the default: 30 days) for a fair test window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from examples.fraud.data import label_expr


@dataclass(frozen=True, slots=True)
class TimeSplit:
    train_end: datetime  # train: timestamp < train_end
    valid_end: datetime  # validation: train_end <= timestamp < valid_end; test: the rest
    label_cutoff: datetime

    def to_json(self) -> dict[str, str]:
        return {k: getattr(self, k).isoformat() for k in ("train_end", "valid_end", "label_cutoff")}


def boundaries(
    df: pl.DataFrame,
    *,
    train_frac: float = 0.70,
    valid_frac: float = 0.15,
    label_delay_days: float = 30.0,
) -> TimeSplit:
    """Cut the covered period (not the row count) at the given fractions."""
    if not (0 < train_frac < 1 and 0 < valid_frac < 1 and train_frac + valid_frac < 1):
        raise ValueError(
            f"train_frac={train_frac} and valid_frac={valid_frac} must be in (0, 1) and sum "
            "to less than 1 (the rest is the out-of-time test)"
        )
    if df.is_empty():
        raise ValueError("cannot split an empty table")
    first = df["timestamp"].min()
    last = df["timestamp"].max()
    if not isinstance(first, datetime) or not isinstance(last, datetime):
        raise TypeError(f"column 'timestamp' must hold datetimes, not {df['timestamp'].dtype}")
    span = last - first
    return TimeSplit(
        train_end=first + span * train_frac,
        valid_end=first + span * (train_frac + valid_frac),
        label_cutoff=last + timedelta(days=label_delay_days),
    )


def with_label(df: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """Add ``label`` (Int8): 1 when the chargeback had arrived by ``cutoff``."""
    return df.with_columns(label_expr(cutoff))


def split(df: pl.DataFrame, when: TimeSplit) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(train, validation, test), each labelled as of ``when.label_cutoff``."""
    labelled = with_label(df, when.label_cutoff)
    ts = pl.col("timestamp")
    train = labelled.filter(ts < when.train_end)
    valid = labelled.filter((ts >= when.train_end) & (ts < when.valid_end))
    test = labelled.filter(ts >= when.valid_end)
    for name, part in (("train", train), ("validation", valid), ("test", test)):
        if part.is_empty() or part["label"].sum() == 0:
            raise ValueError(
                f"the {name} window has no labelled fraud ({part.height} rows); generate more "
                "data or move the split fractions"
            )
    return train, valid, test
