"""``usina k8s render`` prints exactly what a run submits: for a pipeline with a step's env,
run labels, GPUs and a gang, the rendered objects equal, byte for byte as canonical JSON, the
bodies the API emulator received when the engine launched the same run (same run id) on the
Kubernetes backend."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.k8s.emulator import Emulator
from usina.backends.kubernetes import KubernetesBackend
from usina.backends.kubernetes.factory import kubernetes_settings
from usina.cli.common import compile_target
from usina.cli.k8s import render_manifests
from usina.compose.settings import Settings
from usina.engine.engine import Engine, EngineSettings
from usina.stores.artifacts import FsspecArtifactStore
from usina.testing import InMemoryMetadataStore

# Three independent steps, so the engine's first pass launches every one of them.
PIPE = """
from usina import Resources, Torchrun, pipeline, step

@step(env=["FEATURE_FLAG"], resources=Resources(cpu="500m", memory="1Gi"))
def prepare() -> int:
    return 1

@step(resources=Resources(cpu=2, memory="8Gi", gpus=2, gpu_type="NVIDIA-H100-80GB-HBM3"))
def train() -> int:
    return 2

@step(
    distributed=Torchrun(nodes=2, procs_per_node=2),
    resources=Resources(cpu=1, memory="4Gi", gpus=2),
)
def fit() -> int:
    return 3

@pipeline
def render_me(n: int = 3):
    prepare()
    train()
    fit()
"""

OPTIONS = {"namespace": "ml", "queue": "team-a", "image": "usina:test"}
RENDER = {**OPTIONS, "allow_local_artifacts": True}  # the test's artifacts are local
LABELS = {"team": "fraud", "cost-center": "42"}


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "p.py").write_text(textwrap.dedent(PIPE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USINA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FEATURE_FLAG", "on")
    return "p.py"


def _canonical(obj: object) -> str:
    """The object as JSON with its keys sorted: the Kubernetes client reorders some objects'
    keys on the wire, and key order carries no meaning in JSON; nothing else is normalised."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _submitted(target: str, run_id: str) -> list[dict[str, object]]:
    """What the engine creates on the emulator when a run of ``target`` starts."""
    settings = Settings.from_env()
    artifacts = FsspecArtifactStore(settings.artifacts_url)
    _, plan = compile_target(target, [])
    with Emulator() as emulator:
        config = client.Configuration()
        config.host = emulator.url
        api = client.ApiClient(config)
        backend = KubernetesBackend(kubernetes_settings(OPTIONS), api, artifacts)
        try:
            engine = Engine(
                backend=backend,
                metadata=InMemoryMetadataStore(),
                artifacts=artifacts,
                settings=EngineSettings(poll_interval=0.05),
            )
            engine.submit(plan, run_id=run_id, labels=LABELS)
            engine.reconcile(run_id)
            # The backend creates Jobs off the pass, on its own threads; closing it drops the
            # creates not started yet, so wait until every step's Job is there.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _jobs(emulator.created) < len(plan.nodes):
                time.sleep(0.02)
        finally:
            backend.close()
            api.close()
        return list(emulator.created)


def _jobs(objects: list[dict[str, object]]) -> int:
    return sum(o["kind"] == "Job" for o in objects)


def _key(obj: dict[str, object]) -> tuple[str, str]:
    return (str(obj["kind"]), str(obj["metadata"]["name"]))  # type: ignore[index]


def test_render_equals_what_the_engine_submits(target: str) -> None:
    run_id = "render-me-0001"
    rendered = render_manifests(target, [], RENDER, labels=LABELS, run_id=run_id)
    submitted = _submitted(target, run_id)
    # The steps' creates run concurrently (in any order); a gang's Service comes before its Job.
    names = [_key(o) for o in submitted]
    assert names.index(("Service", "render-me-0001-fit-1")) < names.index(
        ("Job", "render-me-0001-fit-1")
    )
    rendered = sorted(rendered, key=_key)
    submitted = sorted(submitted, key=_key)

    kinds = [_key(o) for o in rendered]
    assert kinds == [_key(o) for o in submitted]
    assert [k for k, _ in kinds].count("Job") == 3
    assert [k for k, _ in kinds].count("Service") == 1  # the gang's headless Service
    for mine, theirs in zip(rendered, submitted, strict=True):
        assert _canonical(mine) == _canonical(theirs)

    text = json.dumps(rendered)
    assert '{"name": "FEATURE_FLAG", "value": "on"}' in text  # the step's env
    assert '"usina.dev/team": "fraud"' in text  # the run's labels
    assert '"nvidia.com/gpu": "2"' in text
