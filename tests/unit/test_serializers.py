"""Serializers: round trips, the same bytes for the same value, and refusing pickle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from usina.errors import SerializationError
from usina.stores import serializers
from usina.stores.serializers import dump, dump_to_file, load


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float


def _polars() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [1, 2, 3],
            "amount": [9.5, None, 120.25],
            "merchant": ["a", "b", None],
            "fraud": [False, True, False],
            "at": [dt.datetime(2024, 1, d) for d in (1, 2, 3)],
        }
    )


def _pandas() -> pd.DataFrame:
    return pd.DataFrame(
        {"amount": [1.5, 2.5, 3.5], "merchant": ["x", "y", "z"], "n": [1, 2, 3]},
        index=pd.Index(["t1", "t2", "t3"], name="txn"),
    )


def _arrow() -> pa.Table:
    return pa.table({"a": [1, 2, None], "b": ["x", "y", "z"], "c": [[1], [], [2, 3]]})


CASES: dict[str, tuple[Any, str, str]] = {
    "polars": (_polars(), "parquet", "polars.DataFrame"),
    "pandas": (_pandas(), "parquet", "pandas.DataFrame"),
    "pandas-range-index": (pd.DataFrame({"a": [1, 2]}), "parquet", "pandas.DataFrame"),
    "arrow": (_arrow(), "parquet", "pyarrow.Table"),
    "numpy-float": (np.arange(12, dtype=np.float32).reshape(3, 4), "npy", "numpy.ndarray"),
    "numpy-fortran": (np.asfortranarray(np.eye(3)), "npy", "numpy.ndarray"),
    "numpy-str": (np.array(["a", "bc"]), "npy", "numpy.ndarray"),
    "bytes": (b"\x00\x01raw", "bytes", "builtins.bytes"),
    "dict": (
        {"b": [1, 2.5, None, True], "a": {"nested": "ç"}, "nan": float("nan")},
        "json",
        "builtins.dict",
    ),
    "list": ([1, "two", [3]], "json", "builtins.list"),
    "str": ("fraud", "json", "builtins.str"),
    "int": (10**30, "json", "builtins.int"),
    "float": (0.1, "json", "builtins.float"),
    "bool": (True, "json", "builtins.bool"),
    "none": (None, "json", "builtins.NoneType"),
}


def assert_same(got: Any, expected: Any) -> None:
    assert type(got) is type(expected)
    if isinstance(expected, pl.DataFrame):
        assert got.equals(expected)
        assert got.schema == expected.schema
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)
    elif isinstance(expected, pa.Table):
        assert got.equals(expected)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype
    elif isinstance(expected, dict) and "nan" in expected:
        assert got.keys() == expected.keys()
        assert got["nan"] != got["nan"]
        assert {k: v for k, v in got.items() if k != "nan"} == {
            k: v for k, v in expected.items() if k != "nan"
        }
    else:
        assert got == expected


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_from_bytes_and_from_a_file(case: str, tmp_path: Path) -> None:
    value, serializer, type_name = CASES[case]
    data, got_serializer, got_type = dump(value, allow_pickle=False)
    assert (got_serializer, got_type) == (serializer, type_name)
    assert_same(load(data, serializer, type_name), value)
    path = tmp_path / "value"
    assert dump_to_file(value, path) == (serializer, type_name)
    assert path.read_bytes() == data
    assert_same(load(path, serializer, type_name), value)
    assert_same(load(str(path), serializer, type_name), value)


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_value_gives_the_same_bytes(case: str) -> None:
    value, _, _ = CASES[case]
    first = dump(value)[0]
    assert dump(value)[0] == first
    if case == "arrow":
        return  # parquet renames the list item field ("item" -> "element") on the way back
    rebuilt = load(first, *dump(value)[1:])  # and a value read back writes the same bytes
    assert dump(rebuilt)[0] == first


def test_pandas_index_is_preserved() -> None:
    frame = _pandas()
    back = load(*dump(frame))
    assert list(back.index) == ["t1", "t2", "t3"]
    assert back.index.name == "txn"


def test_json_dict_keys_are_sorted_so_equal_dicts_hash_alike() -> None:
    assert dump({"a": 1, "b": 2})[0] == dump({"b": 2, "a": 1})[0]


@pytest.mark.parametrize(
    "value",
    [
        Point(1, 2.0),
        (1, 2),  # would come back as a list
        {1: "int key"},  # would come back with a str key
        {"x": {1, 2}},
        np.array([{"a": 1}, None], dtype=object),
        pd.Series([1, 2]),
    ],
    ids=["dataclass", "tuple", "int-key", "set-inside", "object-array", "series"],
)
def test_unknown_types_are_refused_without_pickle(value: object) -> None:
    with pytest.raises(SerializationError, match=r"@step\(pickle=True\)"):
        dump(value)


def test_refusal_names_the_type() -> None:
    with pytest.raises(SerializationError, match=r"test_serializers\.Point"):
        dump(Point(1, 2.0))


@pytest.mark.parametrize(
    "value",
    [Point(1, 2.0), (1, 2), {1: "int key"}, np.array([{"a": 1}, None], dtype=object)],
    ids=["dataclass", "tuple", "int-key", "object-array"],
)
def test_pickle_when_allowed(value: object) -> None:
    data, serializer, type_name = dump(value, allow_pickle=True)
    assert serializer == "pickle"
    assert dump(value, allow_pickle=True)[0] == data
    back = load(data, serializer, type_name)
    if isinstance(value, np.ndarray):
        assert back.tolist() == value.tolist()
    else:
        assert back == value


def test_allow_pickle_does_not_change_typed_serializers() -> None:
    assert dump(np.zeros(3), allow_pickle=True)[1] == "npy"
    assert dump({"a": 1}, allow_pickle=True)[1] == "json"
    assert dump(_polars(), allow_pickle=True)[1] == "parquet"


def test_npy_is_never_read_with_pickle() -> None:
    data = dump(np.array([{"a": 1}], dtype=object), allow_pickle=True)[0]
    with pytest.raises(SerializationError, match="npy"):
        load(data, "npy", "numpy.ndarray")


def test_unknown_serializer_and_corrupt_data() -> None:
    with pytest.raises(SerializationError, match="unknown serializer 'avro'"):
        load(b"", "avro", "x")
    with pytest.raises(SerializationError, match="parquet"):
        load(b"not parquet", "parquet", "polars.DataFrame")


def test_table_libraries_are_imported_only_for_their_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("polars", "pandas"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it would now fail
    assert dump({"a": 1})[1] == "json"
    assert dump(np.ones(2))[1] == "npy"
    assert serializers.load(dump(b"x")[0], "bytes", "builtins.bytes") == b"x"
