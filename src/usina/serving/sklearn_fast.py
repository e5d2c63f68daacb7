"""A native fast path for scikit-learn Pipelines that encode typed columns.

A Pipeline whose first step is a ColumnTransformer of one-hot encoders, standard scalers,
passthrough and drop is how most tabular models with string columns are written. Called on a
DataFrame, scikit-learn spends milliseconds per call on pandas indexing, input validation and
dataframe-library detection, whatever the number of rows: on a one-row request that is nearly
all of the cost. Here that first step is done with numpy on the batch's columns (one dictionary
lookup per string value), and the remaining steps get the dense matrix the ColumnTransformer
would have built, so the model's own estimator still makes the prediction.

:func:`compile_column_pipeline` returns None for any other shape (an unsupported transformer,
infrequent categories, ``drop=...``, pandas output) and the caller keeps calling the Pipeline.
The caller checks the compiled function against the Pipeline's own ``predict_proba`` at load
(:func:`agrees`) and uses it only when they agree. A batch holding something the compiled
encoders cannot judge (a value that is not a string in a string column) goes to the Pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Columns = dict[str, np.ndarray]
Transform = Callable[[Columns, int], np.ndarray]
UNKNOWN = "\x00usina-probe-unknown"  # a category no encoder was fitted on


class NotCompiled(Exception):
    """This batch holds values the compiled path does not handle: use the Pipeline."""


def _onehot(encoder: Any, names: Sequence[str], string_cols: frozenset[str]) -> Transform | None:
    if (
        getattr(encoder, "drop_idx_", None) is not None
        or getattr(encoder, "_infrequent_enabled", False)
        or encoder.handle_unknown not in ("ignore", "error")
        or len(encoder.categories_) != len(names)
        or not all(n in string_cols for n in names)
    ):
        return None
    lookups: list[dict[str, int]] = []
    width = 0
    for cats in encoder.categories_:
        if not all(type(c) is str for c in cats):
            return None
        lookups.append({c: width + i for i, c in enumerate(cats)})
        width += len(cats)
    dtype = np.dtype(encoder.dtype)
    ignore = encoder.handle_unknown == "ignore"

    def transform(batch: Columns, rows: int) -> np.ndarray:
        out = np.zeros((rows, width), dtype=dtype)
        for name, lookup in zip(names, lookups, strict=True):
            values = batch[name]
            cols = [lookup.get(v, -1) for v in values.tolist()]
            if -1 in cols:
                missing = [v for v, c in zip(values.tolist(), cols, strict=True) if c == -1]
                if not all(type(v) is str for v in missing):
                    raise NotCompiled  # None/NaN: the encoder's own rules apply
                if not ignore:
                    raise ValueError(
                        f"Found unknown categories {sorted(set(missing))[:5]} in column "
                        f"{name!r} during transform"
                    )
                hit = np.flatnonzero(np.asarray(cols) >= 0)
                out[hit, np.asarray(cols)[hit]] = 1
            else:
                out[np.arange(rows), cols] = 1
        return out

    return transform


def _numeric(names: Sequence[str], string_cols: frozenset[str]) -> Callable[[Columns], np.ndarray]:
    if any(n in string_cols for n in names):
        raise NotCompiled

    def matrix(batch: Columns) -> np.ndarray:
        return np.column_stack([batch[n] for n in names]).astype(np.float64)

    return matrix


def _scaler(scaler: Any, names: Sequence[str], string_cols: frozenset[str]) -> Transform | None:
    try:
        matrix = _numeric(names, string_cols)
    except NotCompiled:
        return None
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None

    def transform(batch: Columns, rows: int) -> np.ndarray:
        x = matrix(batch)
        if mean is not None:
            x -= mean
        if scale is not None:
            x /= scale
        return x

    return transform


def _passthrough(names: Sequence[str], string_cols: frozenset[str]) -> Transform | None:
    try:
        matrix = _numeric(names, string_cols)
    except NotCompiled:
        return None
    return lambda batch, rows: matrix(batch)


def _step(transformer: Any, names: Sequence[str], string_cols: frozenset[str]) -> Transform | None:
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    kind = type(transformer)
    if transformer == "passthrough" or (
        kind is FunctionTransformer and transformer.func is None and transformer.validate is False
    ):
        return _passthrough(names, string_cols)
    if kind is OneHotEncoder:
        return _onehot(transformer, names, string_cols)
    if kind is StandardScaler:
        return _scaler(transformer, names, string_cols)
    return None


def compile_column_pipeline(
    native: Any, input_names: Sequence[str], string_cols: frozenset[str]
) -> tuple[Callable[[Columns], np.ndarray], list[Any], Any] | None:
    """``(features, middle, final)``: ``features(batch)`` is the Pipeline's first step done in
    numpy on a batch of named columns, ``middle`` the transformers after it, ``final`` its
    estimator. None when the Pipeline has another shape."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if type(native) is not Pipeline or len(native.steps) < 2:
        return None
    first = native.steps[0][1]
    if type(first) is not ColumnTransformer:
        return None
    config = getattr(first, "_sklearn_output_config", None) or {}
    if config.get("transform") not in (None, "default") or first.transformer_weights:
        return None
    fitted = [str(n) for n in getattr(first, "feature_names_in_", [])]
    indices = getattr(first, "_transformer_to_input_indices", None)
    if sorted(fitted) != sorted(input_names) or not isinstance(indices, dict):
        return None
    steps: list[Transform] = []
    for name, transformer, _ in first.transformers_:
        names = [fitted[i] for i in indices.get(name, [])]
        if transformer == "drop" or not names:
            continue
        step = _step(transformer, names, string_cols)
        if step is None:
            return None
        steps.append(step)
    if not steps:
        return None
    rest = [step for _, step in native.steps[1:] if step not in (None, "passthrough")]
    if not rest or getattr(rest[-1], "feature_names_in_", None) is not None:
        return None  # the estimator was fitted on a DataFrame: it needs the frame

    def features(batch: Columns) -> np.ndarray:
        rows = len(next(iter(batch.values())))
        parts = [step(batch, rows) for step in steps]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    return features, rest[:-1], rest[-1]


def probe_batch(native: Any, example: Mapping[str, np.ndarray]) -> Columns:
    """The example's rows, then rows holding every category of every one-hot encoder of the
    Pipeline's first step, and one category no encoder knows where the encoder ignores them."""
    from sklearn.preprocessing import OneHotEncoder

    first = native.steps[0][1]
    fitted = [str(n) for n in first.feature_names_in_]
    categories: dict[str, list[str]] = {}
    for name, transformer, _ in first.transformers_:
        if type(transformer) is OneHotEncoder:
            names = [fitted[i] for i in first._transformer_to_input_indices[name]]
            for col, cats in zip(names, transformer.categories_, strict=True):
                extra = [UNKNOWN] if transformer.handle_unknown == "ignore" else []
                categories[col] = [str(c) for c in cats] + extra
    base = len(next(iter(example.values())))
    rows = base + max((len(c) for c in categories.values()), default=0)
    out: Columns = {}
    for name, values in example.items():
        if name in categories:
            cats = categories[name]
            added = [cats[i % len(cats)] for i in range(rows - base)]
            column = np.empty(rows, dtype=object)
            column[:] = [*values.tolist(), *added]
            out[name] = column
        else:
            out[name] = np.resize(values, (rows, *values.shape[1:]))
    return out


def agrees(fast: np.ndarray, expected: np.ndarray) -> bool:
    """Equal results: the same values (floating point: to rounding) of the same shape."""
    if fast.shape != expected.shape or fast.dtype.kind != expected.dtype.kind:
        return False
    if fast.dtype.kind in "fc":
        return bool(np.allclose(fast, expected, rtol=1e-9, atol=1e-12))
    return bool(np.array_equal(fast, expected))
