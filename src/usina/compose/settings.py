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

    home: the state folder (``USINA_HOME``; default the nearest ``.usina`` folder found walking
        up from the working directory, as git finds ``.git``, else ``./.usina``): SQLite
        database, artifacts, attempt folders and the local MLflow store live here unless overridden.
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
    searched: str = ""  # how ``home`` was found, for messages ("USINA_HOME", "/a/b and up")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cwd: str | None = None) -> Settings:
        env = os.environ if env is None else env
        home, searched = find_home(env, cwd or os.getcwd())
        return cls(
            home=home,
            database_url=env.get("USINA_DATABASE_URL") or f"sqlite:///{home}/usina.db",
            artifacts_url=env.get("USINA_ARTIFACTS_URL") or os.path.join(home, "artifacts"),
            tracking_uri=default_tracking_uri(env, home=home),
            max_parallel=int(env.get("USINA_MAX_PARALLEL") or 4),
            searched=searched,
        )

    def where(self) -> str:
        """The store, in words, for messages: its database and how it was found."""
        return f"{self.database_url} ({self.searched})" if self.searched else self.database_url

    def store_exists(self) -> bool:
        """Whether there is a store to read: a SQLite file in place, or any other database."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            return os.path.exists(self.database_url[len(prefix) :])
        return True

    @property
    def attempts_dir(self) -> str:
        return os.path.join(self.home, "attempts")


def find_home(env: Mapping[str, str], cwd: str) -> tuple[str, str]:
    """``USINA_HOME``, else the nearest ``.usina`` folder at or above ``cwd``, else
    ``cwd/.usina`` (created by the first run); with how it was found."""
    if env.get("USINA_HOME"):
        return os.path.abspath(env["USINA_HOME"]), "from USINA_HOME"
    here = os.path.abspath(cwd)
    while True:
        candidate = os.path.join(here, ".usina")
        if os.path.isdir(candidate):
            return candidate, f"found from {cwd}"
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return os.path.join(os.path.abspath(cwd), ".usina"), f"searched {cwd} and every folder above"
