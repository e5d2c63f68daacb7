"""Point-in-time features: per-card and per-merchant velocity over 1h / 24h / 7d windows.

The rule, everywhere: a row's features use only transactions with a **strictly earlier
timestamp** than the row's own. Transactions at the very same instant are not "before" each
other (their order inside a second is arbitrary), so they never see one another. This is what
a scorer sees in production when it scores a transaction as it arrives, and it makes a row's
features independent of anything that happens at or after its timestamp:

- windows are polars ``rolling(..., closed="left")``: ``[t - period, t)``;
- history (count, mean amount) is the cumulative sum up to the first row of the row's
  timestamp group, so ties are excluded;
- "previous transaction" is an as-of join with ``allow_exact_matches=False``;
- "new device" means the device had never been seen on the card before this timestamp.

Labels (chargebacks) are not features; ``split`` derives them.
"""

from __future__ import annotations

import polars as pl

from examples.fraud.data import MCCS, STATES

WINDOWS = ("1h", "24h", "7d")
SMALL_AMOUNT = 15.0  # R$; card testers probe with amounts below this

CATEGORICAL = ["method_code", "channel_code", "mcc_code", "size_code"]
FEATURES = [
    "amount",
    "installments",
    "hour",
    "weekday",
    *CATEGORICAL,
    "away_from_home",
    *[f"card_{a}_{w}" for w in WINDOWS for a in ("count", "sum")],
    "card_merchants_1h",
    "card_merchants_24h",
    "card_states_1h",
    "card_states_24h",
    "card_small_1h",
    "card_history",
    "amount_to_card_mean",
    "seconds_since_prev",
    "km_from_prev",
    "speed_kmh",
    "new_device",
    "new_ip",
    "merchant_count_1h",
    "merchant_count_24h",
    "merchant_sum_24h",
    "merchant_cards_24h",
    "merchant_long_installments_7d",
    "merchant_history",
    "amount_to_merchant_mean",
]
# Carried along for splitting, labelling, per-method metrics and analysis; not model inputs.
KEYS = ["transaction_id", "timestamp", "card_id", "merchant_id", "payment_method"]
CARRIED = ["chargeback_at", "is_fraud", "fraud_pattern"]

_METHOD = {"credit": 0, "debit": 1, "pix": 2}
_CHANNEL = {"pos": 0, "ecommerce": 1}
_SIZE = {"small": 0, "medium": 1, "large": 2}
_MCC = {m[0]: i for i, m in enumerate(MCCS)}  # consecutive codes, as LightGBM wants
_LAT = {s[0]: s[2] for s in STATES}
_LON = {s[0]: s[3] for s in STATES}


def _windows(df: pl.DataFrame, by: str, aggs: dict[str, list[pl.Expr]]) -> pl.DataFrame:
    """Rolling aggregates over ``[t - period, t)`` per ``by``; ``df`` sorted by (by, ts, _row)."""
    out = df.select("_row")
    for period, exprs in aggs.items():
        rolled = df.rolling(
            index_column="timestamp", period=period, group_by=by, closed="left"
        ).agg(exprs)
        # rolling keeps the input's (sorted) row order; check it rather than trust it.
        if not rolled[by].equals(df[by]) or not rolled["timestamp"].equals(df["timestamp"]):
            raise RuntimeError("polars rolling changed the row order; cannot align features")
        out = out.hstack(rolled.drop(by, "timestamp"))
    return out


def _history(df: pl.DataFrame, by: str, prefix: str) -> pl.DataFrame:
    """Count and mean amount of the strictly earlier transactions per ``by``.

    ``df`` is sorted by (by, timestamp, _row): a row's position in its group counts the rows
    before it, and taking that at the first row of its timestamp group drops same-instant ties.
    """
    count, total = f"{prefix}_history", "_sum_before"
    return (
        df.select(
            "_row",
            by,
            "timestamp",
            pl.int_range(pl.len()).over(by).alias(count),
            (pl.col("amount").cum_sum() - pl.col("amount")).over(by).alias(total),
        )
        .with_columns(
            pl.col(count).first().over(by, "timestamp"),
            pl.col(total).first().over(by, "timestamp"),
        )
        .select(
            "_row",
            pl.col(count),
            pl.when(pl.col(count) > 0)
            .then(pl.col(total) / pl.col(count))
            .otherwise(None)
            .alias(f"_{prefix}_mean"),
        )
    )


def _first_seen(df: pl.DataFrame, column: str, name: str) -> pl.Expr:
    """1 when the card had not used this device/IP before this timestamp; 0 if none."""
    return (
        pl.when(pl.col(column).is_null())
        .then(0)
        .otherwise(
            (pl.col("timestamp") == pl.col("timestamp").min().over("card_id", column)).cast(pl.Int8)
        )
        .alias(name)
    )


def build(transactions: pl.DataFrame) -> pl.DataFrame:
    """One row of features per transaction, same order as the input."""
    df = transactions.with_row_index("_row").with_columns(
        pl.col("state").replace_strict(_LAT, default=None).alias("_lat"),
        pl.col("state").replace_strict(_LON, default=None).alias("_lon"),
    )

    by_card = df.sort("card_id", "timestamp", "_row")
    card = _windows(
        by_card,
        "card_id",
        {
            "1h": [
                pl.len().alias("card_count_1h"),
                pl.col("amount").sum().alias("card_sum_1h"),
                pl.col("merchant_id").n_unique().alias("card_merchants_1h"),
                pl.col("state").n_unique().alias("card_states_1h"),
                (pl.col("amount") < SMALL_AMOUNT).sum().alias("card_small_1h"),
            ],
            "24h": [
                pl.len().alias("card_count_24h"),
                pl.col("amount").sum().alias("card_sum_24h"),
                pl.col("merchant_id").n_unique().alias("card_merchants_24h"),
                pl.col("state").n_unique().alias("card_states_24h"),
            ],
            "7d": [
                pl.len().alias("card_count_7d"),
                pl.col("amount").sum().alias("card_sum_7d"),
            ],
        },
    )
    card_hist = _history(by_card, "card_id", "card")
    # The card's previous transaction: last one with a strictly earlier timestamp.
    prev = by_card.select(
        "card_id",
        pl.col("timestamp"),
        pl.col("timestamp").alias("_prev_ts"),
        pl.col("_lat").alias("_prev_lat"),
        pl.col("_lon").alias("_prev_lon"),
    )
    with_prev = by_card.select("_row", "card_id", "timestamp", "_lat", "_lon").join_asof(
        prev,
        on="timestamp",
        by="card_id",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    travel = with_prev.select(
        "_row",
        (pl.col("timestamp") - pl.col("_prev_ts")).dt.total_seconds().alias("seconds_since_prev"),
        _km("_lat", "_lon", "_prev_lat", "_prev_lon").alias("km_from_prev"),
    ).with_columns(
        (
            pl.col("km_from_prev") / (pl.max_horizontal(pl.col("seconds_since_prev"), 60) / 3600.0)
        ).alias("speed_kmh")
    )

    by_merchant = df.sort("merchant_id", "timestamp", "_row")
    merchant = _windows(
        by_merchant,
        "merchant_id",
        {
            "1h": [pl.len().alias("merchant_count_1h")],
            "24h": [
                pl.len().alias("merchant_count_24h"),
                pl.col("amount").sum().alias("merchant_sum_24h"),
                pl.col("card_id").n_unique().alias("merchant_cards_24h"),
            ],
            "7d": [
                (pl.col("installments") >= 10).mean().alias("merchant_long_installments_7d"),
            ],
        },
    )
    merchant_hist = _history(by_merchant, "merchant_id", "merchant")

    out = (
        df.join(card, on="_row")
        .join(card_hist, on="_row")
        .join(travel, on="_row")
        .join(merchant, on="_row")
        .join(merchant_hist, on="_row")
        .sort("_row")
    )
    return out.select(
        *KEYS,
        pl.col("amount"),
        pl.col("installments").cast(pl.Int32),
        pl.col("timestamp").dt.hour().cast(pl.Int32).alias("hour"),
        pl.col("timestamp").dt.weekday().cast(pl.Int32).alias("weekday"),
        pl.col("payment_method")
        .replace_strict(_METHOD, default=-1)
        .cast(pl.Int32)
        .alias("method_code"),
        pl.col("channel").replace_strict(_CHANNEL, default=-1).cast(pl.Int32).alias("channel_code"),
        pl.col("mcc").replace_strict(_MCC, default=-1).cast(pl.Int32).alias("mcc_code"),
        pl.col("merchant_size").replace_strict(_SIZE, default=-1).cast(pl.Int32).alias("size_code"),
        (pl.col("state") != pl.col("card_state")).cast(pl.Int8).alias("away_from_home"),
        *[pl.col(f"card_{a}_{w}") for w in WINDOWS for a in ("count", "sum")],
        "card_merchants_1h",
        "card_merchants_24h",
        "card_states_1h",
        "card_states_24h",
        "card_small_1h",
        "card_history",
        (pl.col("amount") / pl.col("_card_mean")).alias("amount_to_card_mean"),
        "seconds_since_prev",
        "km_from_prev",
        "speed_kmh",
        _first_seen(df, "device_id", "new_device"),
        _first_seen(df, "ip_id", "new_ip"),
        "merchant_count_1h",
        "merchant_count_24h",
        "merchant_sum_24h",
        "merchant_cards_24h",
        "merchant_long_installments_7d",
        "merchant_history",
        (pl.col("amount") / pl.col("_merchant_mean")).alias("amount_to_merchant_mean"),
        *[c for c in CARRIED if c in transactions.columns],
    ).with_columns(pl.col(c).cast(pl.Float64) for c in FEATURES if c not in CATEGORICAL)


def _km(lat1: str, lon1: str, lat2: str, lon2: str) -> pl.Expr:
    p1, p2 = pl.col(lat1).radians(), pl.col(lat2).radians()
    dlon = (pl.col(lon2) - pl.col(lon1)).radians()
    a = ((p2 - p1) / 2).sin() ** 2 + p1.cos() * p2.cos() * (dlon / 2).sin() ** 2
    return 2 * 6371.0 * a.clip(0.0, 1.0).sqrt().arcsin()
