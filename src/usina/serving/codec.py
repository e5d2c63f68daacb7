"""Open Inference Protocol payloads: decode and validate requests, encode responses.

Both protocols decode into :class:`InputTensor` values; :func:`assemble` checks them against the
model's metadata (names, datatypes, shapes, rows, NaN and infinities) and builds the one array the
model predicts on. Every problem raises :class:`InvalidInputError` with a message naming the input
and the fix, so bad input is always a 400 / INVALID_ARGUMENT and never a 500.

Missing values: a column whose signature marks it optional (MLflow's ``required: false``, which
``infer_signature`` writes for a column holding missing values) accepts NaN — ``null`` in JSON —
and may be left out of a request altogether; every other input refuses NaN. Infinities are
refused everywhere: they are not missing values, and most models answer them with an error.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from usina.serving.errors import InvalidInputError
from usina.serving.model import V2_TO_NUMPY, Batch, Layout, LoadedModel, TensorMeta

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_FLOATS = frozenset({"FP16", "FP32", "FP64"})
_INTS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
# Request datatypes accepted for an input declared with a given kind of datatype (booleans are
# not numbers: BOOL data for a numeric input is refused, as JSON true/false in numeric data).
_ACCEPTS = {
    "float": _FLOATS | _INTS,
    "int": _INTS,
    "bool": frozenset({"BOOL"}),
    "bytes": frozenset({"BYTES"}),
}
MAX_DIMS = 8
_LITTLE = {name: dtype.newbyteorder("<") for name, dtype in V2_TO_NUMPY.items()}


def cast(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """``values`` as ``dtype``; a value beyond a floating-point dtype's range becomes Inf
    quietly (the finiteness check refuses it by name; numpy would warn on every request)."""
    if dtype.kind == "f" and values.dtype != dtype:
        with np.errstate(over="ignore"):
            return values.astype(dtype)
    return values.astype(dtype, copy=False)


def _kind(datatype: str) -> str:
    if datatype in _FLOATS:
        return "float"
    if datatype in _INTS:
        return "int"
    if datatype == "BOOL":
        return "bool"
    return "bytes"


@dataclass(frozen=True, slots=True)
class InputTensor:
    """One request input, its data flattened and typed as its declared datatype."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool = False


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded request, protocol-independent."""

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None: all outputs
    binary_output: bool = False


# --------------------------------------------------------------------------- validation


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not shape:
        raise InvalidInputError(f"input {name!r}: 'shape' must be a non-empty list of integers")
    if len(shape) > MAX_DIMS:
        raise InvalidInputError(f"input {name!r}: shape has {len(shape)} dims, at most {MAX_DIMS}")
    out = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidInputError(
                f"input {name!r}: shape {list(shape)} must hold non-negative integers"
            )
        out.append(dim)
    if math.prod(out) > 1 << 31:
        raise InvalidInputError(f"input {name!r}: shape {out} is too large")
    return tuple(out)


def check_datatype(name: str, datatype: Any) -> str:
    if not isinstance(datatype, str) or (datatype not in V2_TO_NUMPY and datatype != "BYTES"):
        raise InvalidInputError(
            f"input {name!r}: unknown datatype {datatype!r}; use one of "
            f"{', '.join(sorted([*V2_TO_NUMPY, 'BYTES']))}"
        )
    return datatype


def _flatten(name: str, data: Any, out: list[Any], dims: int, depth: int = 0) -> None:
    if isinstance(data, list):
        if depth >= dims:
            raise InvalidInputError(
                f"input {name!r}: 'data' is nested deeper than its {dims}-dimensional shape; "
                "send it flat (row-major) or nested exactly as the shape"
            )
        for item in data:
            _flatten(name, item, out, dims, depth + 1)
    else:
        out.append(data)


def _has_bool(data: Any, ndim: int) -> bool:
    """Whether rectangular JSON ``data`` of ``ndim`` dimensions holds a boolean (numpy would
    silently turn ``[1.5, true]`` into ``[1.5, 1.0]``)."""
    if ndim == 0:
        return type(data) is bool
    if ndim == 1:
        return bool in set(map(type, data))
    return any(_has_bool(row, ndim - 1) for row in data)


def bytes_values(name: str, values: Sequence[Any], count: int, shape: Sequence[int]) -> np.ndarray:
    """BYTES elements (JSON strings, or raw bytes in UTF-8) as a flat object array of ``str``."""
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} needs {count} values, 'data' has {len(values)}"
        )
    out = np.empty(count, dtype=object)
    if all(type(v) is str for v in values):  # JSON strings: nothing to decode or check
        out[:] = values
        return out
    for i, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    f"input {name!r}: element {i} is not valid UTF-8 ({exc.reason})"
                ) from exc
        elif not isinstance(value, str):
            raise InvalidInputError(
                f"input {name!r}: BYTES data must hold strings; element {i} is "
                f"{type(value).__name__}"
            )
        out[i] = value
    return out


def _raw_bytes(name: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    """The binary BYTES layout: each element a 4-byte little-endian length, then its bytes."""
    count = math.prod(shape)
    values: list[bytes] = []
    view = memoryview(raw)
    pos = 0
    while pos < len(view):
        if len(values) == count or pos + 4 > len(view):
            raise InvalidInputError(
                f"input {name!r}: BYTES data holds more than the {count} elements of shape "
                f"{list(shape)}, or a truncated length prefix"
            )
        (size,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + size > len(view):
            raise InvalidInputError(f"input {name!r}: a BYTES element runs past its data")
        values.append(bytes(view[pos : pos + size]))
        pos += size
    return bytes_values(name, values, count, shape)


def json_array(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """JSON tensor data (flat or nested, row-major) as a flat array of ``datatype``."""
    if datatype == "BYTES":
        if type(data) is list and all(type(v) is str for v in data):
            return bytes_values(name, data, math.prod(shape), shape)  # flat: the usual case
        values: list[Any] = []
        _flatten(name, data, values, len(shape))
        return bytes_values(name, values, math.prod(shape), shape)
    dtype = V2_TO_NUMPY[datatype]
    kind = _kind(datatype)
    try:
        arr = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidInputError(f"input {name!r}: 'data' is not a rectangular array") from exc
    count = math.prod(shape)
    if arr.size == 0:  # no values: no datatype to check; assemble() says "no rows"
        if count:
            raise InvalidInputError(
                f"input {name!r}: shape {list(shape)} needs {count} values, 'data' has none"
            )
        return np.empty(0, dtype=dtype)
    if arr.ndim > 1 and arr.shape != shape:
        raise InvalidInputError(
            f"input {name!r}: 'data' is nested as {list(arr.shape)}, not as its shape "
            f"{list(shape)}; send it flat (row-major) or nested exactly as the shape"
        )
    got = arr.dtype.kind
    if kind != "bool" and (got == "b" or (got in "iufO" and _has_bool(data, arr.ndim))):
        raise InvalidInputError(
            f"input {name!r}: {datatype} data holds a boolean (true/false); send numbers"
        )
    if got == "O" and kind == "float":
        try:  # null stands for a missing value (NaN) in floating-point inputs
            arr = np.array(data, dtype=np.float64)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise InvalidInputError(
                f"input {name!r}: 'data' must hold only numbers or null for {datatype}"
            ) from exc
        got = "f"
    ok = {"float": "iufb", "int": "iub", "bool": "b"}[kind]
    if got not in ok:
        what = "null/NaN or non-numeric values" if got == "O" else f"{arr.dtype} values"
        raise InvalidInputError(f"input {name!r}: {datatype} data cannot hold {what}")
    if kind == "int" and got in "iu" and arr.size:
        info = np.iinfo(dtype.type)  # type: ignore[type-var]
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise InvalidInputError(f"input {name!r}: a value is out of range for {datatype}")
    flat = cast(arr, dtype).reshape(-1)
    if flat.size != count:
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} needs {count} values, 'data' has {flat.size}"
        )
    return flat


def raw_array(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    """Binary tensor data (little-endian, row-major) as a flat array."""
    if datatype == "BYTES":
        return _raw_bytes(name, shape, raw)
    dtype = _LITTLE[datatype]
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} of {datatype} needs "
            f"{count * dtype.itemsize} bytes, got {len(raw)}"
        )
    flat = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and flat.size and int(flat.view(np.uint8).max()) > 1:
        raise InvalidInputError(f"input {name!r}: BOOL bytes must be 0 or 1")
    return flat


def _batch_rows(name: str, shape: tuple[int, ...]) -> int:
    rows = shape[0]
    if rows == 0:
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} has no rows; send at least one row"
        )
    return rows


def _check_finite(name: str, values: np.ndarray, missing_ok: bool) -> None:
    """Refuse infinities, and NaN (a missing value) unless the input accepts missing values."""
    if values.dtype.kind != "f" or math.isfinite(values.sum()):
        return  # (a sum of finite values can overflow: then the exact check below runs)
    finite = np.isfinite(values)
    if finite.all():
        return
    flat = values.reshape(-1)
    bad = np.flatnonzero(~finite.reshape(-1))
    infinite = bad[np.isinf(flat[bad])]
    if infinite.size:
        i = int(infinite[0])
        raise InvalidInputError(
            f"input {name!r}: element {i} is {'+' if flat[i] > 0 else '-'}Inf (or beyond the "
            "range of its datatype); only finite numbers are accepted"
        )
    if not missing_ok:
        raise InvalidInputError(
            f"input {name!r}: element {int(bad[0])} is null/NaN, a missing value, and the "
            f"model's signature does not accept missing values in {name!r}"
        )


def _check_accepts(meta: TensorMeta, tensor: InputTensor) -> None:
    if tensor.datatype not in _ACCEPTS[_kind(meta.datatype)]:
        raise InvalidInputError(
            f"input {tensor.name!r}: datatype {tensor.datatype} does not fit the model's "
            f"{meta.datatype}"
        )


def assemble(model: LoadedModel, inputs: Sequence[InputTensor]) -> Batch:
    """Validate ``inputs`` against ``model`` and build the array it predicts on."""
    if not inputs:
        raise InvalidInputError("the request has no inputs")
    if model.layout is Layout.TENSOR:
        return _assemble_tensor(model, inputs)
    if model.layout is Layout.NAMED:
        return _assemble_named(model, inputs)
    features = model.inputs
    index = model.input_index()
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        only = inputs[0]
        is_column = only.name in index and only.shape[1] == 1 and len(features) > 1
        if not is_column:
            return _assemble_matrix(model, only)
    return _assemble_columns(model, inputs, index)


def _assemble_matrix(model: LoadedModel, tensor: InputTensor) -> np.ndarray:
    features = model.inputs
    rows, width = tensor.shape
    _batch_rows(tensor.name, tensor.shape)
    if width != len(features):
        raise InvalidInputError(
            f"input {tensor.name!r}: shape {list(tensor.shape)} has {width} columns, the model "
            f"takes {len(features)} features ({', '.join(m.name for m in features[:8])}"
            f"{', ...' if len(features) > 8 else ''})"
        )
    kinds = {_kind(m.datatype) for m in features}
    strict_columns = "float" in kinds and kinds != {"float"}
    # A matrix has one datatype: floating point is fine for integer features too, as long as
    # their columns hold whole numbers (checked below).
    accepted = _ACCEPTS["float"] if "float" in kinds else _ACCEPTS[kinds.pop()]
    if tensor.datatype not in accepted:
        raise InvalidInputError(
            f"input {tensor.name!r}: datatype {tensor.datatype} does not fit the model's "
            f"features ({', '.join(sorted({m.datatype for m in features}))})"
        )
    matrix = cast(tensor.data.reshape(rows, width), model.batch_dtype)
    if tensor.datatype not in _FLOATS:
        return matrix
    finite = np.isfinite(matrix)
    if not finite.all():
        # The matrix is float64 whatever the features' datatypes: an optional feature, left
        # out or NaN, is a missing value; infinities are refused everywhere.
        missing_ok = np.array([m.optional for m in features])
        bad = np.isinf(matrix) | (~finite & ~missing_ok)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            value = matrix[row, col]
            what = (
                f"{'+' if value > 0 else '-'}Inf (or beyond the range of {tensor.datatype})"
                if np.isinf(value)
                else "null/NaN, a missing value, which the model's signature does not accept there"
            )
            raise InvalidInputError(
                f"input {tensor.name!r}: row {row}, feature {features[col].name!r} is {what}"
            )
    if strict_columns:
        strict = [i for i, m in enumerate(features) if _kind(m.datatype) != "float"]
        sub = matrix[:, strict]
        bad = np.isfinite(sub) & (sub != np.round(sub))
        if bad.any():
            col = strict[int(np.argwhere(bad)[0][1])]
            raise InvalidInputError(
                f"input {tensor.name!r}: feature {features[col].name!r} is "
                f"{features[col].datatype}: it needs whole numbers"
            )
    return matrix


def _assemble_columns(
    model: LoadedModel, inputs: Sequence[InputTensor], index: Mapping[str, int]
) -> np.ndarray:
    features = model.inputs
    rows: int | None = None
    seen: dict[int, InputTensor] = {}
    for tensor in inputs:
        col = index.get(tensor.name)
        if col is None:
            expected = ", ".join(m.name for m in features[:10])
            raise InvalidInputError(
                f"unknown input {tensor.name!r}; the model takes {len(features)} inputs "
                f"({expected}{', ...' if len(features) > 10 else ''}) or one 2-D input"
            )
        if col in seen:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InvalidInputError(
                f"input {tensor.name!r}: shape {list(tensor.shape)} must be [rows] or [rows, 1]"
            )
        n = _batch_rows(tensor.name, tensor.shape)
        if rows is None:
            rows = n
        elif n != rows:
            raise InvalidInputError(f"input {tensor.name!r} has {n} rows, other inputs have {rows}")
        _check_accepts(features[col], tensor)
        _check_finite(tensor.name, tensor.data, features[col].optional)
        seen[col] = tensor
    assert rows is not None  # inputs is not empty
    if len(seen) != len(features):
        missing = [m for i, m in enumerate(features) if i not in seen]
        required = [m.name for m in missing if not m.optional]
        if required:
            raise InvalidInputError(
                f"missing input(s): {', '.join(required[:10])}"
                f"{', ...' if len(required) > 10 else ''} ({len(required)} in all)"
            )
    matrix = np.full((rows, len(features)), np.nan, dtype=model.batch_dtype)
    for col, tensor in seen.items():
        matrix[:, col] = tensor.data
    return matrix


def _assemble_named(model: LoadedModel, inputs: Sequence[InputTensor]) -> dict[str, np.ndarray]:
    """One array per named input, of the input's own datatype; rows on the first axis."""
    by_name = {m.name: m for m in model.inputs}
    rows: int | None = None
    out: dict[str, np.ndarray] = {}
    for tensor in inputs:
        meta = by_name.get(tensor.name)
        if meta is None:
            expected = ", ".join(f"{m.name} ({m.datatype})" for m in model.inputs[:10])
            raise InvalidInputError(
                f"unknown input {tensor.name!r}; the model takes {len(model.inputs)} named "
                f"inputs: {expected}{', ...' if len(model.inputs) > 10 else ''}"
            )
        if tensor.name in out:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        want = meta.shape
        shape = tensor.shape
        if len(want) == 1 and len(shape) == 2 and shape[1] == 1:
            shape = shape[:1]  # a column sent as [rows, 1]
        if len(shape) != len(want) or any(
            w >= 0 and w != g for w, g in zip(want, shape, strict=True)
        ):
            raise InvalidInputError(
                f"input {tensor.name!r}: shape {list(tensor.shape)} does not fit {list(want)}"
            )
        n = _batch_rows(tensor.name, shape)
        if rows is None:
            rows = n
        elif n != rows:
            raise InvalidInputError(f"input {tensor.name!r} has {n} rows, other inputs have {rows}")
        _check_accepts(meta, tensor)
        data = cast(tensor.data.reshape(shape), meta.dtype)
        _check_finite(tensor.name, data, meta.allows_nan)
        out[meta.name] = data
    assert rows is not None  # inputs is not empty
    missing = [m for m in model.inputs if m.name not in out]
    required = [m.name for m in missing if not m.optional]
    if required:
        raise InvalidInputError(
            f"missing input(s): {', '.join(required[:10])}"
            f"{', ...' if len(required) > 10 else ''} ({len(required)} in all)"
        )
    for meta in missing:  # optional columns left out: missing values
        fill: Any = np.nan if meta.allows_nan else None
        if fill is None and meta.datatype != "BYTES":
            raise InvalidInputError(f"input {meta.name!r} ({meta.datatype}) cannot be left out")
        out[meta.name] = np.full((rows, *meta.dims), fill, dtype=meta.dtype)
    return {m.name: out[m.name] for m in model.inputs}


def _assemble_tensor(model: LoadedModel, inputs: Sequence[InputTensor]) -> np.ndarray:
    meta = model.inputs[0]
    if len(inputs) != 1:
        raise InvalidInputError(f"the model takes one input {meta.name!r}, got {len(inputs)}")
    tensor = inputs[0]
    if tensor.name != meta.name:
        raise InvalidInputError(f"unknown input {tensor.name!r}; the model takes {meta.name!r}")
    want = meta.shape
    if len(tensor.shape) != len(want) or any(
        w >= 0 and w != g for w, g in zip(want, tensor.shape, strict=True)
    ):
        raise InvalidInputError(
            f"input {tensor.name!r}: shape {list(tensor.shape)} does not fit {list(want)}"
        )
    _batch_rows(tensor.name, tensor.shape)
    _check_accepts(meta, tensor)
    data = cast(tensor.data.reshape(tensor.shape), model.batch_dtype)
    _check_finite(tensor.name, data, meta.allows_nan)
    return data


def select_outputs(
    model: LoadedModel, requested: Sequence[RequestedOutput] | None
) -> list[tuple[TensorMeta, bool]]:
    if requested is None:
        return [(meta, False) for meta in model.outputs]
    by_name = {m.name: m for m in model.outputs}
    chosen = []
    for out in requested:
        meta = by_name.get(out.name)
        if meta is None:
            raise InvalidInputError(
                f"unknown output {out.name!r}; the model returns {', '.join(by_name)}"
            )
        chosen.append((meta, out.binary))
    return chosen


# --------------------------------------------------------------------------- REST


def _params(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: 'parameters' must be an object")
    return value


def _load_json(head: bytes | memoryview) -> Any:
    """The JSON document; ``NaN``, ``Infinity`` and numbers too large for a double — which
    are not JSON, but Python's ``json.dumps`` writes them — parsed as such, so that the input
    holding them gets a precise answer from :func:`assemble`."""
    try:
        return orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        error = exc
    try:
        doc = json.loads(bytes(head).decode())
        orjson.dumps(doc)  # what orjson refuses besides those numbers (lone surrogates...)
    except (ValueError, TypeError, RecursionError, orjson.JSONEncodeError):
        raise InvalidInputError(f"the body is not valid JSON: {error}") from error
    return doc


def parse_rest(body: bytes, header_length: int | None) -> InferRequest:
    """Decode a REST infer body, JSON or JSON + binary tensor data."""
    if header_length is not None:
        if header_length < 0:
            raise InvalidInputError(
                f"Inference-Header-Content-Length must be a non-negative integer (the JSON "
                f"header's length in bytes), got {header_length}"
            )
        if header_length > len(body):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {header_length} exceeds the body "
                f"({len(body)} bytes)"
            )
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    doc = _load_json(head)
    if not isinstance(doc, dict):
        raise InvalidInputError("the body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("'inputs' must be a non-empty list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("'id' must be a string")
    params = _params("request", doc.get("parameters"))
    offset = 0
    inputs = []
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise InvalidInputError(f"inputs[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidInputError(f"inputs[{i}]: 'name' must be a string")
        datatype = check_datatype(name, item.get("datatype"))
        shape = check_shape(name, item.get("shape"))
        in_params = _params(f"input {name!r}", item.get("parameters"))
        size = in_params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInputError(
                    f"input {name!r}: binary_data_size must be a non-negative integer (the "
                    f"input's length in bytes), got {size!r}"
                )
            if offset + size > len(binary):
                raise InvalidInputError(
                    f"input {name!r}: binary_data_size {size} runs past the end of the body"
                )
            data = raw_array(name, datatype, shape, bytes(binary[offset : offset + size]))
            offset += size
        elif "data" in item:
            data = json_array(name, datatype, shape, item["data"])
        else:
            raise InvalidInputError(f"input {name!r} has no 'data'")
        inputs.append(InputTensor(name, datatype, shape, data))
    if offset != len(binary):
        raise InvalidInputError(
            f"the body has {len(binary) - offset} bytes of binary data no input claims"
        )
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInputError("'outputs' must be a list")
        outputs = []
        for i, item in enumerate(raw_outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInputError(f"outputs[{i}] must be an object with a 'name'")
            out_params = _params(f"output {item['name']!r}", item.get("parameters"))
            outputs.append(RequestedOutput(item["name"], out_params.get("binary_data") is True))
    return InferRequest(
        id=request_id,
        inputs=tuple(inputs),
        outputs=tuple(outputs) if outputs is not None else None,
        binary_output=params.get("binary_data_output") is True,
    )


def _bytes_tensor(values: np.ndarray) -> bytes:
    parts = []
    for v in values.reshape(-1).tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def tensor_bytes(meta: TensorMeta, values: np.ndarray) -> bytes:
    if meta.datatype == "BYTES":
        return _bytes_tensor(values)
    return np.ascontiguousarray(values, dtype=_LITTLE.get(meta.datatype, meta.dtype)).tobytes()


def encode_rest(
    model: LoadedModel,
    request_id: str | None,
    chosen: Sequence[tuple[TensorMeta, bool]],
    results: Mapping[str, np.ndarray],
    binary_all: bool,
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary data, the JSON header's length."""
    outputs = []
    blobs = []
    for meta, binary in chosen:
        values = results[meta.name]
        entry: dict[str, Any] = {
            "name": meta.name,
            "datatype": meta.datatype,
            "shape": list(values.shape),
        }
        if binary or binary_all:
            blob = tensor_bytes(meta, values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif meta.datatype == "BYTES" or values.dtype.kind not in "biuf":
            entry["data"] = [str(v) for v in values.reshape(-1).tolist()]
        else:
            entry["data"] = np.ascontiguousarray(values.reshape(-1))
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = outputs
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


# --------------------------------------------------------------------------- gRPC
# ModelInferResponse: model_name = 1, model_version = 2, id = 3, outputs = 5 (InferOutputTensor:
# name = 1, datatype = 2, shape = 3, packed), raw_output_contents = 6. Every field written here
# is length-delimited (wire type 2) with a field number below 16: its tag is one byte.


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 0x80:  # the usual case: a one-byte length
        return bytes(((number << 3) | 2, size)) + payload
    return bytes(((number << 3) | 2,)) + _varint(size) + payload


def _packed(dims: tuple[int, ...]) -> bytes:
    if max(dims) < 0x80:  # every dimension a one-byte varint
        return bytes(dims)
    return b"".join(_varint(d) for d in dims)


@functools.lru_cache(maxsize=256)
def _response_head(model_name: str, model_version: str) -> bytes:
    return _field(1, model_name.encode()) + _field(2, model_version.encode())


@functools.lru_cache(maxsize=1024)
def _output_head(name: str, datatype: str) -> bytes:
    return _field(1, name.encode()) + _field(2, datatype.encode())


def encode_grpc_response(
    model: LoadedModel,
    request_id: str,
    chosen: Sequence[tuple[TensorMeta, bool]],
    outputs: Mapping[str, np.ndarray],
) -> bytes:
    """The serialized ``ModelInferResponse`` (byte for byte what protobuf would write), every
    output in ``raw_output_contents``."""
    parts = [_response_head(model.name, model.version)]
    if request_id:
        parts.append(_field(3, request_id.encode()))
    raws = []
    for meta, _ in chosen:
        values = outputs[meta.name]
        tensor = _output_head(meta.name, meta.datatype)
        if values.shape:
            tensor += _field(3, _packed(values.shape))
        parts.append(_field(5, tensor))
        raws.append(_field(6, tensor_bytes(meta, values)))
    return b"".join(parts) + b"".join(raws)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
