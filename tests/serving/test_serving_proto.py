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
