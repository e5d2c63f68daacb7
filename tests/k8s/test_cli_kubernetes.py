"""The CLI on Kubernetes: ``usina k8s render`` and ``usina run --backend kubernetes`` against
the API emulator (its kubelet really runs each pod's command on this machine)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.integration.cli_helpers import Usina
from tests.k8s.emulator import Emulator

PIPE = """
from usina import Resources, pipeline, step

@step(resources=Resources(cpu="500m", memory="1Gi"))
def make(n: int) -> int:
    print("making", n)
    return n * 2

@step(resources=Resources(cpu=1, memory="2Gi", gpus=1, gpu_type="NVIDIA-H100-80GB-HBM3"))
def train(x: int) -> dict:
    return {"x": x}

@pipeline
def p(n: int = 3):
    train(make(n))
"""


@pytest.fixture
def usina(tmp_path):
    u = Usina(tmp_path)
    u.write("p.py", PIPE)
    return u


def test_render_prints_valid_jobs_for_every_step(usina):
    import kubernetes_validate

    res = usina("k8s", "render", "p.py", "--queue", "team-a", "--namespace", "ml")
    assert res.code == 0, res.err
    docs = list(yaml.safe_load_all(res.out))
    assert [d["kind"] for d in docs] == ["Job", "Job"]
    make, train = docs
    assert make["metadata"]["namespace"] == "ml"
    assert make["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    limits = train["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    as_json = usina("k8s", "render", "p.py", "-o", "json")
    assert [d["kind"] for d in json.loads(as_json.out)] == ["Job", "Job"]


def test_run_on_kubernetes_through_the_emulator(usina, tmp_path):
    with Emulator(execute=True) as emu:
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
            "run", "p.py", "--backend", "kubernetes", "--image", "usina:test", "-o", "json",
            timeout=180,
        )
        assert res.code == 0, res.out + res.err
        run = res.json()
        assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]
        logs = usina("runs", "logs", run["id"], "make")
        assert "making 3" in logs.out
