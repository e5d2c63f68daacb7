"""The committed gRPC module matches its .proto (regenerate: scripts/gen_protos.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_proto_module_is_fresh():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_proto_keeps_the_standard_field_numbers():
    text = (ROOT / "src/usina/serving/proto/grpc_predict_v2.proto").read_text()
    for line in (
        "package inference;",
        "service GRPCInferenceService",
        "repeated bytes raw_input_contents = 7;",
        "repeated bytes raw_output_contents = 6;",
        "InferTensorContents contents = 5;",
        "repeated InferInputTensor inputs = 5;",
    ):
        assert line in text


def test_hand_encoded_infer_response_is_what_protobuf_writes():
    """encode_grpc_response writes the wire format itself: byte for byte protobuf's own
    (tritonclient's module of the same .proto: two modules of one package cannot share a
    process's descriptor pool, and the other serving tests import tritonclient's)."""
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb

    from usina.serving.codec import encode_grpc_response, tensor_bytes
    from usina.serving.model import Layout, LoadedModel, TensorMeta

    metas = (
        TensorMeta("predict", "INT64", (-1,)),
        TensorMeta("predict_proba", "FP64", (-1, 2)),
        TensorMeta("região", "BYTES", (-1,)),
    )
    model = LoadedModel(
        name="fraude-ü" * 20,  # a name longer than 127 bytes: a two-byte length
        version="12",
        platform="test",
        flavour="test",
        layout=Layout.COLUMNS,
        inputs=(TensorMeta("a", "FP64", (-1,)),),
        outputs=metas,
        predict=lambda batch: {},
        batch_dtype=np.dtype(np.float64),
    )
    rng = np.random.default_rng(0)
    for rows in (0, 1, 3, 300):
        outputs = {
            "predict": rng.integers(-5, 5, rows),
            "predict_proba": rng.random((rows, 2)),
            "região": np.array(["SP", "São Paulo"] * rows, dtype=object)[:rows],
        }
        for request_id in ("", "req-1", "x" * 200):
            for chosen in ([(m, False) for m in metas], [(metas[1], False)]):
                want = pb.ModelInferResponse(
                    model_name=model.name, model_version=model.version, id=request_id
                )
                for meta, _ in chosen:
                    values = outputs[meta.name]
                    want.outputs.add(name=meta.name, datatype=meta.datatype, shape=values.shape)
                    want.raw_output_contents.append(tensor_bytes(meta, values))
                got = encode_grpc_response(model, request_id, chosen, outputs)
                assert got == want.SerializeToString(), (rows, request_id, len(chosen))
