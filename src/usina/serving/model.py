"""A served model: its I/O metadata in Open Inference Protocol terms and its predict function.

The loader (``usina.serving.loader``) builds a :class:`LoadedModel` from an MLflow model; the
rest of the serving package sees only this module, never mlflow or a model library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

# Open Inference Protocol datatype -> numpy dtype (BYTES values are Python ``str`` in an
# object array: UTF-8 decoded on the way in, encoded on the way out).
V2_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_V2: dict[np.dtype[np.generic], str] = {v: k for k, v in V2_TO_NUMPY.items()}


def v2_datatype(dtype: np.dtype[np.generic]) -> str:
    """The V2 datatype name of a numpy dtype (``BYTES`` for strings and objects)."""
    return NUMPY_TO_V2.get(np.dtype(dtype), "BYTES")


class Layout(enum.Enum):
    """How the model takes its input."""

    COLUMNS = "columns"  # named numeric features; requests send one input per feature or a matrix
    TENSOR = "tensor"  # one tensor, batch on the first axis
    NAMED = "named"  # several named inputs of their own datatypes: typed columns (strings
    # included) of a DataFrame, or several tensors; the batch is a dict name -> array


Batch = np.ndarray | dict[str, np.ndarray]
"""What ``predict`` takes: one array (``COLUMNS``, ``TENSOR``) or named arrays (``NAMED``),
rows on the first axis of each."""


def batch_rows(batch: Batch) -> int:
    """How many rows ``batch`` holds."""
    if isinstance(batch, dict):
        return int(next(iter(batch.values())).shape[0])
    return int(batch.shape[0])


def concat_batches(batches: list[Batch]) -> Batch:
    """One batch holding the rows of ``batches`` in order (all of one layout)."""
    first = batches[0]
    if len(batches) == 1:
        return first
    if isinstance(first, dict):
        return {
            name: np.concatenate([b[name] for b in batches if isinstance(b, dict)])
            for name in first
        }
    return np.concatenate(batches)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """One input or output as the model metadata advertises it (-1 = variable dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return V2_TO_NUMPY.get(self.datatype, np.dtype(object))

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape without its batch dimension (Triton's ``dims``)."""
        return self.shape[1:]

    @property
    def allows_nan(self) -> bool:
        """Whether the input accepts NaN, a missing value: a floating-point input that the
        signature marks optional (MLflow's ``required: false``)."""
        return self.optional and self.datatype in ("FP16", "FP32", "FP64")


class PredictFn(Protocol):
    def __call__(self, batch: Batch, /) -> Mapping[str, np.ndarray]: ...


@dataclass(frozen=True, slots=True, weakref_slot=True)
class LoadedModel:
    """One loaded version of a model, ready to predict.

    ``predict`` takes the whole batch: for ``Layout.COLUMNS`` a 2-D array with the features in
    ``inputs`` order (dtype ``batch_dtype``); for ``Layout.TENSOR`` the one input tensor; for
    ``Layout.NAMED`` a dict of every input by name, each of its own dtype (``object`` holding
    ``str`` for BYTES). It returns every output, batch on the first axis. ``score_output``
    names the output whose values feed the prediction-score histogram (a probability for
    classifiers).
    """

    name: str
    version: str
    platform: str
    flavour: str
    layout: Layout
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    predict: PredictFn
    batch_dtype: np.dtype[np.generic]
    score_output: str | None = None
    score_column: int | None = None  # for a 2-D score output: which column is the score
    drift: Any = None  # a usina.monitoring.drift.DriftMonitor when the version has a reference

    def input_index(self) -> dict[str, int]:
        return {meta.name: i for i, meta in enumerate(self.inputs)}
