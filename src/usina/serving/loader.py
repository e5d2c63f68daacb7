"""Loading a model from an MLflow URI, through the MLflow adapter and its flavour table.

A URI is ``models:/name@alias`` (the alias is re-resolved by :meth:`ModelSource.resolve` so the
server can follow it), ``models:/name/version`` (fixed) or a local MLflow model directory. The
registry is the one ``usina run`` logs to (``usina.tracking.uri``) unless another is given. The
model is loaded with its native flavour when there is one (``usina.tracking.flavours.FLAVOURS``,
in that order) and with MLflow pyfunc otherwise; its input and output metadata come from the
MLflow signature (or, for tree models logged without one, from the model itself).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usina.serving.errors import ModelLoadError
from usina.serving.model import Layout, LoadedModel, TensorMeta, v2_datatype
from usina.tracking import adapter
from usina.tracking.flavours import serving_flavour
from usina.tracking.uri import default_tracking_uri

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")

# MLflow column type -> V2 datatype.
_COLUMN_TYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
}


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a served model comes from, parsed from its URI."""

    uri: str
    name: str
    alias: str | None = None
    version: str | None = None
    local_path: str | None = None
    tracking_uri: str | None = None

    @classmethod
    def parse(cls, uri: str, tracking_uri: str | None = None) -> ModelSource:
        match = _MODELS_URI.match(uri)
        if match:
            return cls(
                uri=uri,
                name=match["name"],
                alias=match["alias"],
                version=match["version"],
                tracking_uri=tracking_uri or default_tracking_uri(),
            )
        if uri.startswith("models:"):
            raise ModelLoadError(
                f"cannot parse model URI {uri!r}; use models:/NAME@ALIAS, models:/NAME/VERSION "
                "or a local MLflow model directory"
            )
        path = Path(uri.removeprefix("file://")).expanduser()
        if not (path / "MLmodel").is_file():
            raise ModelLoadError(
                f"{uri!r} is not a registry URI and {path} holds no MLmodel file; pass "
                "models:/NAME@ALIAS, models:/NAME/VERSION or an MLflow model directory"
            )
        return cls(uri=uri, name=path.resolve().name, local_path=str(path.resolve()))

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def resolve(self) -> str:
        """The version the URI points at now (an alias is looked up in the registry)."""
        if self.local_path is not None:
            return "1"
        if self.version is not None or self.alias is None:
            return self.version or "1"
        client = adapter.client(self.tracking_uri or default_tracking_uri())
        try:
            return str(client.get_model_version_by_alias(self.name, self.alias).version)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot resolve alias {self.alias!r} of registered model {self.name!r} "
                f"(registry {self.tracking_uri}): {exc}; is MLFLOW_TRACKING_URI (or "
                "--tracking-uri) the registry the model was registered in?"
            ) from exc

    def load(self, served_name: str, version: str, predict_threads: int = 1) -> LoadedModel:
        """Download and load ``version`` (ignored for a local path); warm it up once."""
        tmp: str | None = None
        try:
            if self.local_path is not None:
                path = self.local_path
            else:
                tmp = tempfile.mkdtemp(prefix="usina-serve-")
                registry = self.tracking_uri or default_tracking_uri()
                path = adapter.download_model(self.name, version, tmp, registry)
            model = _load_path(Path(path), served_name, version, predict_threads)
            _warm_up(model)
        except ModelLoadError:
            _remove(tmp)
            raise
        except Exception as exc:
            _remove(tmp)
            raise ModelLoadError(
                f"cannot load version {version} of {self.uri!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if tmp is not None:
            # Some flavours read files lazily: keep the download until the model is released.
            weakref.finalize(model, _remove, tmp)
        return model


def _remove(path: str | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def _warm_up(model: LoadedModel) -> None:
    """Predict once on zeros so a broken model fails at load, not on the first request."""
    if model.layout is Layout.COLUMNS:
        batch = np.zeros((1, len(model.inputs)), dtype=model.batch_dtype)
    else:
        shape = tuple(1 if d < 0 else d for d in model.inputs[0].shape)
        batch = np.zeros(shape, dtype=model.batch_dtype)
    outputs = model.predict(batch)
    missing = {o.name for o in model.outputs} - set(outputs)
    if missing:
        raise ModelLoadError(f"model {model.name!r} did not return outputs {sorted(missing)}")


def _load_path(path: Path, served_name: str, version: str, threads: int) -> LoadedModel:
    meta = adapter.model_metadata(str(path))
    flavours: dict[str, Any] = meta.flavors
    signature = meta.signature
    kind = serving_flavour(flavours)
    if kind is None:
        raise ModelLoadError(f"{path} has no loadable flavour (found {sorted(flavours)})")
    flavour = kind.name
    native = kind.load(str(path))

    inputs, layout = _input_metadata(signature, native, flavour)
    batch_dtype = (
        np.dtype(np.float64)
        if layout is Layout.COLUMNS
        else np.dtype(inputs[0].dtype if inputs[0].datatype != "BYTES" else object)
    )
    predict, outputs, score, score_col = _predictor(
        native, flavour, signature, inputs, layout, threads
    )
    return LoadedModel(
        name=served_name,
        version=version,
        platform=kind.platform,
        flavour=flavour,
        layout=layout,
        inputs=inputs,
        outputs=outputs,
        predict=predict,
        batch_dtype=batch_dtype,
        score_output=score,
        score_column=score_col,
    )


def _input_metadata(
    signature: Any, native: Any, flavour: str
) -> tuple[tuple[TensorMeta, ...], Layout]:
    if signature is not None and signature.inputs is not None:
        schema = signature.inputs
        if schema.is_tensor_spec():
            specs = schema.inputs
            if len(specs) != 1:
                raise ModelLoadError(
                    f"models with {len(specs)} tensor inputs are not served yet; log one tensor"
                )
            spec = specs[0]
            name = spec.name or "input-0"
            return (
                (TensorMeta(name, v2_datatype(spec.type), tuple(spec.shape)),),
                Layout.TENSOR,
            )
        metas = []
        for i, col in enumerate(schema.inputs):
            datatype = _COLUMN_TYPES.get(getattr(col.type, "name", str(col.type)))
            if datatype is None:
                raise ModelLoadError(
                    f"input column {col.name!r} has type {col.type}; only numeric and boolean "
                    "columns are served"
                )
            metas.append(
                TensorMeta(col.name or f"input-{i}", datatype, (-1,), optional=not col.required)
            )
        return tuple(metas), Layout.COLUMNS
    names = _native_feature_names(native, flavour)
    if not names:
        raise ModelLoadError(
            "the model has no signature and its features cannot be read from it; log it with "
            "mlflow's signature= (e.g. infer_signature(X, model.predict(X)))"
        )
    return tuple(TensorMeta(n, "FP64", (-1,)) for n in names), Layout.COLUMNS


def _native_feature_names(native: Any, flavour: str) -> list[str]:
    if flavour == "lightgbm":
        booster = getattr(native, "booster_", native)
        return [str(n) for n in booster.feature_name()]
    if flavour in ("sklearn", "xgboost"):
        names = getattr(native, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        n = getattr(native, "n_features_in_", None)
        if n is not None:
            return [f"f{i}" for i in range(int(n))]
        feature_names = getattr(native, "feature_names", None)
        if feature_names:
            return [str(n) for n in feature_names]
    return []


def _predictor(
    native: Any,
    flavour: str,
    signature: Any,
    inputs: tuple[TensorMeta, ...],
    layout: Layout,
    threads: int,
) -> tuple[Any, tuple[TensorMeta, ...], str | None, int | None]:
    """The batch predict function, the outputs it returns, and which output is the score."""
    out_name = _single_output_name(signature) or "predict"
    if hasattr(native, "predict_proba") and hasattr(native, "classes_"):
        return _classifier(native, flavour, threads)

    if flavour == "lightgbm":
        booster = native
        n_out = int(booster.num_model_per_iteration())
        fast = _lightgbm_fast_predict(booster, n_out, threads, int(booster.num_feature()))

        def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
            if fast is not None and batch.dtype in _LGB_DTYPES and batch.ndim == 2:
                return {out_name: fast(batch)}
            return {out_name: np.asarray(booster.predict(batch, num_threads=threads))}

        shape: tuple[int, ...] = (-1,) if n_out == 1 else (-1, n_out)
        return predict, (TensorMeta(out_name, "FP64", shape),), out_name, None

    if flavour == "xgboost":
        xgb_booster = getattr(native, "get_booster", lambda: native)()

        def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
            return {out_name: np.asarray(xgb_booster.inplace_predict(batch), dtype=np.float64)}

        probe = predict(np.zeros((1, len(inputs))))[out_name]
        shape = (-1, *tuple(probe.shape[1:]))
        return predict, (TensorMeta(out_name, "FP64", shape),), out_name, None

    if flavour == "onnx":
        session = native
        in_name = session.get_inputs()[0].name
        out_names = [o.name for o in session.get_outputs()]

        def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
            values = session.run(out_names, {in_name: batch})
            return {n: np.asarray(v) for n, v in zip(out_names, values, strict=True)}

        return _probed(predict, inputs, layout)

    if flavour == "pytorch":
        import torch

        module = native.eval()

        def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
            with torch.no_grad():
                result = module(torch.from_numpy(np.ascontiguousarray(batch)))
            return {out_name: result.detach().cpu().numpy()}

        return _probed(predict, inputs, layout)

    if flavour == "sklearn":

        def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
            return {out_name: np.asarray(native.predict(batch))}

        return _probed(predict, inputs, layout)

    return _pyfunc(native, inputs, layout)


_LGB_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}  # C_API_DTYPE_FLOAT32/64


def _lightgbm_fast_predict(booster: Any, n_out: int, threads: int, n_features: int) -> Any:
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


def _probed(
    predict: Any, inputs: tuple[TensorMeta, ...], layout: Layout
) -> tuple[Any, tuple[TensorMeta, ...], str | None, int | None]:
    """Learn output names, dtypes and shapes by predicting one zero row."""
    if layout is Layout.COLUMNS:
        probe_in = np.zeros((1, len(inputs)), dtype=np.float64)
    else:
        probe_in = np.zeros(
            tuple(1 if d < 0 else d for d in inputs[0].shape), dtype=inputs[0].dtype
        )
    probe = predict(probe_in)
    metas = tuple(
        TensorMeta(name, v2_datatype(value.dtype), (-1, *value.shape[1:]))
        for name, value in probe.items()
    )
    first = metas[0]
    score = first.name if first.datatype.startswith("FP") else None
    return predict, metas, score, None


def _classifier(
    native: Any, flavour: str, threads: int
) -> tuple[Any, tuple[TensorMeta, ...], str | None, int | None]:
    classes = np.asarray(native.classes_)
    kwargs = {"num_threads": threads} if flavour == "lightgbm" else {}

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        proba = np.asarray(native.predict_proba(batch, **kwargs), dtype=np.float64)
        return {"predict": classes[np.argmax(proba, axis=1)], "predict_proba": proba}

    n = len(classes)
    outputs = (
        TensorMeta("predict", v2_datatype(classes.dtype), (-1,)),
        TensorMeta("predict_proba", "FP64", (-1, n)),
    )
    return predict, outputs, "predict_proba", (1 if n == 2 else None)


def _pyfunc(
    native: Any, inputs: tuple[TensorMeta, ...], layout: Layout
) -> tuple[Any, tuple[TensorMeta, ...], str | None, int | None]:
    import pandas as pd

    columns = [m.name for m in inputs]
    dtypes = {m.name: m.dtype for m in inputs}

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        data: Any = batch
        if layout is Layout.COLUMNS:
            data = pd.DataFrame(batch, columns=columns).astype(dtypes)
        result = native.predict(data)
        if isinstance(result, pd.DataFrame):
            return {str(c): result[c].to_numpy() for c in result.columns}
        if isinstance(result, dict):
            return {str(k): np.asarray(v) for k, v in result.items()}
        return {"predict": np.asarray(result)}

    return _probed(predict, inputs, layout)


def _single_output_name(signature: Any) -> str | None:
    if signature is None or signature.outputs is None:
        return None
    outputs = signature.outputs.inputs
    if len(outputs) == 1 and outputs[0].name:
        return str(outputs[0].name)
    return None
