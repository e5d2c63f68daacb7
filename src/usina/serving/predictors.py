"""Batch predict functions, one per model flavour, and the outputs each returns.

The loader hands a native model (a LightGBM ``Booster``, a scikit-learn estimator, an ONNX
Runtime session...) and its input metadata; this module returns the function the batcher calls
with a whole batch, plus the outputs' metadata learned by predicting an example once. Models
with typed columns (strings included) get a pandas DataFrame with the signature's dtypes, as
MLflow's ``dataframe_split`` and MLServer's pandas codec give them; scikit-learn-style
estimators get what they were fitted on (a frame with their own feature names, or a matrix), so
scikit-learn never warns about feature names on a request. Native
fast paths (LightGBM's C predict) are checked against the flavour's own predict at load.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from usina.serving.errors import ModelLoadError
from usina.serving.model import Batch, Layout, PredictFn, TensorMeta, v2_datatype

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Predictor:
    """A batch predict function, the outputs it returns, and which output is the score."""

    predict: PredictFn
    outputs: tuple[TensorMeta, ...]
    score_output: str | None = None
    score_column: int | None = None


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a model takes. frame: named columns of a table (a DataFrame), not tensors."""

    metas: tuple[TensorMeta, ...]
    layout: Layout
    frame: bool
    example: Batch  # a batch of one or more rows the model is known to accept

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metas]

    def as_frame(self, batch: Batch) -> pd.DataFrame:
        """A batch as a DataFrame: its columns named, each of the signature's dtype."""
        import pandas as pd

        if isinstance(batch, dict):
            return pd.DataFrame(batch, copy=False)
        return pd.DataFrame(batch, columns=self.names, copy=False)

    def as_matrix(self, batch: Batch) -> np.ndarray:
        if isinstance(batch, dict):
            return np.column_stack([batch[n] for n in self.names]).astype(np.float64)
        return batch


def build(native: Any, flavour: str, signature: Any, inputs: Inputs, threads: int) -> Predictor:
    """The predictor of ``native`` (loaded with ``flavour``) for ``inputs``."""
    out_name = _single_output_name(signature) or "predict"
    if hasattr(native, "predict_proba") and hasattr(native, "classes_"):
        return _classifier(native, flavour, inputs, threads)
    maker = _MAKERS.get(flavour, _pyfunc)
    return maker(native, out_name, inputs, threads)


def _lightgbm(native: Any, out_name: str, inputs: Inputs, threads: int) -> Predictor:
    booster = native
    n_out = int(booster.num_model_per_iteration())
    fast = lightgbm_fast_predict(booster, n_out, threads, int(booster.num_feature()))

    def predict(batch: Batch) -> Outputs:
        if isinstance(batch, dict):
            return {out_name: np.asarray(booster.predict(inputs.as_frame(batch)))}
        if fast is not None and batch.dtype in _LGB_DTYPES and batch.ndim == 2:
            return {out_name: fast(batch)}
        return {out_name: np.asarray(booster.predict(batch, num_threads=threads))}

    shape: tuple[int, ...] = (-1,) if n_out == 1 else (-1, n_out)
    return Predictor(predict, (TensorMeta(out_name, "FP64", shape),), out_name)


def _xgboost(native: Any, out_name: str, inputs: Inputs, threads: int) -> Predictor:
    booster = getattr(native, "get_booster", lambda: native)()

    def predict(batch: Batch) -> Outputs:
        data = inputs.as_frame(batch) if isinstance(batch, dict) else batch
        return {out_name: np.asarray(booster.inplace_predict(data), dtype=np.float64)}

    return probed(predict, inputs, out_name)


def _onnx(native: Any, out_name: str, inputs: Inputs, threads: int) -> Predictor:
    session = native
    in_names = [i.name for i in session.get_inputs()]
    out_names = [o.name for o in session.get_outputs()]

    def predict(batch: Batch) -> Outputs:
        feed = {n: batch[n] for n in in_names} if isinstance(batch, dict) else {in_names[0]: batch}
        values = session.run(out_names, feed)
        return {n: np.asarray(v) for n, v in zip(out_names, values, strict=True)}

    return probed(predict, inputs, None)


def _pytorch(native: Any, out_name: str, inputs: Inputs, threads: int) -> Predictor:
    import torch

    # MLflow 3 saves an exported program (pt2): its .module() is the callable graph, which is
    # in inference mode already (and refuses .eval()).
    module = native.module() if hasattr(native, "graph_signature") else native
    with contextlib.suppress(NotImplementedError):
        module = module.eval()
    names = inputs.names

    def predict(batch: Batch) -> Outputs:
        with torch.no_grad():
            if isinstance(batch, dict):
                args = [torch.from_numpy(np.ascontiguousarray(batch[n])) for n in names]
                result = module(*args)
            else:
                result = module(torch.from_numpy(np.ascontiguousarray(batch)))
        return _named_results(result, out_name)

    return probed(predict, inputs, out_name)


def _named_results(result: Any, out_name: str) -> Outputs:
    """A model's return value (a tensor, a tuple of them, or a dict) as named arrays."""
    if isinstance(result, dict):
        return {str(k): _numpy(v) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return {f"output-{i}": _numpy(v) for i, v in enumerate(result)}
    return {out_name: _numpy(result)}


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def estimator_input(native: Any, inputs: Inputs) -> Callable[[Batch], Any]:
    """How a batch reaches a scikit-learn-style estimator: as what it was fitted on.

    Fitted on a DataFrame (``feature_names_in_``): a frame with those names, in fit order —
    a tensor input's columns are the fitted features in order. Fitted on a matrix
    (``n_features_in_`` only): a matrix. Otherwise what the signature describes. Anything else
    makes scikit-learn warn ("X does not have valid feature names", or its mirror) on every
    request.
    """
    import pandas as pd

    fitted = getattr(native, "feature_names_in_", None)
    if fitted is not None:
        names = [str(n) for n in fitted]
        if sorted(names) == sorted(inputs.names):
            if names == inputs.names:
                return inputs.as_frame

            def reordered(batch: Batch) -> Any:
                return inputs.as_frame(batch)[names]

            return reordered
        if len(inputs.metas) == 1 and inputs.metas[0].shape[1:] in ((len(names),), (-1,)):

            def tensor_frame(batch: Batch) -> Any:
                return pd.DataFrame(batch, columns=names, copy=False)

            return tensor_frame
        return inputs.as_frame  # a mismatch scikit-learn names at load, in the warm-up
    if getattr(native, "n_features_in_", None) is not None:
        if inputs.layout is Layout.NAMED:  # typed columns (strings): a matrix of objects

            def objects(batch: Batch) -> np.ndarray:
                if isinstance(batch, dict):
                    return np.column_stack([batch[n] for n in inputs.names])
                return batch

            return objects
        return inputs.as_matrix
    return inputs.as_frame if inputs.frame else inputs.as_matrix


def _sklearn(native: Any, out_name: str, inputs: Inputs, threads: int) -> Predictor:
    convert = estimator_input(native, inputs)
    fast = sklearn_columns_fast(native, inputs, "predict")

    def predict(batch: Batch) -> Outputs:
        if fast is not None:
            return {out_name: fast(batch)}
        return {out_name: np.asarray(native.predict(convert(batch)))}

    return probed(predict, inputs, out_name)


def _pyfunc(native: Any, out_name: str, inputs: Inputs, threads: int) -> Predictor:
    import pandas as pd

    dtypes = {m.name: m.dtype for m in inputs.metas}

    def predict(batch: Batch) -> Outputs:
        data: Any = batch
        if inputs.layout is Layout.COLUMNS:
            data = inputs.as_frame(batch).astype(dtypes)
        elif inputs.frame:
            data = inputs.as_frame(batch)
        result = native.predict(data)
        if isinstance(result, pd.DataFrame):
            return {str(c): result[c].to_numpy() for c in result.columns}
        if isinstance(result, pd.Series):
            return {out_name: result.to_numpy()}
        if isinstance(result, dict):
            return {str(k): np.asarray(v) for k, v in result.items()}
        return {out_name: np.asarray(result)}

    return probed(predict, inputs, out_name)


_MAKERS: dict[str, Callable[[Any, str, Inputs, int], Predictor]] = {
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "onnx": _onnx,
    "pytorch": _pytorch,
    "sklearn": _sklearn,
}


def probed(predict: Callable[[Batch], Outputs], inputs: Inputs, score: str | None) -> Predictor:
    """Learn output names, dtypes and shapes by predicting the example once."""
    probe = predict(inputs.example)
    metas = tuple(
        TensorMeta(name, v2_datatype(np.asarray(value).dtype), (-1, *np.shape(value)[1:]))
        for name, value in probe.items()
    )
    if not metas:
        raise ModelLoadError("the model returned no outputs on its input example")
    if score not in probe:
        score = metas[0].name
    by_name = {m.name: m for m in metas}
    return Predictor(predict, metas, score if by_name[score].datatype.startswith("FP") else None)


# --------------------------------------------------------------------------- classifiers


def _classifier(native: Any, flavour: str, inputs: Inputs, threads: int) -> Predictor:
    """``predict`` (the class) and ``predict_proba`` (one column per class)."""
    classes = np.asarray(native.classes_)
    n = len(classes)
    proba = _fast_proba(native, flavour, inputs, threads, n)
    if proba is None:
        convert = estimator_input(native, inputs)
        kwargs = {"num_threads": threads} if flavour == "lightgbm" else {}

        def proba(batch: Batch) -> np.ndarray:
            return np.asarray(native.predict_proba(convert(batch), **kwargs), dtype=np.float64)

    def predict(batch: Batch) -> Outputs:
        p = proba(batch)
        return {"predict": classes[np.argmax(p, axis=1)], "predict_proba": p}

    outputs = (
        TensorMeta("predict", v2_datatype(classes.dtype), (-1,)),
        TensorMeta("predict_proba", "FP64", (-1, n)),
    )
    return Predictor(predict, outputs, "predict_proba", 1 if n == 2 else None)


def _fast_proba(
    native: Any, flavour: str, inputs: Inputs, threads: int, n_classes: int
) -> Callable[[Batch], np.ndarray] | None:
    """A gradient-boosted classifier's probabilities straight from its booster on the numeric
    matrix (no DataFrame, no per-call validation); None when that is not possible or does not
    match ``predict_proba`` on the input example."""
    if flavour == "sklearn":
        return sklearn_columns_fast(native, inputs, "predict_proba")
    if inputs.layout is not Layout.COLUMNS or not isinstance(inputs.example, np.ndarray):
        return None
    raw: Callable[[np.ndarray], np.ndarray] | None = None
    if flavour == "lightgbm" and hasattr(native, "booster_"):
        booster = native.booster_
        n_out = int(booster.num_model_per_iteration())
        fast = lightgbm_fast_predict(booster, n_out, threads, int(booster.num_feature()))
        raw = fast
    elif flavour == "xgboost" and hasattr(native, "get_booster"):
        xgb = native.get_booster()

        def raw(batch: np.ndarray) -> np.ndarray:
            return np.asarray(xgb.inplace_predict(batch), dtype=np.float64)

    if raw is None:
        return None
    inner = raw

    def proba(batch: Batch) -> np.ndarray:
        p = inner(np.asarray(batch))
        if p.ndim == 1 and n_classes == 2:
            return np.column_stack([1.0 - p, p])
        return p

    example = inputs.example
    try:
        expected = np.asarray(
            native.predict_proba(estimator_input(native, inputs)(example)), dtype=np.float64
        )
        same = np.allclose(proba(example), expected, rtol=1e-6, atol=1e-9)
    except Exception:
        same = False
    if not same:
        log.warning("the %s booster disagrees with predict_proba; using predict_proba", flavour)
        return None
    return proba


def sklearn_columns_fast(
    native: Any, inputs: Inputs, method: str
) -> Callable[[Batch], np.ndarray] | None:
    """A Pipeline's ``method`` (``predict`` or ``predict_proba``) on typed columns with its
    ColumnTransformer done in numpy (``usina.serving.sklearn_fast``); None when the Pipeline
    has another shape or the result differs from the Pipeline's own on a probe batch holding
    every known category."""
    from usina.serving import sklearn_fast

    names = inputs.names

    def columns(batch: Batch) -> dict[str, np.ndarray]:
        if isinstance(batch, dict):
            return batch
        return {n: batch[:, i] for i, n in enumerate(names)}  # COLUMNS: views, no copy

    example = inputs.example
    if not isinstance(example, dict) and (inputs.layout is not Layout.COLUMNS or example.ndim != 2):
        return None
    strings = frozenset(m.name for m in inputs.metas if m.datatype == "BYTES")
    try:
        compiled = sklearn_fast.compile_column_pipeline(native, inputs.names, strings)
    except Exception as exc:  # an unexpected Pipeline: keep calling it
        log.debug("no fast path for this Pipeline: %s", exc)
        compiled = None
    if compiled is None:
        return None
    features, middle, final = compiled
    final_call = getattr(final, method)
    native_call = getattr(native, method)
    convert = estimator_input(native, inputs)
    proba = method == "predict_proba"

    def slow(batch: Batch) -> np.ndarray:
        out = native_call(convert(batch))
        return np.asarray(out, dtype=np.float64) if proba else np.asarray(out)

    def call(batch: Batch) -> np.ndarray:
        if not isinstance(batch, dict) and batch.ndim != 2:
            return slow(batch)
        try:
            x = features(columns(batch))
        except sklearn_fast.NotCompiled:
            return slow(batch)
        for step in middle:
            x = step.transform(x)
        out = final_call(x)
        return np.asarray(out, dtype=np.float64) if proba else np.asarray(out)

    try:
        probe_columns = sklearn_fast.probe_batch(native, columns(example))
        probe: Batch = probe_columns
        if not isinstance(example, dict):  # back to the matrix the batcher hands over
            probe = np.column_stack([probe_columns[n] for n in names]).astype(example.dtype)
        same = sklearn_fast.agrees(call(probe), slow(probe))
    except Exception as exc:
        log.debug("the Pipeline's fast path failed on its probe: %s", exc)
        same = False
    if not same:
        log.warning("the numpy ColumnTransformer disagrees with the Pipeline; calling the Pipeline")
        return None
    return call


# --------------------------------------------------------------------------- LightGBM's C API

_LGB_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}  # C_API_DTYPE_FLOAT32/64


def lightgbm_fast_predict(booster: Any, n_out: int, threads: int, n_features: int) -> Any:
    """Call LGBM_BoosterPredictForMat directly: Booster.predict spends ~50-100 us per call on
    Python-side checks and copies, which is most of the cost of a one-row batch. Returns None
    (use Booster.predict) when the C API is not reachable or disagrees with Booster.predict."""
    import ctypes

    try:
        from lightgbm.basic import _LIB, _safe_call  # type: ignore[attr-defined]

        handle = booster._handle
    except (ImportError, AttributeError):
        return None
    params = ctypes.c_char_p(f"num_threads={threads}".encode())

    def fast(batch: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(batch)
        rows, cols = data.shape
        out = np.empty(rows * n_out, dtype=np.float64)
        out_len = ctypes.c_int64(0)
        _safe_call(
            _LIB.LGBM_BoosterPredictForMat(
                handle,
                data.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(_LGB_DTYPES[data.dtype]),
                ctypes.c_int32(rows),
                ctypes.c_int32(cols),
                ctypes.c_int(1),  # row major
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL, as Booster.predict()
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # all iterations
                params,
                ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        return out if n_out == 1 else out.reshape(rows, n_out)

    probe = np.random.default_rng(0).normal(size=(7, n_features))
    try:
        same = np.allclose(fast(probe), booster.predict(probe), rtol=0, atol=1e-12)
    except Exception:
        same = False
    if not same:
        log.warning("LightGBM's C API disagrees with Booster.predict; using Booster.predict")
        return None
    return fast


def _single_output_name(signature: Any) -> str | None:
    if signature is None or signature.outputs is None:
        return None
    outputs = signature.outputs.inputs
    if len(outputs) == 1 and outputs[0].name:
        return str(outputs[0].name)
    return None
