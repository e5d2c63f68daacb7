#!/usr/bin/env bash
# GPU checks for a lent GPU machine (not CI): the local backend hands GPUs out one step at a
# time through CUDA_VISIBLE_DEVICES, a Torchrun step runs NCCL, and DDP throughput with NCCL.
# Expects wheels the machine lacks in .whl/ (sqlalchemy, alembic, mako) and $OUT for results.
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
if ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$REPO"/.whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$REPO/src:$REPO"
else
  export PYTHONPATH="$REPO/src:$REPO"
fi
export USINA_HOME=/tmp/usina-gpu PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
cd /tmp
python3 -m usina.cli.main run "$REPO/benchmarks/gpu_pipeline.py" -o json > "$OUT/gpu_run.json" 2> "$OUT/gpu_run.err"
echo "gpu pipeline exit: $?"
tail -5 "$OUT/gpu_run.err"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
run = json.loads((out / "gpu_run.json").read_text())
print("run", run["state"], [(s["node"], s["state"]) for s in run["steps"]])
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores import serializers
store = FsspecArtifactStore("/tmp/usina-gpu/artifacts")
vals = {}
for s in run["steps"]:
    if s["outputs"]:
        ref = s["outputs"][0]
        vals[s["node"]] = serializers.load(store.get_bytes(ref["digest"]), ref["serializer"], ref["type_name"])
print(json.dumps(vals, indent=1))
a, b = vals["gpu_a"], vals["gpu_b"]
overlap = min(a["ended"], b["ended"]) - max(a["started"], b["started"])
print("gpu steps overlap (s):", round(overlap, 3), "(<= 0 means the second waited for the GPU)")
(out / "gpu_values.json").write_text(json.dumps(vals, indent=1))
PY
python3 "$REPO/benchmarks/ddp.py" --ranks 1 --seconds 6 2>&1 | tee "$OUT/ddp.txt"
