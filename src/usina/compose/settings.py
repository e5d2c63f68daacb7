"""Settings of the command line and its engine, read from the environment at the edge and
nowhere else (``Settings.from_env``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usina.tracking.uri import default_tracking_uri

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True)
class Settings:
    """Where usina keeps its state.

    home: the state folder (``USINA_HOME``, default ``./.usina``): SQLite database, artifacts,
        attempt folders and the local MLflow store live here unless overridden.
    database_url: metadata store (``USINA_DATABASE_URL``; default SQLite in ``home``;
        ``postgresql://...`` in production).
    artifacts_url: artifact store (``USINA_ARTIFACTS_URL``; default ``home/artifacts``;
        ``s3://...`` or ``gs://...`` in production).
    tracking_uri: MLflow tracking URI (``MLFLOW_TRACKING_URI``; default SQLite in ``home``).
    max_parallel: attempts running at once per run (``USINA_MAX_PARALLEL``, default 4).
    """

    home: str
    database_url: str
    artifacts_url: str
    tracking_uri: str
    max_parallel: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = os.path.abspath(env.get("USINA_HOME") or ".usina")
        return cls(
            home=home,
            database_url=env.get("USINA_DATABASE_URL") or f"sqlite:///{home}/usina.db",
            artifacts_url=env.get("USINA_ARTIFACTS_URL") or os.path.join(home, "artifacts"),
            tracking_uri=default_tracking_uri(env, home=home),
            max_parallel=int(env.get("USINA_MAX_PARALLEL") or 4),
        )

    @property
    def attempts_dir(self) -> str:
        return os.path.join(self.home, "attempts")
