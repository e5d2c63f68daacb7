"""Bad data fails validation with every problem listed, each with its first offending rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from examples.fraud import data
from examples.fraud import pipeline as fraud_pipeline
from examples.fraud.validate import DataValidationError, read, validate


@pytest.fixture(scope="module")
def good() -> pl.DataFrame:
    return data.generate(rows=3_000, seed=2)


def _fails(df: pl.DataFrame) -> str:
    with pytest.raises(DataValidationError) as info:
        validate(df)
    message = str(info.value)
    print(message)
    return message


def test_good_data_passes(good: pl.DataFrame) -> None:
    assert validate(good).height == good.height


def test_missing_column_is_named(good: pl.DataFrame) -> None:
    message = _fails(good.drop("amount", "card_id"))
    assert "[missing_column]" in message
    assert "missing column(s): card_id, amount (expected" in message


def test_negative_amounts_list_the_first_offending_rows(good: pl.DataFrame) -> None:
    bad = good.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([7, 9, 300]))
        .then(-pl.col("amount"))
        .otherwise(pl.col("amount"))
        .alias("amount")
    )
    message = _fails(bad)
    assert "[negative_amount] 3 row(s) have a negative amount" in message
    assert "'row': 7" in message
    assert good["transaction_id"][7] in message
    assert good["transaction_id"][300] in message


def test_unparsable_timestamps_from_csv_are_listed(good: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    good.head(50).with_columns(
        pl.col("timestamp").cast(pl.String),
    ).with_columns(
        pl.when(pl.int_range(pl.len()) == 4)
        .then(pl.lit("31/02/2024 25:61"))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    ).write_csv(path)
    raw = read(path)
    assert raw["timestamp"].dtype == pl.String
    message = _fails(raw)
    assert "[unparsable_datetime] column 'timestamp' has 1 value(s)" in message
    assert "31/02/2024 25:61" in message
    assert "'row': 4" in message
    # The rest of that file is fine: parsed from text to the right types.
    ok = validate(read(path).filter(pl.int_range(pl.len()) != 4))
    assert ok["timestamp"].dtype == pl.Datetime("us")
    assert ok["amount"].dtype == pl.Float64


def test_empty_file_and_header_only_file(good: pl.DataFrame, tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    assert "[empty]" in _fails(read(empty))
    header = tmp_path / "header.csv"
    good.head(0).write_csv(header)
    assert "[empty]" in _fails(read(header))


def test_all_problems_are_reported_at_once(good: pl.DataFrame) -> None:
    bad = good.drop("mcc").with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(-5.0).otherwise(pl.col("amount")).alias("amount"),
        pl.when(pl.int_range(pl.len()) == 2)
        .then(pl.lit("boleto"))
        .otherwise(pl.col("payment_method"))
        .alias("payment_method"),
        pl.when(pl.int_range(pl.len()) == 3)
        .then(None)
        .otherwise(pl.col("card_id"))
        .alias("card_id"),
    )
    with pytest.raises(DataValidationError) as info:
        validate(bad)
    checks = {p.check for p in info.value.problems}
    assert {"missing_column", "negative_amount", "unknown_payment_method", "null_card_id"} <= (
        checks
    )
    assert "4 problem(s)" in str(info.value)


def test_the_validate_step_raises_a_value_error(good: pl.DataFrame) -> None:
    """In a run this exception is the step's traceback: the attempt fails as user_error."""
    with pytest.raises(ValueError, match="negative amount"):
        fraud_pipeline.validate.fn(good.with_columns(pl.lit(-1.0).alias("amount")))
