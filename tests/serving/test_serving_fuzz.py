"""Fuzzing: malformed REST requests never get a 5xx, malformed gRPC never UNKNOWN/INTERNAL.

REST: structured near-misses, arbitrary JSON, arbitrary bytes, binary-extension headers, paths,
and hostile values (NaN, ±Inf, null, zero rows, negative lengths, booleans, over-nesting); each
refusal is a 4xx carrying ``{"error": "..."}``, and a hostile value is a 400 naming the input.
gRPC: malformed and arbitrary messages, and the same hostile values (INVALID_ARGUMENT naming the
input). Over 2,000 requests in all, counted; then the server must still answer a valid request.
"""

from __future__ import annotations

import http.client
import json
import math
import struct

import grpc
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from serving_support import row_request
from tritonclient.grpc import service_pb2 as pb

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # report the failing example as found; no shrinking
    suppress_health_check=list(HealthCheck),
)
DATATYPES = ["BOOL", "INT8", "INT32", "INT64", "UINT8", "UINT64", "FP16", "FP32", "FP64", "BYTES"]
COUNTS = {"rest": 0, "grpc": 0, "rest_hostile": 0, "grpc_hostile": 0}


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, address: str) -> None:
        self.host, port = address.split(":")
        self.port = int(port)
        self.conn: http.client.HTTPConnection | None = None
        self.error = ""  # the last refusal's message

    def request(self, method: str, path: str, body: bytes = b"", headers=None) -> int:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if resp.will_close:
                self.conn.close()
                self.conn = None
            COUNTS["rest"] += 1
            assert resp.status < 500, (resp.status, payload[:500], body[:500])
            self.error = ""
            if resp.status >= 400:
                error = orjson.loads(payload)["error"]
                assert isinstance(error, str)
                assert error
                self.error = error
            return resp.status
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def client(server):
    c = Client(server.http)
    yield c
    if c.conn is not None:
        c.conn.close()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)
shapes = st.one_of(
    st.lists(st.integers(min_value=-2, max_value=12), min_size=0, max_size=4),
    st.just([1, 10]),
    st.just([2, 10]),
    st.just([1]),
    json_values,
)


@st.composite
def near_miss_inputs(draw, columns):
    name = draw(st.one_of(st.sampled_from([*columns, "x", "features"]), st.text(max_size=8)))
    shape = draw(shapes)
    datatype = draw(st.one_of(st.sampled_from(DATATYPES), st.text(max_size=6), json_values))
    valid = isinstance(shape, list) and shape and all(isinstance(d, int) and d >= 0 for d in shape)
    n = math.prod(shape) if valid else 3
    n = n if n <= 24 else 3
    data = draw(
        st.one_of(
            st.lists(st.floats(), min_size=n, max_size=n),
            st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n),
            st.lists(
                st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False)), max_size=n + 2
            ),
            st.lists(st.lists(scalars, max_size=4), max_size=4),
            json_values,
        )
    )
    item = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    for key in draw(st.lists(st.sampled_from(["name", "shape", "datatype", "data"]), max_size=1)):
        item.pop(key, None)
    if draw(st.booleans()):
        item["parameters"] = draw(
            st.one_of(
                st.fixed_dictionaries({"binary_data_size": st.integers(-5, 100)}), json_values
            )
        )
    return item


COLUMNS = [f"v{i}" for i in range(9)] + ["hour"]


@st.composite
def near_miss_requests(draw):
    doc = {"inputs": draw(st.lists(near_miss_inputs(COLUMNS), max_size=12))}
    if draw(st.booleans()):
        doc["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["predict", "nope"]), "parameters": json_values}
                    ),
                    max_size=2,
                ),
                json_values,
            )
        )
    if draw(st.booleans()):
        doc["id"] = draw(json_values)
    if draw(st.booleans()):
        doc["parameters"] = draw(json_values)
    return doc


@settings(FUZZ, max_examples=500)  # generating these is the costly part
@given(doc=near_miss_requests())
def test_structured_near_misses(client, doc):
    path = "/v2/models/fraud/infer"
    client.request("POST", path, json.dumps(doc).encode(), {"Content-Type": "application/json"})


@st.composite
def per_feature_mutations(draw):
    """Valid per-feature requests with one thing broken: NaN in the integer input, a dropped
    or extra input, a wrong datatype or a mismatched row count."""
    doc = row_request([0.5] * 9 + [3], COLUMNS)
    inputs = doc["inputs"]
    kind = draw(st.sampled_from(["nan_int", "drop", "extra", "dtype", "rows", "dup"]))
    if kind == "nan_int":
        inputs[-1]["data"] = [None]
    elif kind == "drop":
        inputs.pop(draw(st.integers(0, len(inputs) - 1)))
    elif kind == "extra":
        inputs.append(
            {
                "name": draw(st.text(min_size=1, max_size=5)),
                "shape": [1],
                "datatype": "FP64",
                "data": [1.0],
            }
        )
    elif kind == "dtype":
        i = draw(st.integers(0, len(inputs) - 1))
        inputs[i]["datatype"] = draw(st.sampled_from(["BYTES", "BOOL", "FP16x", "INT64"]))
        inputs[i]["data"] = draw(st.sampled_from([["a"], [1.5], [True]]))
    elif kind == "rows":
        inputs[0]["shape"] = [2]
        inputs[0]["data"] = [1.0, 2.0]
    else:
        inputs.append(dict(inputs[0]))
    return doc


@settings(FUZZ, max_examples=300)
@given(doc=per_feature_mutations())
def test_per_feature_mutations(client, doc):
    status = client.request(
        "POST",
        "/v2/models/fraud/infer",
        json.dumps(doc).encode(),
        {"Content-Type": "application/json"},
    )
    if doc["inputs"] and doc["inputs"][-1].get("data") == [None]:
        assert status == 400  # NaN where the signature (INT64 'hour') forbids it


@settings(FUZZ, max_examples=300)
@given(doc=json_values)
def test_arbitrary_json(client, doc):
    client.request("POST", "/v2/models/fraud/infer", json.dumps(doc).encode())


@settings(FUZZ, max_examples=300)
@given(body=st.binary(max_size=600))
def test_arbitrary_bytes(client, body):
    client.request("POST", "/v2/models/fraud/versions/1/infer", body)


@settings(FUZZ, max_examples=150)
@given(
    header=st.one_of(st.integers(-10, 400).map(str), st.text(max_size=4)),
    body=st.binary(max_size=300),
)
def test_binary_extension_headers(client, header, body):
    header = header.encode("ascii", "replace").decode() or "0"
    if not header.isprintable() or "\r" in header or "\n" in header:
        header = "1"
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
    client.request(
        "POST",
        "/v2/models/fraud/infer",
        head + body,
        {"Inference-Header-Content-Length": header},
    )


@settings(FUZZ, max_examples=100)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    tail=st.lists(
        st.sampled_from(["fraud", "versions", "1", "ready", "infer", "x", ""]), max_size=5
    ),
)
def test_paths(client, method, tail):
    client.request(method, "/v2/models/" + "/".join(tail), b"{}")


def test_body_over_limit(client, server):
    big = b'{"inputs": [' + b" " * 70_000 + b"]}"
    assert client.request("POST", "/v2/models/fraud/infer", big) == 400
    ok = orjson.dumps(row_request([0.1] * 9 + [3.0]))
    assert client.request("POST", "/v2/models/fraud/infer", ok) == 200


# --------------------------------------------------------------------------- hostile values
# A valid request for the fraud model (whose signature accepts no missing value) with one
# hostile thing in it: always a 400 / INVALID_ARGUMENT whose message names the input.

HOSTILE = ["nan", "inf", "-inf", "null", "zero_rows", "bool", "nested", "negative"]
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
TOKENS = {"nan": [b"NaN"], "inf": [b"Infinity", b"1e999"], "-inf": [b"-Infinity", b"-1e999"]}


@st.composite
def hostile_rest(draw):
    """(body, headers, the input the message must name or None) of one hostile request."""
    kind = draw(st.sampled_from(HOSTILE))
    rows = draw(st.integers(1, 3))
    row = [0.5] * 9 + [3]
    matrix = draw(st.booleans())
    if matrix:
        doc = {
            "inputs": [
                {
                    "name": "x",
                    "shape": [rows, 10],
                    "datatype": "FP64",
                    "data": [float(v) for v in row] * rows,
                }
            ]
        }
    else:
        doc = row_request(row, COLUMNS)
        for item in doc["inputs"]:
            item["shape"], item["data"] = [rows], item["data"] * rows
    inputs = doc["inputs"]
    target = inputs[0] if matrix else inputs[draw(st.integers(0, 8))]  # a float feature
    at = draw(st.integers(0, len(target["data"]) - 1))
    headers = {"Content-Type": "application/json"}
    binary = b""
    if kind in NON_FINITE and draw(st.booleans()):  # the binary extension: raw doubles
        values = list(target.pop("data"))
        values[at] = NON_FINITE[kind]
        binary = struct.pack(f"<{len(values)}d", *values)
        target["parameters"] = {"binary_data_size": len(binary)}
    elif kind in NON_FINITE:  # JSON tokens, as Python's json.dumps writes them
        target["data"][at] = "__HOSTILE__"
    elif kind == "null":
        target["data"][at] = None
    elif kind == "zero_rows":
        if draw(st.booleans()):
            target = inputs[0]  # every input empty: the first one is named
        for item in inputs if target is inputs[0] else [target]:
            item["shape"][0] = 0
            item["data"] = []
    elif kind == "bool":
        how = draw(st.sampled_from(["value", "all", "datatype"]))
        if how == "value":
            target["data"][at] = draw(st.booleans())
        elif how == "all":
            target["data"] = [True] * len(target["data"])
        else:
            target["datatype"] = "BOOL"
            target["data"] = [bool(v) for v in target["data"]]
    elif kind == "nested":
        data = target["data"]
        for _ in range(draw(st.integers(1, 4))):
            data = [data]
        target["data"] = [data] if matrix else data  # [[row]] would fit a 1-row matrix
    else:  # negative lengths
        if draw(st.booleans()):
            values = target.pop("data")
            binary = struct.pack(f"<{len(values)}d", *map(float, values))
            target["parameters"] = {"binary_data_size": -draw(st.integers(1, 2**40))}
        else:
            binary = b"\x00" * 8
            headers["Inference-Header-Content-Length"] = str(-draw(st.integers(1, 2**40)))
            target = None
    head = orjson.dumps(doc)
    if kind in TOKENS:
        head = head.replace(b'"__HOSTILE__"', draw(st.sampled_from(TOKENS[kind])))
    if binary and "Inference-Header-Content-Length" not in headers:
        headers["Inference-Header-Content-Length"] = str(len(head))
    return head + binary, headers, None if target is None else target["name"], kind


@settings(FUZZ, max_examples=450)
@given(case=hostile_rest())
def test_hostile_values_rest(client, case):
    body, headers, name, kind = case
    status = client.request("POST", "/v2/models/fraud/infer", body, headers)
    COUNTS["rest_hostile"] += 1
    assert status == 400, (kind, body[:300])
    if name is not None:
        assert f"'{name}'" in client.error, (kind, client.error)
    else:
        assert "non-negative" in client.error, client.error


@st.composite
def grpc_infer_messages(draw):
    req = pb.ModelInferRequest(model_name=draw(st.sampled_from(["fraud", "nope", ""])))
    for _ in range(draw(st.integers(0, 4))):
        tensor = req.inputs.add(
            name=draw(st.sampled_from(["x", "v0", "hour", ""])),
            datatype=draw(st.sampled_from([*DATATYPES, "", "FP65"])),
            shape=draw(st.lists(st.integers(-3, 12), max_size=3)),
        )
        which = draw(st.sampled_from(["fp64", "fp32", "int64", "bytes", "none"]))
        if which == "fp64":
            tensor.contents.fp64_contents.extend(draw(st.lists(st.floats(), max_size=12)))
        elif which == "fp32":
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=12)))
        elif which == "int64":
            tensor.contents.int64_contents.extend(
                draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12))
            )
        elif which == "bytes":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        req.raw_input_contents.append(draw(st.binary(max_size=100)))
    for _ in range(draw(st.integers(0, 2))):
        req.outputs.add(name=draw(st.sampled_from(["predict", "nope"])))
    return req.SerializeToString()


METHODS = [
    "ModelInfer",
    "ModelMetadata",
    "ModelReady",
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
]
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc) as ch:
        yield ch


def call(channel, method, payload):
    stub = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
    code = details = None
    try:
        stub(payload, timeout=30)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
    COUNTS["grpc"] += 1
    assert code not in BAD_CODES, (method, code, details, payload[:200])
    return code, details or ""


@settings(FUZZ, max_examples=300)
@given(payload=grpc_infer_messages())
def test_grpc_malformed_infer(channel, payload):
    call(channel, "ModelInfer", payload)


@settings(FUZZ, max_examples=200)
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=200))
def test_grpc_arbitrary_bytes(channel, method, payload):
    call(channel, method, payload)


@st.composite
def hostile_grpc(draw):
    """(ModelInferRequest bytes, the input the message must name) of one hostile request."""
    kind = draw(st.sampled_from(["nan", "inf", "-inf", "zero_rows", "bool"]))
    rows = draw(st.integers(1, 3))
    raw = draw(st.booleans())
    req = pb.ModelInferRequest(model_name="fraud")
    target = draw(st.integers(0, 8))  # a float feature
    zero = kind == "zero_rows"
    for i, name in enumerate(COLUMNS):
        n = 0 if zero and (i == target or i == 0) else rows
        values = [0.5] * n
        if i == target and kind in NON_FINITE:
            values[draw(st.integers(0, n - 1))] = NON_FINITE[kind]
        if name == "hour":
            tensor = req.inputs.add(name=name, datatype="INT64", shape=[n])
            if raw:
                req.raw_input_contents.append(struct.pack(f"<{n}q", *[3] * n))
            else:
                tensor.contents.int64_contents.extend([3] * n)
        elif i == target and kind == "bool":
            tensor = req.inputs.add(name=name, datatype="BOOL", shape=[n])
            if raw:
                req.raw_input_contents.append(bytes([1] * n))
            else:
                tensor.contents.bool_contents.extend([True] * n)
        else:
            tensor = req.inputs.add(name=name, datatype="FP64", shape=[n])
            if raw:
                req.raw_input_contents.append(struct.pack(f"<{n}d", *values))
            else:
                tensor.contents.fp64_contents.extend(values)
    named = COLUMNS[0] if zero else COLUMNS[target]
    return req.SerializeToString(), named, kind


@settings(FUZZ, max_examples=300)
@given(case=hostile_grpc())
def test_hostile_values_grpc(channel, case):
    payload, name, kind = case
    code, details = call(channel, "ModelInfer", payload)
    COUNTS["grpc_hostile"] += 1
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (kind, code, details)
    assert f"'{name}'" in details, (kind, details)


def test_the_count_and_the_server_still_answers(client, channel):
    """Runs last: the generated requests above, counted, and a valid request answered."""
    assert COUNTS["rest"] + COUNTS["grpc"] >= 2000, COUNTS
    assert COUNTS["rest_hostile"] >= 400, COUNTS
    assert COUNTS["grpc_hostile"] >= 250, COUNTS
    ok = orjson.dumps(row_request([0.1] * 9 + [3.0]))
    assert client.request("POST", "/v2/models/fraud/infer", ok) == 200
    req = pb.ModelInferRequest(model_name="fraud")
    tensor = req.inputs.add(name="x", datatype="FP64", shape=[1, 10])
    tensor.contents.fp64_contents.extend([0.1] * 9 + [3.0])
    assert call(channel, "ModelInfer", req.SerializeToString())[0] is None
