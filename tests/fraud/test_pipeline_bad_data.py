"""Bad data fails ``validate`` through the real engine: the attempt is a ``user_error`` whose
evidence lists what is wrong and the first offending rows; nothing crashes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from examples.fraud import data as gen
from tests.integration.cli_helpers import Usina

REPO = Path(__file__).resolve().parents[2]
PIPELINE = str(REPO / "examples" / "fraud" / "pipeline.py")


def _good(rows: int = 1000) -> pl.DataFrame:
    return gen.generate(gen.GeneratorConfig(rows=rows, seed=3))


def _negative(path: Path) -> list[str]:
    df = _good().with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(-12.5).otherwise(pl.col("amount")).alias("amount")
    )
    df.write_parquet(path)
    return ["negative", "-12.5"]


def _missing(path: Path) -> list[str]:
    _good().drop("merchant_id").write_parquet(path)
    return ["merchant_id"]


def _timestamps(path: Path) -> list[str]:
    df = _good().with_columns(pl.col("timestamp").cast(pl.String))
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("yesterday-ish"))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    )
    df.write_csv(path)
    return ["timestamp", "yesterday-ish"]


def _empty(path: Path) -> list[str]:
    path.write_bytes(b"")
    return ["empty", "no rows"]


@pytest.mark.parametrize(
    ("maker", "suffix"),
    [(_negative, ".parquet"), (_missing, ".parquet"), (_timestamps, ".csv"), (_empty, ".csv")],
    ids=["negative-amounts", "missing-column", "unparsable-timestamps", "empty-file"],
)
def test_bad_data_fails_validate_as_a_user_error(tmp_path, maker, suffix):
    source = tmp_path / f"transactions{suffix}"
    expected = maker(source)
    usina = Usina(tmp_path)
    res = usina(
        "run", PIPELINE, "-p", f"source={source}", "--no-tracking", "-o", "json", timeout=300
    )
    assert res.code == 1, res.out[-2000:] + res.err[-2000:]
    run = res.json()
    states = {s["node"]: s["state"] for s in run["steps"]}
    assert states["ingest"] == "succeeded"
    assert states["validate"] == "failed"
    assert states["register"] == "skipped"
    why = usina("runs", "why", run["id"], "-o", "json").json()
    [attempt] = why["failed_attempts"]
    assert attempt["node"] == "validate"
    assert attempt["failure_class"] == "user_error"
    message = attempt["message"].lower()
    assert "failed validation" in message
    for needle in expected:
        assert needle.lower() in message, (needle, attempt["message"][:2000])
