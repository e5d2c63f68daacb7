"""Fixtures for the serving tests: one local MLflow registry (SQLite + file artifacts) per
session, built in a subprocess by make_models.py, and the server started on free ports."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from serving_support import HERE, Server, start_server


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    root: Path
    x: np.ndarray
    pred_v1: np.ndarray
    pred_v2: np.ndarray
    columns: list[str]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Move an alias by updating MLflow's alias table directly.

        ``make_models.py URI --alias NAME ALIAS VERSION`` does the same through MlflowClient,
        but a fresh mlflow process costs 15-20 s of CPU here; the server under test still reads
        the alias through MlflowClient.
        """
        with sqlite3.connect(self.tracking_uri.removeprefix("sqlite:///")) as db:
            updated = db.execute(
                "UPDATE registered_model_aliases SET version = ? WHERE name = ? AND alias = ?",
                (int(version), name, alias),
            ).rowcount
        assert updated == 1, (name, alias)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    out = root / "out"
    subprocess.run(
        [sys.executable, str(HERE / "make_models.py"), uri, str(out)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return Registry(
        tracking_uri=uri,
        root=root,
        x=np.load(out / "x.npy"),
        pred_v1=np.load(out / "pred_v1.npy"),
        pred_v2=np.load(out / "pred_v2.npy"),
        columns=(out / "columns.txt").read_text().split("\n"),
    )


@pytest.fixture(scope="session")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory):
    """The static model ``fraud@champion`` (version 1), shared by the protocol and fuzz tests."""
    srv = start_server(
        registry.tracking_uri,
        "models:/fraud@champion",
        tmp_path_factory.mktemp("logs"),
        "--max-body-bytes",
        "65536",
    )
    yield srv
    srv.stop()


__all__ = ["Registry", "Server"]
