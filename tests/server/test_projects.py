"""The server drives any backend per project (``usina.compose.projects``): the ``risk``
project's steps become Jobs in its own namespace under its Kueue queue, with its service
account and image, while other projects run where the default says; the backend config file
is what the Helm chart renders."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.k8s.emulator import Emulator
from usina.compose.projects import BackendConfig, ProjectBackend, ProjectBackends
from usina.engine.ports import TaskState
from usina.errors import DefinitionError
from usina.runtime.loader import load_pipeline
from usina.server.context import ServerContext
from usina.server.settings import ReconcilerSettings, ServerSettings

PIPE = """
from usina import pipeline, step

@step
def hello() -> int:
    return 1

@pipeline
def greet():
    hello()
"""


def kubeconfig(path: Path, url: str) -> str:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": url}}],
                "users": [{"name": "emu", "user": {"token": "x"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
                "current-context": "emu",
            }
        )
    )
    return str(path)


def test_config_parses_projects_over_the_default() -> None:
    config = BackendConfig.parse(
        {
            "backend": "kubernetes",
            "options": {"namespace": "ml", "image": "usina:1"},
            "projects": {"risk": {"options": {"namespace": "risk-ml", "queue": "risk"}}},
        }
    )
    assert config.of("risk") == ProjectBackend(
        "kubernetes", {"namespace": "risk-ml", "image": "usina:1", "queue": "risk"}
    )
    assert config.of("other") == config.default
    with pytest.raises(DefinitionError, match="unknown key"):
        BackendConfig.parse({"projects": {"risk": {"namespce": "x"}}})


def test_each_project_runs_on_its_own_backend(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(textwrap.dedent(PIPE))
    plan = load_pipeline(str(tmp_path / "greet.py")).compile()
    with Emulator() as emulator:
        risk = {
            "namespace": "risk-ml",
            "queue": "risk",
            "image": "registry.example.com/risk/usina:2",
            "service_account": "risk-pipelines",
            "priority_class": "batch-low",
            "image_pull_secrets": ["regcred"],
            "secret_env": {"AWS_SECRET_ACCESS_KEY": "s3-creds/secret"},
            "kubeconfig": kubeconfig(tmp_path / "kubeconfig", emulator.url),
            "allow_local_artifacts": True,  # the test's artifact store is a folder
        }
        config_file = tmp_path / "backends.json"
        config_file.write_text(
            json.dumps({"backend": "local", "projects": {"risk": {"backend": "kubernetes",
                                                                  "options": risk}}})
        )  # fmt: skip
        config = BackendConfig.load(str(config_file))
        settings = ServerSettings(
            database_url=f"sqlite:///{tmp_path}/usina.db",
            artifacts_url=str(tmp_path / "artifacts"),
            attempts_dir=str(tmp_path / "attempts"),
            reconciler=ReconcilerSettings(enabled=False),
            backend=config.default.backend,
            backend_options=config.default.options,
            projects=config.projects,
        )
        ctx = ServerContext.open(settings)
        try:
            backend = ctx.engine.backend
            assert isinstance(backend, ProjectBackends)
            theirs = ctx.engine.submit(plan, project="risk")
            ours = ctx.engine.submit(plan, project="default")
            ctx.engine.reconcile(theirs.id)
            ctx.engine.reconcile(ours.id)
            (job,) = emulator.created
            assert job["metadata"]["namespace"] == "risk-ml"
            assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "risk"
            assert job["metadata"]["annotations"]["usina.dev/run-id"] == theirs.id
            pod = job["spec"]["template"]["spec"]
            assert pod["serviceAccountName"] == "risk-pipelines"
            assert pod["priorityClassName"] == "batch-low"
            assert pod["imagePullSecrets"] == [{"name": "regcred"}]
            assert pod["containers"][0]["image"] == "registry.example.com/risk/usina:2"
            # The default project's step ran here, as a local process.
            attempt = f"{ours.id}-hello-1"
            deadline = time.monotonic() + 30
            while backend.observe([attempt])[attempt].state is not TaskState.SUCCEEDED:
                assert time.monotonic() < deadline, backend.observe([attempt])
                backend.wait(0.2)
            assert backend.default.name == "local"
        finally:
            ctx.close()
