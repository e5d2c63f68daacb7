"""The MLflow adapter: the one module of usina that imports ``mlflow``.

Everything else (the tracker, the registry gate, the flavour table, serving's loader, the
server's models pages) asks this module for the library, a client, or one of its types, so a
missing extra fails in one place with the ``pip install`` line, and an MLflow upgrade is checked
in one place. A test pins that no other module under ``src/`` imports mlflow.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from usina.errors import MissingExtraError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mlflow import MlflowClient as MlflowClient


def mlflow() -> Any:
    """The ``mlflow`` package; ``MissingExtraError`` naming the extra when it is not installed."""
    try:
        import mlflow as module
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError("mlflow", "mlflow") from exc
    return module


def submodule(name: str) -> Any:
    """``mlflow.<name>`` (a flavour such as ``sklearn``, or ``models``, ``entities``...)."""
    mlflow()
    return importlib.import_module(f"mlflow.{name}")


def new_client(tracking_uri: str) -> MlflowClient:
    """A fresh client on ``tracking_uri`` (also its registry)."""
    made: MlflowClient = mlflow().MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return made


@functools.lru_cache(maxsize=8)
def client(tracking_uri: str) -> MlflowClient:
    """One shared client per URI: building one (and its database engine) per call is slow."""
    return new_client(tracking_uri)


def error_type() -> type[Exception]:
    """``MlflowException``, to catch the errors MLflow raises."""
    kind: type[Exception] = submodule("exceptions").MlflowException
    return kind


def error_code(exc: BaseException) -> str:
    """MLflow's error code of ``exc`` (e.g. ``RESOURCE_DOES_NOT_EXIST``); "" for others."""
    return str(getattr(exc, "error_code", "") or "")


def infer_signature(model_input: Any, model_output: Any = None) -> Any:
    return submodule("models").infer_signature(model_input, model_output)


def model_metadata(path: str) -> Any:
    """The ``MLmodel`` file of a model directory: its flavours and signature."""
    return submodule("models").Model.load(path)


def download_model(name: str, version: str, dst_path: str, tracking_uri: str) -> str:
    """Download the files of version ``version`` of registered model ``name`` to ``dst_path``;
    returns the folder. The version's files are looked up in the registry at ``tracking_uri``
    (never in MLflow's process-wide default, which is not usina's)."""
    source = client(tracking_uri).get_model_version_download_uri(name, version)
    path: str = submodule("artifacts").download_artifacts(
        artifact_uri=source, dst_path=dst_path, tracking_uri=tracking_uri
    )
    return path


def download_run_artifact(run_id: str, artifact_path: str, dst_path: str, tracking_uri: str) -> str:
    path: str = submodule("artifacts").download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=dst_path, tracking_uri=tracking_uri
    )
    return path


def batch_entities(
    metrics: dict[str, float], params: dict[str, str], tags: dict[str, str], stamp: int
) -> tuple[list[Any], list[Any], list[Any]]:
    """MLflow's ``Metric``, ``Param`` and ``RunTag`` records for ``log_batch``."""
    entities = submodule("entities")
    return (
        [entities.Metric(k, v, stamp, 0) for k, v in metrics.items()],
        [entities.Param(k, v) for k, v in params.items()],
        [entities.RunTag(k, v) for k, v in tags.items()],
    )


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """MLflow prints "View run ... at" to stdout when a run ends on a tracking server; the
    library must not write into the CLI's stdout (``--output json`` is parsed by tools)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def short_http(timeout: float) -> Iterator[None]:
    """MLflow's HTTP client retries for minutes by default; a report wants an answer fast."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
