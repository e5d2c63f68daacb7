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

    usina.env["USINA_ARTIFACTS_URL"] = "s3://ml-artifacts/usina"
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
            "run",
            "p.py",
            "--backend",
            "kubernetes",
            "--image",
            "usina:test",
            "--allow-local-artifacts",  # the emulator's pods run on this machine
            "-o",
            "json",
            timeout=180,
        )
        assert res.code == 0, res.out + res.err
        run = res.json()
        assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]
        logs = usina("runs", "logs", run["id"], "make")
        assert "making 3" in logs.out


def test_render_refuses_a_local_artifact_store_with_the_fix(usina):
    res = usina("k8s", "render", "p.py")
    assert res.code == 2, res.out + res.err
    assert "is a path on this machine" in res.err
    assert "USINA_ARTIFACTS_URL=s3://" in res.err
    assert res.out == ""


def test_render_with_a_run_id_is_byte_stable(usina):
    usina.env["USINA_ARTIFACTS_URL"] = "s3://ml-artifacts/usina"
    args = ("k8s", "render", "p.py", "--run-id", "p-gitops-1", "--queue", "team-a")
    first, second = usina(*args), usina(*args)
    assert first.code == 0, first.err
    assert first.out == second.out
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(first.out)]
    assert names == ["p-gitops-1-make-1", "p-gitops-1-train-1"]
    other = usina("k8s", "render", "p.py", "--run-id", "p-gitops-2", "--queue", "team-a")
    assert other.out != first.out


def test_cluster_flags_reach_every_pod(usina):
    import kubernetes_validate

    usina.env["USINA_ARTIFACTS_URL"] = "s3://ml-artifacts/usina"
    res = usina(
        "k8s", "render", "p.py", "--namespace", "ml",
        "--service-account", "pipelines",
        "--priority-class", "batch-low",
        "--image-pull-secret", "regcred",
        "--env", "LOG_LEVEL=debug",
        "--secret-env", "AWS_SECRET_ACCESS_KEY=s3-creds/secret",
        "--env-from-secret", "s3-creds",
        "--env-from-configmap", "team-config",
        "--node-selector", "pool=batch",
        "--toleration", "dedicated=ml:NoSchedule",
    )  # fmt: skip
    assert res.code == 0, res.err
    for doc in yaml.safe_load_all(res.out):
        kubernetes_validate.validate(doc, "1.31", strict=True)
        pod = doc["spec"]["template"]["spec"]
        main = pod["containers"][0]
        assert pod["serviceAccountName"] == "pipelines"
        assert pod["priorityClassName"] == "batch-low"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["nodeSelector"] == {"pool": "batch"}
        assert {
            "key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"
        } in pod["tolerations"]  # fmt: skip
        assert {"name": "LOG_LEVEL", "value": "debug"} in main["env"]
        assert {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret"}},
        } in main["env"]
        assert main["envFrom"] == [
            {"secretRef": {"name": "s3-creds"}},
            {"configMapRef": {"name": "team-config"}},
        ]


@pytest.mark.parametrize(
    ("flags", "rule"),
    [
        (["--namespace", "Bad_NS"], "namespace='Bad_NS' is not a DNS-1123 label"),
        (["--namespace", "n" * 300], "300 characters"),
        (["--image", "usina runtime:1"], "is not a container image reference"),
        (["--image", "usina:1\nrm -rf"], "is not a container image reference"),
        (["--queue", "Team A"], "queue='Team A' is not a DNS-1123 subdomain"),
        (["--service-account", "Pipelines!"], "service_account='Pipelines!'"),
        (["--env", "1BAD=x"], "is not a valid environment variable name"),
        (["--toleration", "gpu"], "--toleration 'gpu' must look like KEY[=VALUE]:EFFECT"),
    ],
)
def test_values_kubernetes_would_refuse_exit_2_naming_the_rule(usina, flags, rule):
    usina.env["USINA_ARTIFACTS_URL"] = "s3://ml-artifacts/usina"
    res = usina("k8s", "render", "p.py", *flags)
    assert res.code == 2, res.out + res.err
    assert rule in " ".join(res.err.split()), res.err
    assert res.out == ""
