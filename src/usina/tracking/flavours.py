"""The model flavours usina logs, gates and serves: one table for the registry and serving.

A flavour is MLflow's name for how a model is saved (``MLmodel``'s ``flavors``). For each one
usina supports, this table says how to log it, load it back (the native object: a LightGBM
``Booster``, a scikit-learn estimator, an ONNX Runtime session...), score a test set with it
for the promotion gate, and which Open Inference Protocol ``platform`` it is served as.
Serving picks the first native flavour a model has, in table order, and falls back to MLflow
pyfunc. Adding a flavour: a row here, then its batch predictor in ``usina.serving.loader``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usina.errors import MissingExtraError
from usina.tracking import adapter

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy as np
    import pandas as pd


@dataclass(frozen=True, slots=True)
class Flavour:
    """One model flavour. name: MLflow's flavour key in ``MLmodel``; module: the ``mlflow.X``
    module that logs and loads it; platform: the V2 metadata ``platform``; package: the pip
    distribution pinned in a logged model's requirements (None: MLflow decides)."""

    name: str
    module: str
    platform: str
    package: str | None

    def load(self, uri: str) -> Any:
        """The native model at ``uri`` (a model directory or ``models:/NAME/VERSION``)."""
        if self.name == "onnx":
            local = Path(uri) / "MLmodel"
            if local.is_file():  # ONNX Runtime reads the graph file: no need for onnx itself
                data = adapter.model_metadata(uri).flavors["onnx"]["data"]
                return _onnx_session(str(Path(uri) / data))
            return _onnx_session(adapter.submodule("onnx").load_model(uri).SerializeToString())
        return adapter.submodule(self.module).load_model(uri)

    def log(self, model: Any, *, signature: Any, example: Any) -> Any:
        """Log ``model`` as artifact ``model`` of the active run; MLflow's ``ModelInfo``."""
        return _LOGGERS.get(self.name, _log_plain)(self, model, signature, example)

    def score(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """Scores of ``features`` for the promotion gate: higher means more likely positive
        (a classifier's probability of class 1, a regressor's or booster's prediction)."""
        return _SCORERS.get(self.name, _score_predict)(model, features)


FLAVOURS: tuple[Flavour, ...] = (
    Flavour("lightgbm", "lightgbm", "lightgbm", "lightgbm"),
    Flavour("xgboost", "xgboost", "xgboost", "xgboost"),
    Flavour("sklearn", "sklearn", "sklearn", "scikit-learn"),
    Flavour("onnx", "onnx", "onnxruntime_onnx", "onnxruntime"),
    Flavour("pytorch", "pytorch", "pytorch_torchscript", "torch"),
    Flavour("python_function", "pyfunc", "mlflow_pyfunc", None),
)
"""Native flavours in the order serving prefers them, then MLflow pyfunc, the fallback."""

_BY_NAME = {f.name: f for f in FLAVOURS}
PYFUNC = _BY_NAME["python_function"]

NAMES: tuple[str, ...] = tuple(
    sorted({f.name for f in FLAVOURS} | {"pyfunc"})
)  # "pyfunc" is accepted as the short name of python_function


def flavour(name: str) -> Flavour:
    """The flavour called ``name`` ("pyfunc" names python_function); ValueError listing them."""
    found = _BY_NAME.get("python_function" if name == "pyfunc" else name)
    if found is None:
        raise ValueError(f"flavor {name!r} is not one of {list(NAMES)}")
    return found


def serving_flavour(logged: Mapping[str, Any]) -> Flavour | None:
    """The flavour a model with ``logged`` flavours (``MLmodel``'s) is served with, or None."""
    for candidate in FLAVOURS:
        if candidate.name in logged:
            return candidate
    return None


def _requirements(f: Flavour) -> list[str] | None:
    if f.package is None:
        return None
    from importlib import metadata

    try:
        return [f"{f.package}=={metadata.version(f.package)}".split("+")[0]]
    except metadata.PackageNotFoundError:
        return None


def _log_plain(f: Flavour, model: Any, signature: Any, example: Any) -> Any:
    return adapter.submodule(f.module).log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=_requirements(f),
    )


def _log_pyfunc(f: Flavour, model: Any, signature: Any, example: Any) -> Any:
    return adapter.submodule("pyfunc").log_model(
        name="model", python_model=model, signature=signature, input_example=example
    )


def _log_onnx(f: Flavour, model: Any, signature: Any, example: Any) -> Any:
    # An ONNX graph takes a tensor, not a frame: its example is the features as float32.
    import numpy as np

    rows = (
        example.to_numpy(dtype=np.float32, copy=True) if hasattr(example, "to_numpy") else example
    )
    return adapter.submodule("onnx").log_model(
        model, name="model", input_example=rows, pip_requirements=_requirements(f)
    )


def _log_pytorch(f: Flavour, model: Any, signature: Any, example: Any) -> Any:
    # PyTorch models take a float32 matrix of the features, in the signature's order; the
    # signature is inferred from that matrix and the model's output on it.
    import numpy as np
    import torch

    rows = example.to_numpy(dtype=np.float32, copy=True)
    with torch.no_grad():
        out = model(torch.as_tensor(rows)).numpy()
    return adapter.submodule("pytorch").log_model(
        model,
        name="model",
        signature=adapter.infer_signature(rows, out),
        input_example=rows,
        pip_requirements=_requirements(f),
    )


_LOGGERS: dict[str, Callable[[Flavour, Any, Any, Any], Any]] = {
    "python_function": _log_pyfunc,
    "onnx": _log_onnx,
    "pytorch": _log_pytorch,
}


def _positive(values: Any) -> np.ndarray:
    """A prediction as one score per row: the last column of a two-column probability."""
    import numpy as np

    out = np.asarray(values, dtype=np.float64)
    if out.ndim == 2:
        out = out[:, -1] if out.shape[1] == 2 else out[:, 0]
    return out.reshape(-1)


def _score_predict(model: Any, features: pd.DataFrame) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return _positive(model.predict_proba(features))
    return _positive(model.predict(features))


def _score_lightgbm(model: Any, features: pd.DataFrame) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return _positive(model.predict_proba(features))
    names = list(model.feature_name())
    missing = set(names) - set(features.columns)
    if missing:
        raise ValueError(f"it needs features this data lacks: {sorted(missing)}")
    return _positive(model.predict(features[names]))


def _score_xgboost(model: Any, features: pd.DataFrame) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return _positive(model.predict_proba(features))
    return _positive(model.inplace_predict(features))


def _score_pytorch(model: Any, features: pd.DataFrame) -> np.ndarray:
    # One logit per row; the score is its sigmoid.
    import numpy as np
    import torch

    with torch.no_grad():
        x = torch.as_tensor(features.to_numpy(dtype=np.float32, copy=True))
        out = torch.sigmoid(torch.as_tensor(model(x))).reshape(-1)
    return out.numpy().astype(np.float64)


def _score_onnx(model: Any, features: pd.DataFrame) -> np.ndarray:
    import numpy as np

    session = model if hasattr(model, "get_inputs") else _onnx_session(model.SerializeToString())
    feed = {session.get_inputs()[0].name: features.to_numpy(dtype=np.float32, copy=True)}
    outputs = session.run(None, feed)
    floats = [o for o in outputs if np.asarray(o).dtype.kind == "f"]
    return _positive(floats[-1] if floats else outputs[0])


_SCORERS: dict[str, Callable[[Any, pd.DataFrame], np.ndarray]] = {
    "lightgbm": _score_lightgbm,
    "xgboost": _score_xgboost,
    "pytorch": _score_pytorch,
    "onnx": _score_onnx,
}


def _onnx_session(graph: str | bytes) -> Any:
    """An ONNX Runtime session (CPU) for an ONNX graph (a file, or serialized bytes)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx") from exc
    return onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
