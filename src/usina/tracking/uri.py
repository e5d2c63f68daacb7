"""Where MLflow lives by default: the one computation of the default tracking URI.

``usina run``, ``usina serve``, ``usina server`` and the registry gate all ask this module, so a
model the demo registers is found by ``usina serve models:/fraud@champion`` with no environment
variable: ``$MLFLOW_TRACKING_URI`` when set, else a SQLite store ``mlflow.db`` in usina's home
(``$USINA_HOME``, default ``./.usina``), with its artifacts next to it in ``mlflow-artifacts``
(MLflow's plain-file store is deprecated). Pure: no mlflow import, nothing created on import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_HOME = ".usina"
"""usina's state folder when ``$USINA_HOME`` is not set (relative to the working directory)."""

DATABASE = "mlflow.db"
ARTIFACTS = "mlflow-artifacts"


def default_home(env: Mapping[str, str] | None = None) -> str:
    """``$USINA_HOME`` or ``./.usina``, made absolute."""
    env = os.environ if env is None else env
    return os.path.abspath(env.get("USINA_HOME") or DEFAULT_HOME)


def local_tracking_uri(home: str | os.PathLike[str]) -> str:
    """The SQLite store in ``home``, as an absolute URI (workers started elsewhere find it)."""
    return f"sqlite:///{Path(home).resolve() / DATABASE}"


def default_tracking_uri(
    env: Mapping[str, str] | None = None, *, home: str | os.PathLike[str] | None = None
) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the SQLite store in ``home`` (default: usina's home).

    Read when called (at the edge, or when a tracker is built), never at import.
    """
    env = os.environ if env is None else env
    explicit = env.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    return local_tracking_uri(default_home(env) if home is None else home)


def artifact_root(uri: str) -> str | None:
    """Where a local SQLite store keeps artifacts (next to the database); a server decides."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / ARTIFACTS).resolve().as_uri()


def local_store_path(uri: str) -> Path | None:
    """The database file of a local SQLite store; None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))
