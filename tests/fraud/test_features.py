"""Point-in-time correctness: a row's features only use strictly earlier transactions."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from examples.fraud import data, features

T0 = datetime(2024, 3, 1, 10, 0, 0)


def _tx(i: int, at: datetime, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "transaction_id": f"tx{i:04d}",
        "timestamp": at,
        "merchant_id": "m001",
        "mcc": 5411,
        "state": "SP",
        "city": "São Paulo",
        "merchant_size": "medium",
        "customer_id": "c1",
        "card_id": "k1",
        "bin": "516292",
        "issuer": "Nubank",
        "card_state": "SP",
        "payment_method": "credit",
        "installments": 1,
        "amount": 100.0,
        "channel": "pos",
        "device_id": None,
        "ip_id": None,
        "chargeback_at": None,
        "is_fraud": False,
        "fraud_pattern": "legit",
    }
    row.update(kw)
    return row


def _frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us")),
        pl.col("chargeback_at").cast(pl.Datetime("us")),
        pl.col("installments").cast(pl.Int8),
        pl.col("mcc").cast(pl.Int16),
        pl.col("device_id").cast(pl.String),
        pl.col("ip_id").cast(pl.String),
    )


HISTORY = [
    _tx(1, T0 - timedelta(days=3), amount=80.0),
    _tx(2, T0 - timedelta(hours=5), amount=120.0, merchant_id="m002"),
    _tx(3, T0, amount=90.0, channel="ecommerce", device_id="d-phone", ip_id="ip-home"),
]
# What happens to the same card afterwards: a card-testing burst across merchants, a purchase
# in a far state, a new device, a big amount, and one more sale at the very same instant.
LATER = [
    _tx(10, T0, amount=5000.0, merchant_id="m009", state="AM", channel="pos"),
    *[
        _tx(
            20 + k,
            T0 + timedelta(minutes=2 + k),
            amount=3.0,
            merchant_id=f"m1{k:02d}",
            channel="ecommerce",
            device_id="d-fraud",
            ip_id="ip-fraud",
        )
        for k in range(8)
    ],
    _tx(40, T0 + timedelta(minutes=20), amount=9000.0, state="RR", merchant_id="m050"),
]


def _row(df: pl.DataFrame, tx: str) -> dict[str, object]:
    return df.filter(pl.col("transaction_id") == tx).select(features.FEATURES).row(0, named=True)


def test_later_transactions_do_not_change_an_earlier_rows_features() -> None:
    before = features.build(_frame(HISTORY))
    after = features.build(_frame(HISTORY + LATER))
    assert _row(after, "tx0003") == _row(before, "tx0003")
    row = _row(after, "tx0003")
    assert row["card_count_24h"] == 1
    assert row["card_count_7d"] == 2
    assert row["card_history"] == 2
    assert row["amount_to_card_mean"] == pytest.approx(90.0 / 100.0)
    assert row["new_device"] == 1  # first time this phone is seen on the card
    assert row["card_states_1h"] == 0
    assert row["speed_kmh"] == 0.0


def test_the_later_rows_do_see_the_earlier_ones() -> None:
    after = features.build(_frame(HISTORY + LATER))
    last_probe = _row(after, "tx0027")
    assert last_probe["card_count_1h"] == 9  # tx 3, tx 10 and the 7 earlier probes
    assert last_probe["card_merchants_1h"] == 9
    assert last_probe["card_small_1h"] == 7
    assert last_probe["new_device"] == 0  # d-fraud was first seen at tx 20
    assert _row(after, "tx0020")["new_device"] == 1
    far = _row(after, "tx0040")
    assert far["km_from_prev"] > 1000
    assert far["speed_kmh"] > 1000
    assert far["card_states_1h"] == 2  # SP and AM


def test_same_instant_transactions_do_not_see_each_other() -> None:
    after = features.build(_frame(HISTORY + LATER))
    for tx in ("tx0003", "tx0010"):
        row = _row(after, tx)
        assert row["card_count_1h"] == 0
        assert row["card_history"] == 2
        assert row["seconds_since_prev"] == 5 * 3600


def test_features_of_a_prefix_equal_features_computed_on_the_full_history() -> None:
    full = data.generate(rows=8_000, seed=3)
    built = features.build(full)
    for cutoff in (full["timestamp"][2_000], full["timestamp"][6_000]):
        prefix = features.build(full.filter(pl.col("timestamp") <= cutoff))
        assert_frame_equal(
            built.filter(pl.col("timestamp") <= cutoff).select(features.FEATURES),
            prefix.select(features.FEATURES),
        )


def test_one_row_per_transaction_in_input_order() -> None:
    df = data.generate(rows=5_000, seed=5).sample(fraction=1.0, shuffle=True, seed=1)
    built = features.build(df)
    assert built["transaction_id"].to_list() == df["transaction_id"].to_list()
    assert set(features.FEATURES) <= set(built.columns)
