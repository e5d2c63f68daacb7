"""The fraud reference pipeline end to end, every step in a container.

``usina run examples/fraud/pipeline.py --backend kubernetes`` against the API emulator whose
kubelet starts each pod in podman from the runtime image (tests/k8s/podman_kubelet.py): the
Jobs' containers read and write the artifact store (a mounted folder, as no S3 is here), log
to MLflow (SQLite in the same folder) and register the model.
"""

from __future__ import annotations

import sqlite3

import yaml

from tests.images.conftest import REPO
from tests.integration.cli_helpers import Usina
from tests.k8s.emulator import Emulator
from tests.k8s.podman_kubelet import PodmanKubelet

STEPS = ["ingest", "validate", "features", "split", "train", "evaluate", "register"]


def test_the_fraud_pipeline_runs_end_to_end_in_containers(images, tmp_path):
    usina = Usina(tmp_path)
    state = tmp_path / ".usina"
    state.mkdir()
    mlflow_db = state / "mlflow.db"
    usina.env["MLFLOW_TRACKING_URI"] = f"sqlite:///{mlflow_db}"
    kubelet = PodmanKubelet(mounts=[str(state)], read_only=[str(REPO)])
    with Emulator(kubelet=kubelet) as emu:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emu", "cluster": {"server": emu.url}}],
                    "users": [{"name": "emu", "user": {"token": "x"}}],
                    "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
                    "current-context": "emu",
                }
            )
        )
        usina.env["KUBECONFIG"] = str(kubeconfig)
        res = usina(
            "run",
            str(REPO / "examples/fraud/pipeline.py"),
            "--backend",
            "kubernetes",
            "--allow-local-artifacts",  # the artifact folder is mounted into each container
            "--no-bundle",  # the repository, mounted read-only at its path, is what runs
            "--image",
            images["runtime"],
            "--param",
            "rows=20000",
            "--param",
            "max_rounds=60",
            "-o",
            "json",
            timeout=1500,
        )
        assert res.code == 0, res.out[-4000:] + res.err[-4000:]
        run = res.json()
        assert {s["node"]: s["state"] for s in run["steps"]} == dict.fromkeys(STEPS, "succeeded")
        # Every step ran as a container of the runtime image, one each.
        assert len(kubelet.started) == len(STEPS)
        assert all(images["runtime"] in proc.args for proc in kubelet.started)
        logs = usina("runs", "logs", run["id"], "train")
        assert logs.code == 0, logs.err
    # The register step (in its container) wrote the model version into MLflow's registry.
    with sqlite3.connect(mlflow_db) as db:
        versions = db.execute("SELECT name, version FROM model_versions").fetchall()
    assert ("fraud", 1) in versions
