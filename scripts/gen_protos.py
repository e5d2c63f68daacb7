"""Regenerate the committed gRPC message module from src/usina/serving/proto/*.proto.

Run with the project's venv (needs grpcio-tools, in the ``dev`` extra):
``.venv/bin/python scripts/gen_protos.py``. The generated ``*_pb2.py``/``*_pb2.pyi`` are
committed so that installing ``usina[grpc]`` needs no compiler; ``--check`` fails when the
committed module's descriptor no longer matches the .proto (a test runs it).
"""

from __future__ import annotations

import ast
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent / "src" / "usina" / "serving" / "proto"


def generate(out_dir: Path) -> list[Path]:
    outputs: list[Path] = []
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            str(proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
        outputs += [out_dir / f"{proto.stem}_pb2.py", out_dir / f"{proto.stem}_pb2.pyi"]
    return outputs


def _descriptor(module: Path) -> bytes:
    """The serialized file descriptor a generated module registers: it changes with the .proto,
    not with the version of grpcio-tools that generated the module."""
    match = re.search(rb"AddSerializedFile\((b'.*?')\)\n", module.read_bytes(), re.S)
    if match is None:
        raise SystemExit(f"{module} does not look like a generated protobuf module")
    return bytes(ast.literal_eval(match.group(1).decode("ascii")))


def main() -> int:
    check = "--check" in sys.argv[1:]
    if not check:
        generate(PROTO_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            out.name
            for out in generate(Path(tmp))
            if out.suffix == ".py"
            and (
                not (PROTO_DIR / out.name).exists()
                or _descriptor(PROTO_DIR / out.name) != _descriptor(out)
            )
        ]
    if stale:
        print("stale generated files (run scripts/gen_protos.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
