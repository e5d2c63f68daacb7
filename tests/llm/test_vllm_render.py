"""The GPU path: a vLLM endpoint rendered for Kubernetes, valid for the oldest and newest
supported versions' schemas (strict), with tensor parallelism from the GPU count, GPU
resources, a memory-backed /dev/shm, probes on /health and the checkpoint fetched from MLflow."""

from __future__ import annotations

import pytest

from tests.deploy.validation import describe, validate
from usina.deploy.llm import VllmEndpoint, render_vllm
from usina.errors import DefinitionError


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("gpus", [1, 4, 8])
def test_tensor_parallel_size_follows_the_gpu_count_and_objects_validate(gpus):
    endpoint = VllmEndpoint(
        name="assistant", model="models:/assistant@champion", gpus=gpus,
        gpu_type="NVIDIA-H100-80GB-HBM3", max_model_len=8192,
        tracking_uri="http://mlflow.ml:5000",
    )  # fmt: skip
    objects = render_vllm(endpoint, namespace="ml")
    for obj in objects:
        validate(obj)
    assert [describe(o) for o in objects] == ["Deployment/llm-assistant", "Service/llm-assistant"]
    pod = objects[0]["spec"]["template"]["spec"]
    (vllm,) = pod["containers"]
    args = vllm["args"]
    assert _arg(args, "--tensor-parallel-size") == str(gpus)
    assert _arg(args, "--model") == "/models/assistant"
    assert _arg(args, "--served-model-name") == "assistant"
    assert _arg(args, "--max-model-len") == "8192"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"] == ["python", "-m", "usina.llm", "fetch"]
    assert fetch["args"] == ["models:/assistant@champion", "/models/assistant"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml:5000"} in fetch["env"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    service = objects[1]
    assert service["spec"]["ports"][0]["port"] == 8000


def test_a_model_outside_the_registry_goes_to_vllm_as_is():
    objects = render_vllm(VllmEndpoint(name="qwen", model="Qwen/Qwen2.5-7B-Instruct", gpus=2))
    for obj in objects:
        validate(obj)
    pod = objects[0]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert _arg(pod["containers"][0]["args"], "--model") == "Qwen/Qwen2.5-7B-Instruct"


def test_bad_values_are_refused_with_every_problem_named():
    with pytest.raises(DefinitionError) as refused:
        render_vllm(VllmEndpoint(name="Bad_Name", model=" ", gpus=0, gpu_memory_utilization=1.5))
    message = str(refused.value)
    for words in ("DNS label", "model is empty", "gpus must be at least 1", "(0, 1]"):
        assert words in message


def test_deploy_llm_prints_the_manifests():
    import typer
    import yaml
    from typer.testing import CliRunner

    from usina.deploy.llm_cli import deploy_llm

    app = typer.Typer()
    app.command()(deploy_llm)
    out = CliRunner().invoke(
        app, ["models:/assistant@champion", "--name", "assistant", "--gpus", "2"]
    )
    assert out.exit_code == 0, out.output
    deployment, service = yaml.safe_load_all(out.output)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert _arg(args, "--tensor-parallel-size") == "2"
    assert service["kind"] == "Service"


def test_fetch_copies_the_checkpoint_out_of_a_model(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from usina.llm.cli import app

    out = CliRunner().invoke(app, ["fetch", str(checkpoint), str(tmp_path / "m")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "m" / "config.json").is_file()
    assert (tmp_path / "m" / "tokenizer.json").is_file()
