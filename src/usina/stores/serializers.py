"""Serializers: how a step's return value becomes artifact bytes, and back.

==========================  ============  =================================================
value                       serializer    read back as
==========================  ============  =================================================
polars.DataFrame            parquet       polars.DataFrame
pandas.DataFrame            parquet       pandas.DataFrame (index preserved)
pyarrow.Table               parquet       pyarrow.Table
numpy.ndarray               npy           numpy.ndarray (never pickled; object arrays refused)
bytes                       bytes         bytes
dict/list/str/int/float/    json          the same (dict keys sorted; keys must be str)
bool/None, nested
anything else               pickle        only with ``@step(pickle=True)``
==========================  ============  =================================================

The same value always gives the same bytes, since the cache compares content hashes. polars,
pandas and pyarrow are imported only when a value of theirs is written or read.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
from typing import TYPE_CHECKING, Any, BinaryIO

from usina.errors import MissingExtraError, SerializationError

if TYPE_CHECKING:
    from collections.abc import Callable

PARQUET = "parquet"
NPY = "npy"
BYTES = "bytes"
JSON = "json"
PICKLE = "pickle"

POLARS_DATAFRAME = "polars.DataFrame"
PANDAS_DATAFRAME = "pandas.DataFrame"
ARROW_TABLE = "pyarrow.Table"
NUMPY_ARRAY = "numpy.ndarray"

_PICKLE_PROTOCOL = 5
_JSON_SCALARS = (str, int, float, bool, type(None))

Source = bytes | str | os.PathLike[str]


def type_name_of(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(module: str, extra: str = "tables") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc


def _top_module(value: object) -> str:
    return type(value).__module__.split(".", 1)[0]


def _is_json(value: object, depth: int = 0) -> bool:
    if depth > 500:
        return False
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is list and isinstance(value, list):
        return all(_is_json(item, depth + 1) for item in value)
    if kind is dict and isinstance(value, dict):
        return all(type(k) is str and _is_json(v, depth + 1) for k, v in value.items())
    return False


def _arrow_table(value: object) -> tuple[Any, str] | None:
    """The pyarrow Table for a polars/pandas/pyarrow table, with the type name to read back."""
    module = _top_module(value)
    if module == "polars":
        pl = _import("polars")
        if isinstance(value, pl.DataFrame):
            return value.to_arrow(), POLARS_DATAFRAME
    elif module == "pandas":
        pd = _import("pandas")
        if isinstance(value, pd.DataFrame):
            pa = _import("pyarrow")
            return pa.Table.from_pandas(value), PANDAS_DATAFRAME
    elif module == "pyarrow":
        pa = _import("pyarrow")
        if isinstance(value, pa.Table):
            return value, ARROW_TABLE
    return None


def _numpy_array(value: object, allow_pickle: bool) -> Any | None:
    if _top_module(value) != "numpy":
        return None
    import numpy as np

    if not isinstance(value, np.ndarray):
        return None
    if value.dtype.hasobject:
        if allow_pickle:
            return None  # written by pickle, below
        raise SerializationError(
            f"a numpy array of dtype {value.dtype} holds Python objects and cannot be written "
            "as .npy without pickle; convert it to a numeric or string dtype, or allow pickle "
            "with @step(pickle=True)"
        )
    return value


def _writer(value: object, allow_pickle: bool) -> tuple[Callable[[BinaryIO], object], str, str]:
    """How to write ``value`` to a binary file, its serializer name and its type name."""
    table = _arrow_table(value)
    if table is not None:
        arrow, type_name = table
        pq = _import("pyarrow.parquet")

        def write_parquet(out: BinaryIO) -> None:
            pq.write_table(arrow, out, compression="zstd")

        return write_parquet, PARQUET, type_name
    array = _numpy_array(value, allow_pickle)
    if array is not None:
        import numpy as np

        def write_npy(out: BinaryIO) -> None:
            np.save(out, array, allow_pickle=False)

        return write_npy, NPY, NUMPY_ARRAY
    if type(value) is bytes:
        data = value
        return (lambda out: out.write(data)), BYTES, "builtins.bytes"
    if _is_json(value):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        encoded = text.encode("utf-8")
        return (lambda out: out.write(encoded)), JSON, type_name_of(value)
    if allow_pickle:

        def write_pickle(out: BinaryIO) -> None:
            pickle.dump(value, out, protocol=_PICKLE_PROTOCOL)

        return write_pickle, PICKLE, type_name_of(value)
    raise SerializationError(
        f"usina cannot write a value of type {type_name_of(value)} without pickle: it writes "
        "polars/pandas DataFrames, pyarrow Tables, numpy arrays, bytes and JSON values "
        "(dict with str keys, list, str, int, float, bool, None). Return one of those, or allow "
        "pickle for this step with @step(pickle=True)"
    )


def dump(value: object, *, allow_pickle: bool = False) -> tuple[bytes, str, str]:
    """``value`` as bytes, with the serializer's name and the type name to read it back as."""
    write, serializer, type_name = _writer(value, allow_pickle)
    out = io.BytesIO()
    try:
        write(out)
    except (TypeError, ValueError, pickle.PicklingError, AttributeError) as exc:
        raise SerializationError(
            f"cannot write a {type_name} value as {serializer}: {exc}"
        ) from exc
    return out.getvalue(), serializer, type_name


def dump_to_file(
    value: object, path: str | os.PathLike[str], *, allow_pickle: bool = False
) -> tuple[str, str]:
    """Write ``value`` to the file ``path`` (for big values: no second copy in memory).

    Returns the serializer's name and the type name; the file holds what ``dump`` returns."""
    write, serializer, type_name = _writer(value, allow_pickle)
    try:
        with open(path, "wb") as out:
            write(out)
    except (TypeError, ValueError, pickle.PicklingError, AttributeError) as exc:
        raise SerializationError(
            f"cannot write a {type_name} value as {serializer}: {exc}"
        ) from exc
    return serializer, type_name


def _open(source: Source) -> BinaryIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source)
    return open(source, "rb")


def load(source: Source, serializer: str, type_name: str) -> Any:
    """Read back what ``dump`` wrote: from its bytes, or from a path to a file holding them."""
    readers: dict[str, Callable[[BinaryIO, str], Any]] = {
        PARQUET: _read_parquet,
        NPY: _read_npy,
        BYTES: lambda src, _: src.read(),
        JSON: lambda src, _: json.loads(src.read().decode("utf-8")),
        PICKLE: lambda src, _: pickle.load(src),
    }
    reader = readers.get(serializer)
    if reader is None:
        raise SerializationError(
            f"unknown serializer {serializer!r} for a {type_name} value; it was written by a "
            f"newer usina? known: {', '.join(sorted(readers))}"
        )
    try:
        with _open(source) as src:
            return reader(src, type_name)
    except (MissingExtraError, SerializationError):
        raise
    except Exception as exc:
        raise SerializationError(
            f"cannot read a {type_name} value written as {serializer}: {exc}"
        ) from exc


def _read_parquet(src: BinaryIO, type_name: str) -> Any:
    pq = _import("pyarrow.parquet")
    table = pq.read_table(src)
    if type_name == POLARS_DATAFRAME:
        return _import("polars").from_arrow(table)
    if type_name == PANDAS_DATAFRAME:
        _import("pandas")
        return table.to_pandas()
    return table


def _read_npy(src: BinaryIO, _type_name: str) -> Any:
    import numpy as np

    return np.load(src, allow_pickle=False)
