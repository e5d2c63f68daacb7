"""Schema and data-quality checks for transaction tables, before any feature is computed.

``problems(df)`` lists everything wrong (it does not stop at the first problem), each with the
first offending rows; ``validate(df)`` returns the table with its timestamps parsed, or raises
``DataValidationError`` whose message lists every problem. In a pipeline that failure is the
user's data, not the platform: the step fails with a traceback naming what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

# column -> the kind of value it holds
SCHEMA: dict[str, str] = {
    "transaction_id": "string",
    "timestamp": "datetime",
    "merchant_id": "string",
    "mcc": "integer",
    "state": "string",
    "city": "string",
    "merchant_size": "string",
    "customer_id": "string",
    "card_id": "string",
    "bin": "string",
    "issuer": "string",
    "card_state": "string",
    "payment_method": "string",
    "installments": "integer",
    "amount": "number",
    "channel": "string",
    "device_id": "string",
    "ip_id": "string",
    "chargeback_at": "datetime",
}
NULLABLE = {"device_id", "ip_id", "chargeback_at"}
METHODS = ("credit", "debit", "pix")
CHANNELS = ("pos", "ecommerce")
SHOW_ROWS = 5  # offending rows quoted per problem


class DataValidationError(ValueError):
    """The data failed validation; ``problems`` holds each finding."""

    def __init__(self, problems: list[Problem], rows: int) -> None:
        self.problems = problems
        lines = [f"transaction data failed validation ({len(problems)} problem(s), {rows} rows):"]
        lines += [f"  - {p}" for p in problems]
        lines.append("fix the data (or the generator) and run the pipeline again")
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class Problem:
    check: str  # "missing_column", "negative_amount", ...
    message: str
    count: int = 0  # offending rows (0 when the problem is not about rows)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the first offending rows

    def __str__(self) -> str:
        text = f"[{self.check}] {self.message}"
        if self.rows:
            text += f"; first offending rows: {self.rows}"
        return text


def read(path: str | Path) -> pl.DataFrame:
    """Read Parquet or CSV; an empty (0-byte) file reads as a table with no rows or columns."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no transaction file at {p}")
    if p.stat().st_size == 0:
        return pl.DataFrame()
    if p.suffix.lower() == ".csv":
        return pl.read_csv(p, infer_schema_length=0)  # every column as text; validate parses
    return pl.read_parquet(p)


def _rows(
    df: pl.DataFrame, mask: pl.Series, columns: list[str]
) -> tuple[int, list[dict[str, Any]]]:
    """How many rows match, and the first few, with their row number and the given columns."""
    idx = df.with_row_index("row").filter(mask)
    keep = ["row", *[c for c in ("transaction_id", *columns) if c in df.columns]]
    keep = list(dict.fromkeys(keep))
    return idx.height, idx.head(SHOW_ROWS).select(keep).to_dicts()


def _as_datetime(series: pl.Series) -> pl.Series:
    if series.dtype == pl.Datetime or isinstance(series.dtype, pl.Datetime):
        return series
    if series.dtype == pl.Date:
        return series.cast(pl.Datetime("us"))
    return series.cast(pl.String).str.to_datetime(strict=False, time_unit="us")


def _as_number(series: pl.Series, kind: str) -> pl.Series:
    target = pl.Int64 if kind == "integer" else pl.Float64
    if series.dtype.is_numeric():
        return series.cast(target, strict=False)
    return series.cast(pl.String).cast(target, strict=False)


def _parse(df: pl.DataFrame) -> tuple[pl.DataFrame, list[Problem]]:
    """The table with each known column converted to its kind, and the values that did not."""
    problems: list[Problem] = []
    converted: dict[str, pl.Series] = {}
    for column, kind in SCHEMA.items():
        if column not in df.columns:
            continue
        raw = df[column]
        if raw.dtype == pl.String:  # blank text is a missing value, not a malformed one
            raw = df.select(
                pl.when(pl.col(column).str.strip_chars() == "")
                .then(None)
                .otherwise(pl.col(column).str.strip_chars())
            ).to_series()
        if column not in NULLABLE and raw.is_null().any():
            count, rows = _rows(df, raw.is_null(), [column])
            problems.append(
                Problem(f"null_{column}", f"{count} row(s) have no '{column}'", count, rows)
            )
        if kind == "datetime":
            value = _as_datetime(raw)
        elif kind in ("integer", "number"):
            value = _as_number(raw, kind)
        else:
            value = raw.cast(pl.String)
        bad = value.is_null() & raw.is_not_null()
        if bad.any():
            count, rows = _rows(df, bad, [column])
            problems.append(
                Problem(
                    f"unparsable_{kind}",
                    f"column '{column}' has {count} value(s) that are not a valid {kind}",
                    count,
                    rows,
                )
            )
        converted[column] = value.alias(column)
    return df.with_columns(list(converted.values())), problems


def problems(df: pl.DataFrame) -> tuple[pl.DataFrame, list[Problem]]:
    """Every problem found in ``df``, and the table with its columns parsed to their kinds."""
    if df.width == 0 or df.height == 0:
        return df, [Problem("empty", "the table has no rows (empty file or no data)")]
    found: list[Problem] = []
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        found.append(
            Problem(
                "missing_column",
                f"missing column(s): {', '.join(missing)} (expected: {', '.join(SCHEMA)})",
            )
        )
    parsed, parse_problems = _parse(df)
    found += parse_problems

    def check(name: str, mask: pl.Expr, message: str, columns: list[str]) -> None:
        if not all(c in parsed.columns for c in columns):
            return
        hits = parsed.select(mask.fill_null(False).alias("x"))["x"]
        if hits.any():
            count, rows = _rows(parsed, hits, columns)
            found.append(Problem(name, f"{count} row(s) {message}", count, rows))

    check("negative_amount", pl.col("amount") < 0, "have a negative amount", ["amount"])
    check("zero_amount", pl.col("amount") == 0, "have a zero amount", ["amount"])
    check(
        "unknown_payment_method",
        ~pl.col("payment_method").is_in(METHODS),
        f"have a payment_method other than {', '.join(METHODS)}",
        ["payment_method"],
    )
    check(
        "unknown_channel",
        ~pl.col("channel").is_in(CHANNELS),
        f"have a channel other than {', '.join(CHANNELS)}",
        ["channel"],
    )
    check(
        "bad_installments",
        (pl.col("installments") < 1) | (pl.col("installments") > 12),
        "have installments outside 1..12",
        ["installments"],
    )
    check(
        "installments_without_credit",
        (pl.col("installments") > 1) & (pl.col("payment_method") != "credit"),
        "are split in installments but not paid by credit",
        ["payment_method", "installments"],
    )
    check(
        "chargeback_before_sale",
        pl.col("chargeback_at") < pl.col("timestamp"),
        "have a chargeback before the sale",
        ["timestamp", "chargeback_at"],
    )
    if "transaction_id" in parsed.columns:
        check(
            "duplicate_transaction_id",
            pl.col("transaction_id").is_duplicated() & pl.col("transaction_id").is_not_null(),
            "share a transaction_id with another row",
            ["transaction_id"],
        )
    return parsed, found


def validate(df: pl.DataFrame) -> pl.DataFrame:
    """The table, parsed and ready for features; raises ``DataValidationError`` listing all."""
    parsed, found = problems(df)
    if found:
        raise DataValidationError(found, df.height)
    return parsed.select(*SCHEMA, *[c for c in parsed.columns if c not in SCHEMA]).with_columns(
        pl.col("installments").cast(pl.Int8), pl.col("mcc").cast(pl.Int16)
    )
