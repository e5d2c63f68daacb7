"""The synthetic generator: deterministic by seed, ~1.5 % fraud, the four patterns present."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from examples.fraud import data
from examples.fraud.validate import problems

ROWS = 40_000


@pytest.fixture(scope="module")
def df() -> pl.DataFrame:
    return data.generate(rows=ROWS, seed=11)


def test_same_seed_same_data_other_seed_other_data(df: pl.DataFrame) -> None:
    assert data.generate(rows=ROWS, seed=11).equals(df)
    assert not data.generate(rows=ROWS, seed=12).equals(df)


def test_shape_schema_and_own_validation(df: pl.DataFrame) -> None:
    assert df.height == ROWS
    assert df["transaction_id"].is_unique().all()
    assert df["timestamp"].is_sorted()
    _, found = problems(df)
    assert found == []
    assert set(df["payment_method"].unique()) == {"credit", "debit", "pix"}
    assert set(df["channel"].unique()) == {"pos", "ecommerce"}
    assert df.filter(pl.col("payment_method") != "credit")["installments"].max() == 1
    assert df["installments"].min() == 1
    assert df["installments"].max() == 12
    assert df["state"].n_unique() > 20


def test_fraud_rate_between_one_and_two_percent(df: pl.DataFrame) -> None:
    rate = df["is_fraud"].mean()
    assert isinstance(rate, float)
    assert 0.01 <= rate <= 0.02
    patterns = set(df.filter("is_fraud")["fraud_pattern"].unique())
    assert patterns == {"card_testing", "account_takeover", "merchant_collusion",
                        "impossible_travel"}  # fmt: skip


def test_amounts_are_log_normal_per_mcc(df: pl.DataFrame) -> None:
    legit = df.filter(~pl.col("is_fraud"))
    by_mcc = legit.group_by("mcc").agg(pl.col("amount").log().median().alias("m"))
    medians = dict(zip(by_mcc["mcc"], by_mcc["m"], strict=True))
    assert np.exp(medians[5732]) > 5 * np.exp(medians[5814])  # electronics vs fast food
    assert (df["amount"] > 0).all()


def test_daily_and_weekly_seasonality(df: pl.DataFrame) -> None:
    legit = df.filter(~pl.col("is_fraud"))
    hours = legit["timestamp"].dt.hour().value_counts().sort("timestamp")
    count = dict(zip(hours["timestamp"], hours["count"], strict=True))
    assert count[12] > 10 * count[3]
    days = legit["timestamp"].dt.weekday().value_counts()
    per_day = dict(zip(days["timestamp"], days["count"], strict=True))
    assert per_day[5] > per_day[7]  # Friday busier than Sunday


def test_card_testing_is_bursts_of_tiny_amounts_across_merchants(df: pl.DataFrame) -> None:
    bursts = (
        df.filter(pl.col("fraud_pattern") == "card_testing")
        .group_by("card_id", "device_id")
        .agg(
            pl.len().alias("n"),
            pl.col("merchant_id").n_unique().alias("merchants"),
            (pl.col("timestamp").max() - pl.col("timestamp").min()).alias("span"),
            (pl.col("amount") < 15).mean().alias("tiny"),
        )
    )
    assert bursts["n"].median() >= 6
    assert bursts["merchants"].median() >= 5
    assert bursts["span"].median() < timedelta(hours=1)
    assert bursts["tiny"].mean() > 0.8


def test_account_takeover_is_new_device_odd_hour_high_amount(df: pl.DataFrame) -> None:
    ato = df.filter(pl.col("fraud_pattern") == "account_takeover")
    legit = df.filter(~pl.col("is_fraud"))
    assert ato["amount"].median() > 5 * legit["amount"].median()
    assert (ato["timestamp"].dt.hour() < 6).mean() > 0.5
    known = set(legit["device_id"].drop_nulls())
    assert not any(d in known for d in ato["device_id"].to_list())


def test_merchant_collusion_concentrates_on_few_merchants(df: pl.DataFrame) -> None:
    coll = df.filter(pl.col("fraud_pattern") == "merchant_collusion")
    per_merchant = coll.group_by("merchant_id").len()
    assert per_merchant.height <= 10
    assert per_merchant["len"].min() >= 20
    assert coll["card_id"].n_unique() > 0.8 * coll.height
    assert (coll["installments"] >= 6).all()


def test_impossible_travel_is_a_far_state_minutes_after_home(df: pl.DataFrame) -> None:
    states = {s[0]: i for i, s in enumerate(data.STATES)}
    ordered = df.sort("card_id", "timestamp").with_columns(
        pl.col("state").shift(1).over("card_id").alias("prev_state"),
        pl.col("timestamp").shift(1).over("card_id").alias("prev_ts"),
    )
    travel = ordered.filter(
        (pl.col("fraud_pattern") == "impossible_travel") & pl.col("prev_state").is_not_null()
    )
    km = data.distance_km(
        np.array([states[s] for s in travel["state"]]),
        np.array([states[s] for s in travel["prev_state"]]),
    )
    minutes = (travel["timestamp"] - travel["prev_ts"]).dt.total_minutes().to_numpy()
    assert travel.height > 0.9 * df.filter(pl.col("fraud_pattern") == "impossible_travel").height
    fast_far = (km > 1000) & (minutes < 120)
    assert fast_far.mean() > 0.5
    assert (travel["channel"] == "pos").all()


def test_chargebacks_arrive_late_and_labels_depend_on_the_cutoff(df: pl.DataFrame) -> None:
    cb = df.filter(pl.col("chargeback_at").is_not_null())
    delay = (cb["chargeback_at"] - cb["timestamp"]).dt.total_days()
    assert delay.min() >= 2
    assert delay.median() > 7
    fraud = df.filter("is_fraud")
    assert 0.9 < fraud["chargeback_at"].is_not_null().mean() < 1.0  # some never disputed
    assert df.filter(~pl.col("is_fraud"))["chargeback_at"].is_not_null().sum() > 0  # disputes
    end = df["timestamp"].max()
    assert isinstance(end, datetime)
    early = data.label_at(df, end).sum()
    late = data.label_at(df, end + timedelta(days=120)).sum()
    assert early < late == cb.height


def test_rejects_too_few_rows() -> None:
    with pytest.raises(ValueError, match="at least 1000"):
        data.generate(rows=10)
