"""The repository extension over gRPC, called by tritonclient.grpc as it calls Triton: index,
unload and load switch what the server serves; a new model loads from its URI; misuse is
``INVALID_ARGUMENT``/``NOT_FOUND``, and a server without ``--repository-api`` says so."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from serving_support import start_server
from tritonclient.grpc import service_pb2 as rpb  # Triton's own messages: the wire must match
from tritonclient.utils import InferenceServerException

METHOD = "/inference.GRPCInferenceService/{}"


@pytest.fixture(scope="module")
def repo_server(registry, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(
        registry.tracking_uri,
        "models:/fraud/1",
        tmp_path_factory.mktemp("logs"),
        "--repository-api",
        "--poll-interval",
        "0",
    )
    yield srv
    srv.stop()


def _infer(client: grpcclient.InferenceServerClient, registry, model: str) -> np.ndarray:
    x = registry.x[:4].astype(np.float64)
    tensor = grpcclient.InferInput("input-0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    result = client.infer(model, [tensor])
    return result.as_numpy(result.get_response().outputs[0].name)


def _call(target: str, method: str, message) -> bytes:
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(METHOD.format(method))
        return stub(message.SerializeToString(), timeout=120)


def test_index_unload_load_through_tritonclient(repo_server, registry):
    client = grpcclient.InferenceServerClient(repo_server.grpc)
    index = client.get_model_repository_index(as_json=True)
    assert [(m["name"], m["state"], m["version"]) for m in index["models"]] == [
        ("fraud", "READY", "1")
    ]
    before = _infer(client, registry, "fraud")
    client.unload_model("fraud")
    assert not client.is_model_ready("fraud")
    index = client.get_model_repository_index(as_json=True)
    assert index["models"][0]["state"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException):
        _infer(client, registry, "fraud")
    client.load_model("fraud")
    assert client.is_model_ready("fraud")
    np.testing.assert_allclose(_infer(client, registry, "fraud"), before)


def test_a_new_model_loads_from_its_uri(repo_server, registry):
    request = rpb.RepositoryModelLoadRequest(model_name="fraud_two")
    request.parameters["model_uri"].string_param = "models:/fraud_reload/2"
    assert (
        rpb.RepositoryModelLoadResponse.FromString(
            _call(repo_server.grpc, "RepositoryModelLoad", request)
        )
        == rpb.RepositoryModelLoadResponse()
    )
    client = grpcclient.InferenceServerClient(repo_server.grpc)
    assert client.is_model_ready("fraud_two")
    np.testing.assert_allclose(_infer(client, registry, "fraud_two").ravel(), registry.pred_v2[:4])
    ready = rpb.RepositoryIndexResponse.FromString(
        _call(repo_server.grpc, "RepositoryIndex", rpb.RepositoryIndexRequest(ready=True))
    )
    assert {m.name for m in ready.models} == {"fraud", "fraud_two"}
    client.unload_model("fraud_two")
    ready = rpb.RepositoryIndexResponse.FromString(
        _call(repo_server.grpc, "RepositoryIndex", rpb.RepositoryIndexRequest(ready=True))
    )
    assert {m.name for m in ready.models} == {"fraud"}


@pytest.mark.parametrize(
    ("method", "message", "code", "words"),
    [
        ("RepositoryModelLoad", rpb.RepositoryModelLoadRequest(model_name="nope"),
         grpc.StatusCode.NOT_FOUND, "model_uri"),
        ("RepositoryModelLoad", rpb.RepositoryModelLoadRequest(),
         grpc.StatusCode.INVALID_ARGUMENT, "model_name is empty"),
        ("RepositoryModelUnload", rpb.RepositoryModelUnloadRequest(model_name="nope"),
         grpc.StatusCode.NOT_FOUND, "nope"),
    ],
)  # fmt: skip
def test_misuse_is_refused_with_its_code(repo_server, method, message, code, words):
    with pytest.raises(grpc.RpcError) as info:
        _call(repo_server.grpc, method, message)
    assert info.value.code() is code
    assert words in info.value.details()


def test_triton_config_parameters_are_refused(repo_server):
    request = rpb.RepositoryModelLoadRequest(model_name="fraud")
    request.parameters["config"].string_param = '{"backend": "onnxruntime"}'
    with pytest.raises(grpc.RpcError) as info:
        _call(repo_server.grpc, "RepositoryModelLoad", request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "config" in info.value.details()
    assert "model_uri" in info.value.details()
    request = rpb.RepositoryModelLoadRequest(model_name="fraud")
    request.parameters["model_uri"].int64_param = 3
    with pytest.raises(grpc.RpcError) as info:
        _call(repo_server.grpc, "RepositoryModelLoad", request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_without_the_setting_the_repository_is_off(server):
    with pytest.raises(grpc.RpcError) as info:
        _call(server.grpc, "RepositoryIndex", rpb.RepositoryIndexRequest())
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "--repository-api" in info.value.details()
