"""Hostile values on the served ``fraud`` model: one explicit test per case of issue #14 item 5.

Each is refused with 400 (REST) or INVALID_ARGUMENT (gRPC) and a message that names the input,
never with 500 / INTERNAL and never with the model library's own message. The fraud model's
signature (inferred from a frame without missing values) accepts no missing value anywhere.
"""

from __future__ import annotations

import http.client
import math
import struct

import grpc
import orjson
import pytest
from serving_support import post_json, row_request
from tritonclient.grpc import service_pb2 as pb

COLUMNS = [f"v{i}" for i in range(9)] + ["hour"]
ROW = [0.5] * 9 + [3]


def per_feature(**data):
    """The per-feature request of ROW, with some inputs' ``data`` (and shape) replaced."""
    doc = row_request(ROW, COLUMNS)
    for item in doc["inputs"]:
        if item["name"] in data:
            item["data"] = data[item["name"]]
    return doc


def rest(server, doc) -> tuple[int, str]:
    status, body = post_json(server.http, "/v2/models/fraud/infer", doc)
    return status, body.get("error", "")


def rest_raw(server, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    host, port = server.http.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/v2/models/fraud/infer", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, orjson.loads(resp.read()).get("error", "")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc) as ch:
        yield ch


def grpc_infer(channel, fp64: dict[str, float], rows: int = 1) -> tuple[grpc.StatusCode, str]:
    """ModelInfer on the per-feature inputs; ``fp64`` replaces features' values."""
    req = pb.ModelInferRequest(model_name="fraud")
    for name, value in zip(COLUMNS, ROW, strict=True):
        if name == "hour":
            tensor = req.inputs.add(name=name, datatype="INT64", shape=[rows])
            tensor.contents.int64_contents.extend([int(value)] * rows)
        else:
            tensor = req.inputs.add(name=name, datatype="FP64", shape=[rows])
            tensor.contents.fp64_contents.extend([fp64.get(name, value)] * rows)
    return grpc_call(channel, req)


def grpc_call(channel, req) -> tuple[grpc.StatusCode, str]:
    stub = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    try:
        stub(req.SerializeToString(), timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_a_valid_request_is_answered(server, channel):
    assert rest(server, per_feature())[0] == 200
    assert grpc_infer(channel, {})[0] == grpc.StatusCode.OK


def test_null_is_a_400_naming_the_input(server):
    status, error = rest(server, per_feature(v3=[None]))
    assert status == 400
    assert "'v3'" in error
    assert "missing value" in error


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_values_are_refused_naming_the_input(server, channel, value):
    # JSON: NaN and Infinity are not JSON, but Python's json.dumps writes them.
    body = per_feature(v2=["__VALUE__"])
    token = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity"}[repr(value)]
    status, error = rest_raw(
        server, orjson.dumps(body).replace(b'"__VALUE__"', token), {"Content-Type": "json"}
    )
    assert status == 400
    assert "'v2'" in error
    # The binary extension: the raw double.
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 10],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 80},
                }
            ]
        }
    )
    row = [value if i == 4 else float(v) for i, v in enumerate(ROW)]
    status, error = rest_raw(
        server,
        head + struct.pack("<10d", *row),
        {"Inference-Header-Content-Length": str(len(head))},
    )
    assert status == 400
    assert "'x'" in error
    assert "'v4'" in error
    code, details = grpc_infer(channel, {"v7": value})
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'v7'" in details
    # The model library's message never reaches the client.
    for message in (error, details):
        assert "lightgbm" not in message.lower()


def test_zero_rows_say_no_rows(server, channel):
    doc = row_request(ROW, COLUMNS)
    for item in doc["inputs"]:
        item["shape"], item["data"] = [0], []
    status, error = rest(server, doc)
    assert status == 400
    assert "no rows" in error
    assert "'v0'" in error
    assert "datatype" not in error
    status, error = rest(
        server, {"inputs": [{"name": "x", "shape": [0, 10], "datatype": "FP64", "data": []}]}
    )
    assert status == 400
    assert "input 'x'" in error
    assert "no rows" in error
    code, details = grpc_infer(channel, {}, rows=0)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no rows" in details
    assert "'v0'" in details


def test_booleans_are_refused_for_numeric_inputs(server, channel):
    status, error = rest(server, per_feature(v1=[True]))
    assert status == 400
    assert "'v1'" in error
    assert "boolean" in error
    doc = per_feature()
    for item in doc["inputs"]:
        item["shape"], item["data"] = [2], item["data"] * 2
    doc["inputs"][1]["data"] = [0.5, True]  # numpy alone would read [0.5, 1.0]
    status, error = rest(server, doc)
    assert status == 400
    assert "'v1'" in error
    doc = per_feature()
    doc["inputs"][1].update(datatype="BOOL", data=[True])
    status, error = rest(server, doc)
    assert status == 400
    assert "'v1'" in error
    req = pb.ModelInferRequest(model_name="fraud")
    for name, value in zip(COLUMNS, ROW, strict=True):
        tensor = req.inputs.add(name=name, shape=[1])
        if name == "v5":
            tensor.datatype = "BOOL"
            tensor.contents.bool_contents.append(True)
        elif name == "hour":
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.append(int(value))
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(value)
    code, details = grpc_call(channel, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'v5'" in details


def test_over_nested_data_is_refused(server):
    status, error = rest(server, per_feature(v6=[[[[0.5]]]]))
    assert status == 400
    assert "'v6'" in error
    assert "nested" in error
    doc = {
        "inputs": [
            {"name": "x", "shape": [1, 10], "datatype": "FP64", "data": [[[float(v)] for v in ROW]]}
        ]
    }
    status, error = rest(server, doc)
    assert status == 400
    assert "'x'" in error


def test_negative_lengths_get_a_clear_message(server):
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 10],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": -80},
                }
            ]
        }
    )
    status, error = rest_raw(server, head, {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400
    assert "input 'x': binary_data_size must be a non-negative integer" in error
    assert "-80" in error
    status, error = rest_raw(server, head, {"Inference-Header-Content-Length": "-7"})
    assert status == 400
    assert "Inference-Header-Content-Length must be a non-negative integer" in error
    assert "-7" in error
