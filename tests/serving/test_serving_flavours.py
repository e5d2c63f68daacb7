"""Every flavour, served: one real model each, trained in the test (make_flavours.py), all
served by one ``usina serve`` and called with tritonclient over REST (JSON and binary) and gRPC.

Predictions must equal what the flavour's own predict returned in the training process:
scikit-learn (an estimator fitted on a DataFrame, and a Pipeline whose ColumnTransformer
one-hot-encodes the string column ``uf``), LightGBM, XGBoost, PyTorch, ONNX Runtime (one model
from skl2onnx, one with two inputs and two outputs) and MLflow pyfunc (string in, string out).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_support import HERE, get, post_json, start_server
from tritonclient.utils import InferenceServerException

MODELS = [
    "sk_estimator",
    "sk_pipeline",
    "lightgbm",
    "xgboost",
    "pytorch",
    "onnx",
    "onnx_two",
    "pyfunc",
]
PLATFORMS = {
    "sk_estimator": "sklearn",
    "sk_pipeline": "sklearn",
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "pytorch": "pytorch_torchscript",
    "onnx": "onnxruntime_onnx",
    "onnx_two": "onnxruntime_onnx",
    "pyfunc": "mlflow_pyfunc",
}


@pytest.fixture(scope="module")
def flavours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("flavours")
    subprocess.run(
        [sys.executable, str(HERE / "make_flavours.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


@pytest.fixture(scope="module")
def server(flavours: Path, tmp_path_factory: pytest.TempPathFactory):
    first, *rest = (str(flavours / m) for m in MODELS)
    srv = start_server(
        "sqlite:///unused.db",
        first,
        tmp_path_factory.mktemp("logs"),
        *rest,
        "--repository-api",
        "--poll-interval",
        "0",
        ready_timeout=300,
        warnings="default",  # so a per-request warning would show in the log
    )
    yield srv
    srv.stop()


def case(flavours: Path, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((flavours / f"{name}.json").read_text())
    return doc


def _array(item: dict[str, Any]) -> np.ndarray:
    if item["datatype"] == "BYTES":
        return np.array(item["data"], dtype=object).reshape(item["shape"])
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}[item["datatype"]]
    return np.array(item["data"], dtype=dtype).reshape(item["shape"])


def _check(name: str, expected: dict[str, Any], got: dict[str, np.ndarray]) -> None:
    for output, want in expected.items():
        value = got[output]
        want_arr = np.asarray(want)
        if want_arr.dtype.kind == "f":
            np.testing.assert_allclose(
                np.asarray(value, dtype=np.float64).reshape(want_arr.shape),
                want_arr,
                rtol=1e-6,
                atol=1e-6,
                err_msg=f"{name}.{output}",
            )
        else:
            flat = [v.decode() if isinstance(v, bytes) else v for v in value.reshape(-1).tolist()]
            assert flat == want_arr.reshape(-1).tolist(), f"{name}.{output}"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", MODELS)
def test_rest_predictions_equal_the_flavours_own(server, flavours, name, binary):
    doc = case(flavours, name)
    client = httpclient.InferenceServerClient(server.http)
    inputs = []
    for item in doc["inputs"]:
        inp = httpclient.InferInput(item["name"], item["shape"], item["datatype"])
        inp.set_data_from_numpy(_array(item), binary_data=binary)
        inputs.append(inp)
    outputs = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in doc["expected"]]
    result = client.infer(name, inputs, outputs=outputs)
    _check(name, doc["expected"], {o: result.as_numpy(o) for o in doc["expected"]})


@pytest.mark.parametrize("name", MODELS)
def test_grpc_predictions_equal_the_flavours_own(server, flavours, name):
    doc = case(flavours, name)
    client = grpcclient.InferenceServerClient(server.grpc)
    inputs = []
    for item in doc["inputs"]:
        inp = grpcclient.InferInput(item["name"], item["shape"], item["datatype"])
        inp.set_data_from_numpy(_array(item))
        inputs.append(inp)
    outputs = [grpcclient.InferRequestedOutput(o) for o in doc["expected"]]
    result = client.infer(name, inputs, outputs=outputs)
    _check(name, doc["expected"], {o: result.as_numpy(o) for o in doc["expected"]})


def test_string_columns_are_described_exactly(server):
    client = httpclient.InferenceServerClient(server.http)
    meta = client.get_model_metadata("sk_pipeline")
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [
        {"name": "amount", "datatype": "FP64", "shape": [-1]},
        {"name": "uf", "datatype": "BYTES", "shape": [-1]},
        {"name": "installments", "datatype": "INT64", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    grpc_meta = grpcclient.InferenceServerClient(server.grpc).get_model_metadata("sk_pipeline")
    assert [(i.name, i.datatype, list(i.shape)) for i in grpc_meta.inputs] == [
        ("amount", "FP64", [-1]),
        ("uf", "BYTES", [-1]),
        ("installments", "INT64", [-1]),
    ]
    two = client.get_model_metadata("onnx_two")
    assert [(i["name"], i["shape"]) for i in two["inputs"]] == [("a", [-1, 3]), ("b", [-1, 3])]
    assert [o["name"] for o in two["outputs"]] == ["total", "product"]
    pyfunc = client.get_model_metadata("pyfunc")
    assert {o["name"]: o["datatype"] for o in pyfunc["outputs"]} == {
        "fee": "FP64",
        "region": "BYTES",
    }
    for name in MODELS:
        assert client.get_model_metadata(name)["platform"] == PLATFORMS[name]


def test_model_config_in_tritons_terms(server):
    config = httpclient.InferenceServerClient(server.http).get_model_config("sk_pipeline")
    assert config["name"] == "sk_pipeline"
    assert config["max_batch_size"] == 64
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("amount", "TYPE_FP64", [1]),
        ("uf", "TYPE_STRING", [1]),
        ("installments", "TYPE_INT64", [1]),
    ]
    assert [(o["name"], o["dims"]) for o in config["output"]] == [
        ("predict", [1]),
        ("predict_proba", [2]),
    ]
    status, _ = get(server.http, "/v2/models/nope/config")
    assert status == 404


def test_bad_string_inputs_are_400s_naming_the_input(server):
    doc = {
        "inputs": [
            {"name": "amount", "datatype": "FP64", "shape": [1], "data": [10.0]},
            {"name": "uf", "datatype": "BYTES", "shape": [1], "data": [7]},
            {"name": "installments", "datatype": "INT64", "shape": [1], "data": [3]},
        ]
    }
    status, body = post_json(server.http, "/v2/models/sk_pipeline/infer", doc)
    assert status == 400
    assert "'uf'" in body["error"]
    doc["inputs"][1] = {"name": "uf", "datatype": "FP64", "shape": [1], "data": [1.0]}
    status, body = post_json(server.http, "/v2/models/sk_pipeline/infer", doc)
    assert status == 400
    assert "BYTES" in body["error"]
    del doc["inputs"][1]
    status, body = post_json(server.http, "/v2/models/sk_pipeline/infer", doc)
    assert status == 400
    assert "missing input(s): uf" in body["error"]


def test_missing_values_follow_the_signature(server):
    """'amount' is optional in the LightGBM model's signature (it had gaps in training): a
    missing amount is answered. The scikit-learn estimator's signature forbids it: a 400 naming
    the input (it used to reach LogisticRegression, whose ValueError came back as a 500)."""
    config = httpclient.InferenceServerClient(server.http).get_model_config("lightgbm")
    assert {i["name"]: i.get("optional", False) for i in config["input"]} == {
        "amount": True,
        "installments": False,
    }

    def doc(amount, installments=3.0):
        return {
            "inputs": [
                {"name": "amount", "datatype": "FP64", "shape": [1], "data": [amount]},
                {"name": "installments", "datatype": "FP64", "shape": [1], "data": [installments]},
            ]
        }

    status, body = post_json(server.http, "/v2/models/lightgbm/infer", doc(None))
    assert status == 200, body
    assert 0.0 <= body["outputs"][0]["data"][0] <= 1.0
    status, body = post_json(server.http, "/v2/models/lightgbm/infer", doc(10.0, None))
    assert status == 400
    assert "'installments'" in body["error"]
    status, body = post_json(server.http, "/v2/models/sk_estimator/infer", doc(None))
    assert status == 400
    assert "'amount'" in body["error"]
    assert "LogisticRegression" not in body["error"]
    client = grpcclient.InferenceServerClient(server.grpc)
    inputs = []
    for name, value in (("amount", float("nan")), ("installments", 3.0)):
        inp = grpcclient.InferInput(name, [1], "FP64")
        inp.set_data_from_numpy(np.array([value]))
        inputs.append(inp)
    result = client.infer("lightgbm", inputs)
    assert result.as_numpy("predict").shape == (1,)
    with pytest.raises(InferenceServerException) as info:
        client.infer("sk_estimator", inputs)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'amount'" in info.value.message()


def test_no_warnings_per_request(server, flavours):
    before = server.log()
    for _ in range(3):
        test_rest_predictions_equal_the_flavours_own(server, flavours, "sk_estimator", False)
        test_rest_predictions_equal_the_flavours_own(server, flavours, "sk_pipeline", False)
    new = server.log()[len(before) :]
    assert "Warning" not in new, new


def test_repository_index_unload_and_load(server, flavours):
    client = httpclient.InferenceServerClient(server.http)
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert set(index) == set(MODELS)
    assert index["lightgbm"]["state"] == "READY"
    client.unload_model("lightgbm")
    assert not client.is_model_ready("lightgbm")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["lightgbm"]["state"] == "UNAVAILABLE"
    status, body = post_json(server.http, "/v2/models/lightgbm/infer", case(flavours, "lightgbm"))
    assert status == 503
    assert "unloaded" in body["error"]
    assert client.is_model_ready("xgboost")  # the others keep serving
    client.load_model("lightgbm")
    assert client.is_model_ready("lightgbm")
    test_rest_predictions_equal_the_flavours_own(server, flavours, "lightgbm", True)
    # A new model, from its URI.
    status, _ = post_json(
        server.http,
        "/v2/repository/models/second_onnx/load",
        {"parameters": {"model_uri": str(flavours / "onnx")}},
    )
    assert status == 200
    assert client.is_model_ready("second_onnx")
    status, body = post_json(server.http, "/v2/repository/models/unknown/load", {})
    assert status == 404
    assert "model_uri" in body["error"]
