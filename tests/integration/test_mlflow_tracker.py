"""MlflowTracker and the registry gate against a real ``mlflow server`` (SQLite, loopback).

The fraud pipeline runs three times on a small dataset through the real command line (engine,
local backend, SQLite metadata, MLflow tracking to the server): a modest model becomes
``champion``; a deliberately worse one only becomes ``challenger``; a better one takes
``champion``. ``MlflowClient`` then shows the parent and nested runs, their metrics and
lineage, and the aliases. A re-run of the unchanged pipeline takes every cacheable step from
the cache and says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_helpers import Usina
from usina.engine.records import RunRecord
from usina.stores import serializers
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.sql import SqlMetadataStore

REPO = Path(__file__).resolve().parents[2]

ROWS = 30_000
MODEST = {"max_rounds": 12, "num_leaves": 7}
WORSE = {"max_rounds": 2, "num_leaves": 2, "learning_rate": 0.01, "min_child_samples": 2000}
BETTER: dict[str, object] = {}  # the pipeline's defaults
STARTUP_TIMEOUT = 240.0  # seconds; a cold `mlflow server` can take a minute on a busy 2-core box

# Starting the server dominates; on a loaded 2-core machine it alone can take minutes.
pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    command = [
        str(exe) if exe.exists() else shutil.which("mlflow") or "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (root / "server.log").open("w")
    # Its own session: `mlflow server` starts uvicorn as a child, and stopping the server must
    # stop the whole group. No background job runner: the tests need none.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {proc.returncode}:\n"
                    + (root / "server.log").read_text()[-3000:]
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not up after {STARTUP_TIMEOUT}s:\n"
                    + (root / "server.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def runs(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The three pipeline runs, in order: (RunRecord, {"register": [decision]}) each."""
    from usina.tracking.mlflow import MlflowTracker

    home = tmp_path_factory.mktemp("usina")
    usina = Usina(home)
    usina.env["MLFLOW_TRACKING_URI"] = mlflow_server
    pipeline = str(REPO / "examples" / "fraud" / "pipeline.py")
    out: dict[str, object] = {"tracker": MlflowTracker(mlflow_server), "usina": usina}
    for name, params in (("modest", MODEST), ("worse", WORSE), ("better", BETTER)):
        args = ["run", pipeline, "-p", f"rows={ROWS}", "-o", "json"]
        for key, value in params.items():
            args += ["-p", f"{key}={value}"]
        res = usina(*args, timeout=600)
        assert res.code == 0, res.out[-3000:] + res.err[-3000:]
        summary = res.json()
        register = next(s for s in summary["steps"] if s["node"] == "register")
        ref = register["outputs"][0]
        store = FsspecArtifactStore(str(home / ".usina" / "artifacts"))
        decision = serializers.load(
            store.get_bytes(ref["digest"]), ref["serializer"], ref["type_name"]
        )
        metadata = SqlMetadataStore(f"sqlite:///{home}/.usina/usina.db")
        try:
            record = metadata.get_run(summary["id"])
        finally:
            metadata.close()
        out[name] = (record, {"register": [decision]})
    return out


def _decision(runs: dict[str, object], name: str) -> dict[str, object]:
    _, outputs = runs[name]  # type: ignore[misc]
    decision: dict[str, object] = outputs["register"][0]
    print(name, decision["reason"])
    return decision


def test_registry_gate_moves_champion_only_for_a_better_model(
    mlflow_server: str, runs: dict[str, object]
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    modest, worse, better = (_decision(runs, n) for n in ("modest", "worse", "better"))

    assert modest["promoted"] is True
    assert modest["champion_score"] is None
    assert worse["promoted"] is False
    assert worse["champion_version"] == modest["version"]
    assert worse["champion_score"] == pytest.approx(modest["challenger_score"])
    assert worse["challenger_score"] < worse["champion_score"]
    assert better["promoted"] is True
    assert better["champion_version"] == modest["version"]
    assert better["challenger_score"] > better["champion_score"]

    champion = client.get_model_version_by_alias("fraud", "champion")
    challenger = client.get_model_version_by_alias("fraud", "challenger")
    assert champion.version == better["version"] == challenger.version
    assert [int(v.version) for v in client.search_model_versions("name = 'fraud'")] == [3, 2, 1]
    assert champion.tags["gate.decision"] == "promoted"
    # The version names the usina run and step that registered it (the UI links them).
    assert champion.tags["usina.run_id"] == runs["better"][0].id  # type: ignore[index]
    assert champion.tags["usina.step"] == "register"
    assert client.get_model_version("fraud", worse["version"]).tags["gate.decision"] == (
        "kept champion"
    )
    # The decision and both numbers are logged on the register step's run.
    reg = client.get_run(str(worse["run_id"]))
    assert reg.data.metrics["gate.promoted"] == 0.0
    assert reg.data.metrics["gate.champion_pr_auc"] == pytest.approx(worse["champion_score"])
    assert reg.data.metrics["gate.challenger_pr_auc"] == pytest.approx(worse["challenger_score"])
    assert "does not beat" in reg.data.tags["gate.decision"]


def test_runs_are_parent_and_nested_with_metrics_and_lineage(
    mlflow_server: str, runs: dict[str, object]
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("fraud")
    assert exp is not None
    better: RunRecord = runs["better"][0]  # type: ignore[index]
    parents = client.search_runs(
        [exp.experiment_id], f"tags.`usina.kind` = 'run' and tags.`usina.run_id` = '{better.id}'"
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    for key in ("usina.version", "usina.pipeline_hash", "usina.data_hash", "usina.git_commit"):
        assert tags.get(key), key
    assert parent.data.params["rows"] == str(ROWS)
    assert parent.data.metrics["evaluate.pr_auc"] > 0.3

    steps = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    names = sorted(r.data.tags["usina.node"] for r in steps)
    assert names == sorted(
        ["ingest", "validate", "features", "split", "train", "evaluate", "register"]
    )
    by_node = {r.data.tags["usina.node"]: r for r in steps}
    assert all(r.info.status == "FINISHED" for r in steps)
    assert by_node["evaluate"].data.metrics["credit.pr_auc"] > 0
    assert by_node["train"].data.params["num_leaves"] == "31"
    assert by_node["ingest"].data.tags["usina.outputs"].startswith("sha256:")
    assert tags["usina.data_hash.ingest"] == by_node["ingest"].data.tags["usina.outputs"]


def test_a_restarted_tracker_finds_its_runs_instead_of_duplicating(
    mlflow_server: str, runs: dict[str, object]
) -> None:
    from mlflow import MlflowClient

    from usina.tracking.mlflow import MlflowTracker

    run, _ = runs["modest"]  # type: ignore[misc]
    first = runs["tracker"]
    again = MlflowTracker(mlflow_server)  # a fresh process: nothing remembered
    assert again.parent_run_id(run) == first.parent_run_id(run)  # type: ignore[attr-defined]
    env = again.step_started(run, "train")
    assert env["MLFLOW_RUN_ID"] == first.step_run_id(run, "train")  # type: ignore[attr-defined]
    assert env["MLFLOW_TRACKING_URI"] == mlflow_server
    again.run_started(run)
    again.run_finished(run)

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("fraud")
    assert exp is not None
    same = client.search_runs([exp.experiment_id], f"tags.`usina.run_id` = '{run.id}'")
    assert len(same) == 8  # one parent + seven steps, however often they were reported


def test_rerunning_the_unchanged_pipeline_takes_every_cacheable_step_from_the_cache(
    runs: dict[str, object],
) -> None:
    usina: Usina = runs["usina"]  # type: ignore[assignment]
    pipeline = str(REPO / "examples" / "fraud" / "pipeline.py")
    res = usina("run", pipeline, "-p", f"rows={ROWS}", timeout=600)  # same params as "better"
    assert res.code == 0, res.out[-3000:] + res.err[-3000:]
    summary = res.out.strip().splitlines()[-1]
    print(summary)
    assert "1 ran, 6 from cache" in summary
    assert "cached: ingest, validate, features, split, train, evaluate" in summary
