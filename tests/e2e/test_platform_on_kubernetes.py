"""Platform mode end to end: two ``usina server`` replicas on PostgreSQL run a pipeline's steps as
Kubernetes Jobs (the API emulator), with SeaweedFS as the artifact store. The pods are processes
(``ProcessKubelet``) that see only the pod's env (the object store's credentials from a
Secret), a working folder of their own, and their memory limit enforced. The CLI on a laptop
submits a fraud pipeline; the first ``train`` attempt really exceeds its memory limit, is
OOMKilled and retried with more memory; the first ``score`` pod is evicted
(``DisruptionTarget``) and retried as ``preempted``; the replica driving the run is SIGKILLed
mid-run and the other one finishes it; the last step registers a model in a real ``mlflow
server`` (the replicas' tracking URI, artifacts proxied into the same SeaweedFS bucket): the
version carries the usina run's id, its files are objects in the bucket, and it loads back from
the registry; the logs are readable after the Jobs' TTL deleted them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.mlflow_server import MlflowServer
from tests.k8s.emulator import Emulator, PodScript
from tests.k8s.process_kubelet import ProcessKubelet
from tests.seaweedfs import SeaweedS3

# A cold `mlflow server` alone can take minutes on a loaded 2-core machine (about 2 minutes in all
# when it is not); the pytest default of 300 s would cut a slow but healthy run.
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]

CLI = [sys.executable, "-m", "usina.cli.main"]
LEASE_TTL = 3.0
MODEL_NAME = "fraud-platform"  # as the pipeline below names it

PIPELINE = """
from usina import Resources, Retry, pipeline, step

from features import ROWS, featurize

MODEL_NAME = "fraud-platform"


@step
def extract() -> list[int]:
    print(f"extracting {ROWS} rows")
    return featurize(list(range(ROWS)))


@step(retry=Retry(oom=2, oom_grow=1.5), resources=Resources(cpu=1, memory="400Mi"))
def train(rows: list[int]) -> int:
    import os

    print(f"training on {len(rows)} rows", flush=True)
    if os.environ["USINA_ATTEMPT_ID"].endswith("-1"):  # the first attempt needs too much
        ballast = bytearray(600 * 2**20)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
    return sum(rows)


@step(retry=Retry(user=0))
def score(model: int) -> float:
    print(f"scoring model {model}")
    return model / 100


@step(cache=False, resources=Resources(cpu=1, memory="1Gi"))
def register(model: int, scored: float) -> dict:
    # The fraud example's registration path (register_model), with a tiny scikit-learn model.
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from usina.tracking.mlflow import register_model

    features = pd.DataFrame({"amount": [float(i) for i in range(8)], "scored": [scored] * 8})
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clf = LogisticRegression().fit(features, labels)
    decision = register_model(
        clf, name=MODEL_NAME, features=features, labels=labels, metric=roc_auc_score,
        metric_name="auc", flavor="sklearn",
    )
    print(f"registered {MODEL_NAME} v{decision.version}: {decision.reason}")
    return decision.to_json()


@pipeline(tracking="mlflow")
def fraud_platform():
    model = train(extract())
    register(model, score(model))
"""

FEATURES = """
ROWS = 64


def featurize(rows: list[int]) -> list[int]:
    return [r * 2 for r in rows]
"""


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_registered_model(
    mlflow_server: MlflowServer, s3: SeaweedS3, rid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One version of the pipeline's model, champion, made by usina run ``rid`` (tags on the
    version and on its MLflow run); its files are objects under the bucket's MLflow prefix; the
    model loads back from the registry and predicts."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    (version,) = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert version.tags.get("usina.run_id") == rid, version.tags
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == version.version
    made_by = client.get_run(version.run_id)
    assert made_by.data.tags["usina.run_id"] == rid, made_by.data.tags
    assert made_by.data.tags.get("usina.node") == "register", made_by.data.tags

    # The server proxies MLflow's artifacts: mlflow-artifacts:/PATH is s3://BUCKET/mlflow/PATH.
    location = client.get_model_version_download_uri(MODEL_NAME, version.version)
    assert location.startswith("mlflow-artifacts:/"), location
    prefix = f"mlflow/{location.removeprefix('mlflow-artifacts:/').strip('/')}/"
    bucket = s3.client()
    pages = bucket.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    keys = {o["Key"].removeprefix(prefix) for page in pages for o in page.get("Contents", [])}
    assert "MLmodel" in keys, sorted(keys)
    mlmodel = bucket.get_object(Bucket=s3.bucket, Key=f"{prefix}MLmodel")["Body"].read()
    spec = yaml.safe_load(mlmodel)
    assert spec["flavors"]["sklearn"]["pickled_model"] in keys, (spec, sorted(keys))

    # Loaded back through the registry (the test holds no S3 credentials for MLflow).
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    rows = pd.DataFrame({"amount": [0.0, 7.0], "scored": [40.32, 40.32]})
    assert list(model.predict(rows)) == [0, 1]


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3.start(tmp_path / "seaweedfs")
    yield server
    server.stop()


@pytest.fixture
def mlflow_server(tmp_path: Path, s3: SeaweedS3) -> Iterator[MlflowServer]:
    server = MlflowServer.start(tmp_path / "mlflow", s3)
    yield server
    server.stop()


def test_two_replicas_run_a_pipeline_as_jobs(  # type: ignore[no-untyped-def]
    tmp_path: Path,
    postgres_server,
    s3: SeaweedS3,
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = postgres_server.create_database()
    project = tmp_path / "project"
    project.mkdir()
    (project / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    (project / "features.py").write_text(textwrap.dedent(FEATURES))
    artifacts = s3.url("platform")
    kubelet = ProcessKubelet(tmp_path / "pods")
    # The pods' object store credentials come from a Secret (envFrom), as on a cluster.
    kubelet.add_secret("s3-credentials", s3.env())

    with Emulator(kubelet=kubelet) as emulator:
        emulator.script_suffix("-score-1", PodScript("preempt", run=0.5))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emu", "cluster": {"server": emulator.url}}],
                    "users": [{"name": "emu", "user": {"token": "x"}}],
                    "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
                    "current-context": "emu",
                }
            )
        )
        config = tmp_path / "backends.json"
        config.write_text(
            json.dumps(
                {
                    "backend": "kubernetes",
                    "options": {
                        "namespace": "ml",
                        "image": "usina-runtime:test",
                        "disruption_action": "FailJob",  # an eviction is the engine's retry
                        "env_from_secrets": ["s3-credentials"],
                        "ttl_seconds": 2,
                        "log_sync_seconds": 0.5,
                    },
                }
            )
        )
        # The pods run as processes of this machine: they reach SeaweedFS with this env.
        env = {
            **os.environ,
            **s3.env(),
            "USINA_HOME": str(tmp_path / "server-home"),
            "USINA_DATABASE_URL": db,
            "USINA_ARTIFACTS_URL": artifacts,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(project), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        for name in ("USINA_SERVER", "USINA_TOKEN", "MLFLOW_TRACKING_URI"):
            env.pop(name, None)
        # The replicas' MLflow, as the chart gives it (mlflow.trackingUri): the tracking server
        # and registry; the steps get the URI from the server, and MLflow's artifacts go through
        # it to the bucket (the pods hold no MLflow credentials of their own).
        server_env = {**env, "MLFLOW_TRACKING_URI": mlflow_server.url}
        token = subprocess.run(
            [*CLI, "token", "create", "--project", "*", "--role", "admin", "--name", "e2e"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip

        procs: list[subprocess.Popen[bytes]] = []
        urls: list[str] = []
        clients: list[httpx.Client] = []
        cli: subprocess.Popen[str] | None = None
        try:
            # Replica A polls fast and claims the run; B polls slowly (it takes over later).
            for n, poll in enumerate(("0.2", "2")):
                port = free_port()
                with open(tmp_path / f"server{n}.log", "wb") as log:
                    procs.append(
                        subprocess.Popen(
                            [
                                *CLI,
                                "server",
                                "--port",
                                str(port),
                                "--pipelines",
                                str(project / "pipeline.py"),
                                "--backend-config",
                                str(config),
                                "--lease-ttl",
                                str(LEASE_TTL),
                                "--poll-interval",
                                poll,
                            ],
                            env=server_env,
                            cwd=tmp_path,
                            stdout=log,
                            stderr=log,
                            stdin=subprocess.DEVNULL,
                        )
                    )
                urls.append(f"http://127.0.0.1:{port}")
            headers = {"Authorization": f"Bearer {token}"}
            clients += [httpx.Client(base_url=u, headers=headers, timeout=30) for u in urls]

            def up(client: httpx.Client) -> bool:
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            for client in clients:
                wait_until(lambda c=client: up(c), 90, "the servers to start")

            # The laptop: the CLI submits to replica B and follows the run there.
            laptop = {
                **env,
                "USINA_SERVER": urls[1],
                "USINA_TOKEN": token,
                "USINA_HOME": str(tmp_path / "laptop"),
            }
            cli = subprocess.Popen(
                [*CLI, "run", str(project / "pipeline.py"), "--output", "json"],
                env=laptop, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip

            def run_id() -> str | None:
                items = clients[1].get("/api/v1/runs").json()["items"]
                return items[0]["id"] if items else None

            rid = wait_until(run_id, 60, "the run to be submitted")
            # Mid-run: train's first attempt was OOMKilled and its second Job exists.
            wait_until(lambda: emulator.get("jobs", f"{rid}-train-2"), 120, "train's retry")
            from usina.stores.sql import SqlMetadataStore

            store = SqlMetadataStore(db)
            try:
                owner = store.get_run(rid).lease_owner  # type: ignore[attr-defined]
            finally:
                store.close()
            assert owner is not None
            # Either replica may have claimed the run: the one driving it dies.
            drivers = [i for i, p in enumerate(procs) if f":{p.pid}:" in owner]
            assert len(drivers) == 1, f"one replica should drive the run: {owner}"
            victim = drivers[0]
            survivor = clients[1 - victim]
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(timeout=10)
            laptop["USINA_SERVER"] = urls[1 - victim]  # the laptop's later commands

            def finished() -> dict[str, Any] | None:
                shown: dict[str, Any] = survivor.get(f"/api/v1/runs/{rid}").json()
                return shown if shown["state"] in ("succeeded", "failed", "cancelled") else None

            run = wait_until(finished, 240, "the surviving replica to finish the run")
            assert run["state"] == "succeeded", run
            if victim == 0:  # the CLI followed the run on the replica that survived
                out, err = cli.communicate(timeout=60)
                assert cli.returncode == 0, out + err
                assert json.loads(out)["state"] == "succeeded"

            attempts = survivor.get(f"/api/v1/runs/{rid}/attempts").json()
            by_step: dict[str, list[dict[str, Any]]] = {}
            for a in attempts if isinstance(attempts, list) else attempts["items"]:
                by_step.setdefault(a["node"], []).append(a)
            assert [a["failure_class"] for a in by_step["train"]] == ["oom", None]
            assert by_step["train"][0]["reason"] == "OOMKilled"
            assert by_step["train"][1]["resources"]["memory"] == "600Mi"
            assert [a["failure_class"] for a in by_step["score"]] == ["preempted", None]
            assert [a["failure_class"] for a in by_step["extract"]] == [None]
            assert [a["failure_class"] for a in by_step["register"]] == [None]
            # Every attempt was one Job: nothing ran twice across the takeover.
            assert emulator.count("create jobs") == 6

            # The model is registered in MLflow by this run, and its files live in the bucket.
            check_registered_model(mlflow_server, s3, rid, monkeypatch)

            # The Jobs' TTL deletes them and their pods; the logs stay readable.
            wait_until(lambda: not emulator.list("jobs"), 60, "the Jobs' TTL")
            logs = subprocess.run(
                [*CLI, "runs", "logs", rid, "extract"],
                env=laptop, cwd=project, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert logs.returncode == 0, logs.stderr
            assert "extracting 64 rows" in logs.stdout
            scored = survivor.get(f"/api/v1/runs/{rid}/steps/score/logs").text
            assert "scoring model 4032" in scored

            # The chart's Role for these values grants every call the replicas made.
            from tests.deploy.test_rbac import granted
            from usina.deploy.chart import parse_objects, render_chart

            values = {"jobs": {"backend": "kubernetes"}, "artifactsUrl": artifacts}
            objects = parse_objects(render_chart(values, namespace="ml"))
            (role,) = [o for o in objects if o["kind"] == "Role"]
            with emulator.lock:
                calls = set(emulator.access_log)
            assert calls <= granted(role["rules"]), sorted(calls - granted(role["rules"]))
        finally:
            for client in clients:
                client.close()
            if cli is not None:
                if cli.poll() is None:
                    cli.kill()
                cli.communicate(timeout=30)  # close its pipes (no ResourceWarning later)
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
