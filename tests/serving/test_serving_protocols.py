"""tritonclient (HTTP and gRPC) against ``usina serve``: health, metadata, inference.

Predictions must equal the model's in-process predictions (mlflow.lightgbm) to 1e-6.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_support import get, post_json, row_request
from tritonclient.utils import InferenceServerException

TOL = 1e-6


def test_http_health_and_metadata(server, registry):
    client = httpclient.InferenceServerClient(server.http)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("fraud")
    assert client.is_model_ready("fraud", "1")
    assert not client.is_model_ready("fraud", "2")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "usina"
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("fraud")
    assert model["name"] == "fraud"
    assert model["versions"] == ["1"]
    assert model["platform"] == "lightgbm"
    assert [i["name"] for i in model["inputs"]] == registry.columns
    hour = next(i for i in model["inputs"] if i["name"] == "hour")
    assert hour["datatype"] == "INT64"
    assert model["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    assert client.get_model_metadata("fraud", "1")["name"] == "fraud"
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_matrix(server, registry, binary):
    client = httpclient.InferenceServerClient(server.http)
    x = registry.x
    inp = httpclient.InferInput("features", list(x.shape), "FP64")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("predict", binary_data=binary)
    result = client.infer("fraud", [inp], outputs=[out], request_id="abc")
    np.testing.assert_allclose(result.as_numpy("predict"), registry.pred_v1, rtol=0, atol=TOL)
    response = result.get_response()
    assert response["model_name"] == "fraud"
    assert response["model_version"] == "1"
    assert response["id"] == "abc"


def test_http_infer_fp32_matrix(server, registry):
    client = httpclient.InferenceServerClient(server.http)
    x = registry.x.astype(np.float32)
    inp = httpclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("fraud", [inp], model_version="1")
    # hour is whole-valued so FP32 carries it exactly; compare to float32-rounded in-process.
    np.testing.assert_allclose(result.as_numpy("predict"), registry.pred_v1, rtol=0, atol=1e-3)


def test_http_infer_named_features(server, registry):
    client = httpclient.InferenceServerClient(server.http)
    x = registry.x
    inputs = []
    for j, name in enumerate(registry.columns):
        if name == "hour":
            inp = httpclient.InferInput(name, [len(x)], "INT64")
            inp.set_data_from_numpy(x[:, j].astype(np.int64), binary_data=False)
        else:
            inp = httpclient.InferInput(name, [len(x), 1], "FP64")
            inp.set_data_from_numpy(x[:, j : j + 1].copy(), binary_data=j % 2 == 0)
        inputs.append(inp)
    result = client.infer("fraud", inputs)
    np.testing.assert_allclose(result.as_numpy("predict"), registry.pred_v1, rtol=0, atol=TOL)


def test_rest_json_shapes(server, registry):
    status, doc = post_json(server.http, "/v2/models/fraud/infer", row_request(registry.x[0]))
    assert status == 200
    assert set(doc) == {"model_name", "model_version", "outputs"}
    (out,) = doc["outputs"]
    assert out["name"] == "predict"
    assert out["datatype"] == "FP64"
    assert out["shape"] == [1]
    assert abs(out["data"][0] - registry.pred_v1[0]) < TOL
    status, doc = post_json(
        server.http,
        "/v2/models/fraud/versions/1/infer",
        row_request(registry.x[3], registry.columns),
    )
    assert status == 200
    assert abs(doc["outputs"][0]["data"][0] - registry.pred_v1[3]) < TOL


def test_rest_status_codes(server):
    assert get(server.http, "/v2/health/live") == (200, b'{"live":true}')
    assert get(server.http, "/v2/models/fraud/ready")[0] == 200
    status, body = get(server.http, "/v2/models/nope")
    assert status == 404
    assert "nope" in orjson.loads(body)["error"]
    status, body = post_json(server.http, "/v2/models/fraud/versions/9/infer", {"inputs": []})
    assert status == 404
    assert get(server.http, "/v2/nothing/here")[0] == 404
    assert get(server.http, "/v2/models/fraud/infer")[0] == 405


def test_metrics_exposed(server, registry):
    post_json(server.http, "/v2/models/fraud/infer", row_request(registry.x[0]))
    post_json(server.http, "/v2/models/fraud/infer", {"inputs": "bad"})
    status, body = get(server.http, "/metrics")
    assert status == 200
    text = body.decode()
    for name in (
        "usina_serving_requests_total",
        "usina_serving_request_duration_seconds_bucket",
        "usina_serving_queue_duration_seconds_bucket",
        "usina_serving_compute_duration_seconds_bucket",
        "usina_serving_batch_size_bucket",
        "usina_serving_queue_depth",
        "usina_serving_prediction_score_bucket",
        "usina_serving_model_load_duration_seconds_bucket",
        "usina_serving_model_load_failures_total",
        "usina_serving_build_info",
    ):
        assert name in text, name
    assert 'status="400"' in text
    assert 'usina_serving_model_version_info{model="fraud",version="1"} 1.0' in text


def test_grpc_health_metadata_infer(server, registry):
    client = grpcclient.InferenceServerClient(server.grpc)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("fraud")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "usina"
    model = client.get_model_metadata("fraud", as_json=True)
    assert model["versions"] == ["1"]
    assert [i["name"] for i in model["inputs"]] == registry.columns
    x = registry.x
    inp = grpcclient.InferInput("features", list(x.shape), "FP64")
    inp.set_data_from_numpy(x)
    result = client.infer(
        "fraud", [inp], outputs=[grpcclient.InferRequestedOutput("predict")], request_id="r1"
    )
    np.testing.assert_allclose(result.as_numpy("predict"), registry.pred_v1, rtol=0, atol=TOL)
    response = result.get_response()
    assert response.model_version == "1"
    assert response.id == "r1"


def test_grpc_named_features_and_errors(server, registry):
    client = grpcclient.InferenceServerClient(server.grpc)
    x = registry.x[:5]
    inputs = []
    for j, name in enumerate(registry.columns):
        dtype, npdtype = ("INT64", np.int64) if name == "hour" else ("FP64", np.float64)
        inp = grpcclient.InferInput(name, [len(x)], dtype)
        inp.set_data_from_numpy(x[:, j].astype(npdtype))
        inputs.append(inp)
    result = client.infer("fraud", inputs)
    np.testing.assert_allclose(result.as_numpy("predict"), registry.pred_v1[:5], atol=TOL)
    bad = grpcclient.InferInput("features", [2, 3], "FP64")
    bad.set_data_from_numpy(np.zeros((2, 3)))
    with pytest.raises(InferenceServerException) as err:
        client.infer("fraud", [bad])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [bad])
    assert err.value.status() == "StatusCode.NOT_FOUND"
