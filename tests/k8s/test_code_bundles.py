"""``usina run --backend kubernetes`` ships the project's code as a bundle: the pods (the API
emulator's kubelet runs each pod's command as a process, with a working directory outside the
project and without it on ``PYTHONPATH``) fetch the bundle from the artifact store (SeaweedFS),
verify it and run the steps from it, in the stock image. Changing one line of a step and
running again stores a new bundle and runs only the affected step as a new Job; another
``--image`` runs every step again (the image enters the cache key)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.cli_helpers import Usina
from tests.k8s.emulator import Emulator
from tests.seaweedfs import SeaweedS3

PIPE = """
from usina import pipeline, step

from helpers.features import featurize
from helpers.model import fit


@step
def extract() -> list[int]:
    rows = featurize(list(range(8)))
    print("extracted", rows)
    return rows


@step
def train(rows: list[int]) -> int:
    model = fit(rows)
    print("trained", model)
    return model


@pipeline
def bundled():
    train(extract())
"""

FEATURES = "def featurize(rows):\n    return [r * 2 for r in rows]\n"
MODEL = "def fit(rows):\n    return sum(rows)\n"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3.start(tmp_path / "seaweedfs")
    yield server
    server.stop()


def test_pods_run_the_projects_code_from_its_bundle(
    tmp_path: Path, s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    usina = Usina(project)
    usina.write("pipeline.py", PIPE)
    (project / "helpers").mkdir()
    usina.write("helpers/__init__.py", "")
    usina.write("helpers/features.py", FEATURES)
    usina.write("helpers/model.py", MODEL)
    usina.write("pyproject.toml", "[project]\nname = 'bundled'\n")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)  # the pods' object store credentials (a Secret's)
        usina.env[name] = value
    pods_cwd = tmp_path / "elsewhere"
    pods_cwd.mkdir()
    monkeypatch.chdir(pods_cwd)  # the pods' processes do not start in the project
    usina.env["USINA_ARTIFACTS_URL"] = s3.url("bundles")
    with Emulator(execute=True) as emulator:
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
        usina.env["KUBECONFIG"] = str(kubeconfig)
        args = ("run", "pipeline.py", "--backend", "kubernetes", "--image", "usina-runtime:1")
        first = usina(*args, "-o", "json", timeout=180)
        assert first.code == 0, first.out + first.err
        assert "code bundle sha256:" in first.err
        run = json.loads(first.out)
        assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]
        jobs = emulator.created
        assert len(jobs) == 2
        env = {e["name"]: e.get("value") for e in jobs[0]["spec"]["template"]["spec"]
               ["containers"][0]["env"]}  # fmt: skip
        bundle = env["USINA_BUNDLE"]
        assert bundle.startswith("sha256:")
        assert jobs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "usina-runtime:1"
        # The task the pod ran names its file inside the bundle, not on this laptop.
        task = json.loads(
            usina("runs", "show", run["id"], "-o", "json").out
        )  # the run is readable as usual
        assert task["state"] == "succeeded"
        assert "trained 56" in usina("runs", "logs", run["id"], "train").out
        # k8s render prints what the run submitted: the same bundle (nothing uploaded).
        rendered = usina("k8s", "render", "pipeline.py", "--image", "usina-runtime:1",
                         "--run-id", run["id"], "-o", "json")  # fmt: skip
        assert rendered.code == 0, rendered.err
        (render_env,) = {
            e.get("value")
            for doc in json.loads(rendered.out)
            for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"] == "USINA_BUNDLE"
        }
        assert render_env == bundle

        # One line of train changes: a new bundle; train runs again as a new Job, extract is
        # cached (its code and inputs did not change). No image was built.
        usina.write("pipeline.py", PIPE.replace("model = fit(rows)", "model = fit(rows) + 1"))
        second = usina(*args, "-o", "json", timeout=180)
        assert second.code == 0, second.out + second.err
        rerun = json.loads(second.out)
        assert [s["state"] for s in rerun["steps"]] == ["succeeded", "succeeded"]
        new_jobs = emulator.created[2:]
        assert [j["metadata"]["labels"]["usina.dev/step"] for j in new_jobs] == ["train"]
        env2 = {e["name"]: e.get("value") for e in new_jobs[0]["spec"]["template"]["spec"]
                ["containers"][0]["env"]}  # fmt: skip
        assert env2["USINA_BUNDLE"] != bundle
        assert "trained 57" in usina("runs", "logs", rerun["id"], "train").out

        # Another image (a custom one for extra dependencies) is another environment: its
        # reference enters the cache key, so both steps run again, still from the bundle.
        custom = ("run", "pipeline.py", "--backend", "kubernetes", "--image", "team/usina-gpu:2")
        third = usina(*custom, "-o", "json", timeout=180)
        assert third.code == 0, third.out + third.err
        images = [
            j["spec"]["template"]["spec"]["containers"][0]["image"] for j in emulator.created[3:]
        ]
        assert images == ["team/usina-gpu:2", "team/usina-gpu:2"]
