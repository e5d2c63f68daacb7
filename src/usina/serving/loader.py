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
from usina.serving.model import Batch, Layout, LoadedModel, TensorMeta, v2_datatype
from usina.serving.predictors import Inputs, build
from usina.tracking import adapter
from usina.tracking.flavours import serving_flavour
from usina.tracking.uri import default_tracking_uri

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


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


def _warm_up(model: LoadedModel, example: Batch) -> None:
    """Predict the example once so a broken model fails at load, not on the first request."""
    outputs = model.predict(example)
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

    metas, layout, frame = _input_metadata(signature, native, flavour)
    inputs = Inputs(metas, layout, frame, _example(meta, path, metas, layout))
    predictor = build(native, flavour, signature, inputs, threads)
    model = LoadedModel(
        name=served_name,
        version=version,
        platform=kind.platform,
        flavour=flavour,
        layout=layout,
        inputs=metas,
        outputs=predictor.outputs,
        predict=predictor.predict,
        batch_dtype=np.dtype(np.float64) if layout is Layout.COLUMNS else metas[0].dtype,
        score_output=predictor.score_output,
        score_column=predictor.score_column,
    )
    _warm_up(model, inputs.example)
    return model


# MLflow column type -> V2 datatype.
_COLUMN_TYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
}


def _input_metadata(
    signature: Any, native: Any, flavour: str
) -> tuple[tuple[TensorMeta, ...], Layout, bool]:
    """The inputs, how they are batched, and whether they are a table's columns."""
    if signature is not None and signature.inputs is not None:
        schema = signature.inputs
        if schema.is_tensor_spec():
            specs = schema.inputs
            tensors = tuple(
                TensorMeta(spec.name or f"input-{i}", v2_datatype(spec.type), tuple(spec.shape))
                for i, spec in enumerate(specs)
            )
            if len(tensors) > 1 and any(not spec.name for spec in specs):
                raise ModelLoadError(
                    f"the model takes {len(specs)} tensors, some unnamed; log a signature that "
                    "names each one (infer_signature({'a': ..., 'b': ...}))"
                )
            return tensors, (Layout.TENSOR if len(tensors) == 1 else Layout.NAMED), False
        metas = []
        for i, col in enumerate(schema.inputs):
            type_name = getattr(col.type, "name", str(col.type))
            datatype = _COLUMN_TYPES.get(type_name)
            if datatype is None:
                raise ModelLoadError(
                    f"input column {col.name!r} has type {col.type}; served column types are "
                    f"{', '.join(sorted(_COLUMN_TYPES))}: log it as one of them"
                )
            metas.append(
                TensorMeta(col.name or f"input-{i}", datatype, (-1,), optional=not col.required)
            )
        numeric = all(m.datatype != "BYTES" for m in metas)
        return tuple(metas), (Layout.COLUMNS if numeric else Layout.NAMED), True
    if flavour == "onnx":
        return _onnx_inputs(native)
    names = _native_feature_names(native, flavour)
    if not names:
        raise ModelLoadError(
            "the model has no signature and its features cannot be read from it; log it with "
            "mlflow's signature= (e.g. infer_signature(X, model.predict(X)))"
        )
    return tuple(TensorMeta(n, "FP64", (-1,)) for n in names), Layout.COLUMNS, True


_ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _onnx_inputs(session: Any) -> tuple[tuple[TensorMeta, ...], Layout, bool]:
    """An ONNX graph logged without a signature: its inputs as the graph declares them."""
    metas = []
    for spec in session.get_inputs():
        datatype = _ONNX_TYPES.get(spec.type)
        if datatype is None:
            raise ModelLoadError(f"ONNX input {spec.name!r} has type {spec.type}; not served")
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape)
        metas.append(TensorMeta(spec.name, datatype, shape))
    return tuple(metas), (Layout.TENSOR if len(metas) == 1 else Layout.NAMED), False


def _example(meta: Any, path: Path, metas: tuple[TensorMeta, ...], layout: Layout) -> Batch:
    """A batch the model accepts: the input example logged with it, else zeros (and empty
    strings). The logged example matters for models that reject unknown categories."""
    logged: Any = None
    try:
        logged = meta.load_input_example(str(path))
    except Exception as exc:  # an example that cannot be read is not worth failing the load
        log.debug("the model's input example cannot be read: %s", exc)
    try:
        if logged is not None:
            return _as_batch(logged, metas, layout)
    except Exception as exc:
        log.warning("the model's input example does not fit its signature (%s); using zeros", exc)
    if layout is Layout.COLUMNS:
        return np.zeros((1, len(metas)), dtype=np.float64)
    zeros = {
        m.name: np.full(
            tuple(1 if d < 0 else d for d in m.shape), "" if m.datatype == "BYTES" else 0
        ).astype(m.dtype)
        for m in metas
    }
    return zeros[metas[0].name] if layout is Layout.TENSOR else zeros


def _as_batch(example: Any, metas: tuple[TensorMeta, ...], layout: Layout) -> Batch:
    import pandas as pd

    if isinstance(example, pd.DataFrame):
        if layout is Layout.COLUMNS:
            return np.asarray(example[[m.name for m in metas]].to_numpy(dtype=np.float64))
        return {m.name: example[m.name].to_numpy().astype(m.dtype) for m in metas}
    if isinstance(example, dict):
        return {m.name: np.asarray(example[m.name]).astype(m.dtype) for m in metas}
    array = np.asarray(example)
    if layout is Layout.COLUMNS:
        return array.astype(np.float64).reshape(-1, len(metas))
    return array.astype(metas[0].dtype)


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
