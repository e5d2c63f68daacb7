"""Serving benchmark: ``usina serve`` vs MLServer 1.7, plain FastAPI and a no-op endpoint.

One invocation builds (or reuses) the same LightGBM fraud-style model, serves it with each server
in turn on this machine, drives REST with ``wrk`` at 1, 16 and 64 connections and gRPC with
``h2load`` (64 streams in flight over 16 HTTP/2 connections, every request the same pre-encoded
``ModelInfer`` frame), and prints requests/s, p50, p99 and the load generator's CPU use for
each, and the ratios the issues target. MLServer runs from its own venv under
``benchmarks/.venvs/mlserver`` (created here).

    python benchmarks/serving.py                     # everything, 10 s per point
    python benchmarks/serving.py --duration 5 --servers usina,fastapi-2w
    python benchmarks/serving.py --soak 120          # + the 2-minute overload soak (RSS growth)
    python benchmarks/serving.py --grpc-generator python   # the older Python gRPC client instead
    python benchmarks/serving.py --model strings --servers usina,mlserver,fastapi-2w
        # a scikit-learn Pipeline one-hot-encoding string columns (uf, mcc): usina vs MLServer's
        # scikit-learn runtime with its pandas codec vs FastAPI calling model.predict(DataFrame)

Needs ``wrk`` and ``h2load`` (``bash scripts/install_load_generators.sh``: apt) and the project's
venv with the ``serving,grpc,mlflow,fraud,dev`` extras. Results vary with what else runs on the
machine: compare the ratios of one invocation.

The "gen cpu" column is the generator's CPU time over the point's duration, as a share of what its
threads could use (wrk: 2 threads, h2load: 1, the Python generator: 2 processes): near 100% the
generator, not the server, limits the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = HERE / ".venvs"
WORK = HERE / ".work"
# uvloop 0.22 made get_event_loop() raise without a loop, which breaks MLServer 1.7 workers.
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop<0.22"]
# The string-column model is unpickled by MLServer's scikit-learn runtime: same sklearn there.
MLSERVER_SKLEARN_PINS = ["mlserver-sklearn==1.7.1", "pandas>=2.2"]
UFS = ["SP", "RJ", "MG", "BA", "RS", "PR", "PE", "CE", "PA", "SC", "GO", "AM", "DF", "ES"]
MCCS = ["5411", "5812", "5999", "4111", "5732", "7995", "5311", "5541"]
N_FEATURES = 30
N_TREES = 200
MODEL = "fraud"


# ----------------------------------------------------------------------------- model


def build_model(work: Path) -> Path:
    """A 200-tree LightGBM binary classifier on fraud-like data, saved as an MLflow model."""
    model_dir = work / "mlflow-model"
    if (model_dir / "MLmodel").exists():
        return model_dir
    import warnings

    warnings.simplefilter("ignore")
    import lightgbm as lgb
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, N_FEATURES)).astype(np.float32)
    logit = x[:, 0] * 1.5 - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(size=len(x))
    y = (logit > 2.0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 31, "verbose": -1, "seed": 0},
        lgb.Dataset(x, y),
        N_TREES,
    )
    mlflow.lightgbm.save_model(
        booster,
        str(model_dir),
        signature=infer_signature(x[:5], booster.predict(x[:5])),
        pip_requirements=["lightgbm"],
    )
    return model_dir


def build_strings_model(work: Path) -> Path:
    """A scikit-learn Pipeline on payments with string columns (``uf``, the Brazilian state,
    and ``mcc``) one-hot encoded by a ColumnTransformer, saved as an MLflow model (usina) and
    as ``model.joblib`` (MLServer, FastAPI)."""
    model_dir = work / "mlflow-strings-model"
    if (model_dir / "MLmodel").exists():
        return model_dir
    import warnings

    warnings.simplefilter("ignore")
    import joblib
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 20_000
    df = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 80.0, n),
            "uf": rng.choice(UFS, n),
            "mcc": rng.choice(MCCS, n),
            "installments": rng.integers(1, 13, n).astype(np.int64),
        }
    )
    df.columns = pd.Index(list(df.columns), dtype=object)
    logit = (df.amount - 160) / 80 + np.where(df.mcc == "7995", 2.0, 0.0) - 0.1 * df.installments
    y = (logit + rng.normal(size=n) > 1.0).astype(int)
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["uf", "mcc"]),
                        ("num", StandardScaler(), ["amount", "installments"]),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(df, y)
    mlflow.sklearn.save_model(
        model,
        str(model_dir),
        signature=infer_signature(df.head(100), model.predict(df.head(100))),
        input_example=df.head(3),
        pip_requirements=["scikit-learn"],
    )
    joblib.dump(model, model_dir / "model.joblib")
    return model_dir


def booster_file(model_dir: Path) -> Path:
    return next(p for p in model_dir.iterdir() if p.suffix == ".lgb")


def request_body(kind: str = "lightgbm") -> bytes:
    if kind == "strings":
        # One row as named columns; the parameters are MLServer's pandas/str codecs (usina
        # reads the types from the model's signature and ignores them).
        cols = [
            ("amount", "FP64", [412.5], None),
            ("uf", "BYTES", ["SP"], "str"),
            ("mcc", "BYTES", ["7995"], "str"),
            ("installments", "INT64", [3], None),
        ]
        inputs = []
        for name, datatype, data, codec in cols:
            item: dict[str, Any] = {"name": name, "shape": [1], "datatype": datatype, "data": data}
            if codec:
                item["parameters"] = {"content_type": codec}
            inputs.append(item)
        doc = {
            "parameters": {"content_type": "pd"},
            "inputs": inputs,
            "outputs": [{"name": "predict_proba"}],  # the same work for every server
        }
        return json.dumps(doc).encode()
    row = [round(0.1 * i - 1.0, 3) for i in range(N_FEATURES)]
    return json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP32", "data": row}]}
    ).encode()


# ----------------------------------------------------------------------------- servers

FASTAPI_APP = """
import os
import lightgbm as lgb
import joblib
import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
STRINGS = os.environ.get("BENCH_KIND") == "strings"
booster = None if STRINGS else lgb.Booster(model_file=os.environ["BENCH_MODEL_FILE"])
pipeline = joblib.load(os.environ["BENCH_MODEL_FILE"]) if STRINGS else None


class Input(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list


class InferRequest(BaseModel):
    inputs: list[Input]


@app.post("/v2/models/fraud/infer")
def infer(req: InferRequest):
    x = np.asarray(req.inputs[0].data, dtype=np.float32).reshape(req.inputs[0].shape)
    pred = booster.predict(x)
    return {"model_name": "fraud", "outputs": [
        {"name": "predict", "datatype": "FP64", "shape": list(pred.shape),
         "data": pred.tolist()}]}


@app.post("/v2/models/fraud_strings/infer")
def infer_strings(req: InferRequest):
    frame = pd.DataFrame({i.name: i.data for i in req.inputs})
    proba = pipeline.predict_proba(frame)
    return {"model_name": "fraud", "outputs": [
        {"name": "predict_proba", "datatype": "FP64", "shape": list(proba.shape),
         "data": proba.reshape(-1).tolist()}]}


@app.post("/noop")
async def noop():
    return {"ok": True}
"""


@dataclass
class Served:
    name: str
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int | None
    path: str
    log: Path
    workers_pids: list[int] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"not ready after {timeout}s")


def ensure_mlserver_venv(kind: str = "lightgbm") -> Path:
    venv = VENVS / "mlserver"
    py = venv / "bin" / "python"
    marker = venv / (".installed" if kind == "lightgbm" else ".installed-sklearn")
    if marker.exists():
        return venv
    pins = list(MLSERVER_PINS)
    if kind == "strings":
        import sklearn

        pins += [*MLSERVER_SKLEARN_PINS, f"scikit-learn=={sklearn.__version__}"]
    print(f"creating {venv} with {' '.join(pins)} ...", flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "uv"], check=True)
    subprocess.run(
        [str(venv / "bin" / "uv"), "pip", "install", "-q", "--python", str(py), *pins],
        check=True,
    )
    marker.touch()
    return venv


def start(name: str, model_dir: Path, work: Path, kind: str = "lightgbm") -> Served:
    http_port, grpc_port = free_port(), free_port()
    strings = kind == "strings"
    log = work / f"{name}.log"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    grpc: int | None = grpc_port
    path = f"/v2/models/{MODEL}/infer"
    ready = "/v2/health/ready"
    if name.startswith("usina"):
        workers = name.split("-")[1].rstrip("w") if "-" in name else "2"
        cmd = [
            sys.executable, "-m", "usina.serving", str(model_dir), "--name", MODEL,
            "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--workers", workers, "--log-level", "warning",
        ]  # fmt: skip
    elif name.startswith("mlserver"):
        venv = ensure_mlserver_venv(kind)
        repo = work / name
        shutil.rmtree(repo, ignore_errors=True)
        (repo / MODEL).mkdir(parents=True)
        if strings:
            shutil.copy(model_dir / "model.joblib", repo / MODEL / "model.joblib")
            settings = {"name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel",
                        "parameters": {"uri": "./model.joblib"}}  # fmt: skip
        else:
            shutil.copy(booster_file(model_dir), repo / MODEL / "model.bst")
            settings = {"name": MODEL, "implementation": "mlserver_lightgbm.LightGBMModel",
                        "parameters": {"uri": "./model.bst"}}  # fmt: skip
        if name == "mlserver-batching":
            settings |= {"max_batch_size": 32, "max_batch_time": 0.002}
        (repo / MODEL / "model-settings.json").write_text(json.dumps(settings))
        (repo / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": http_port,
                    "grpc_port": grpc_port,
                    "metrics_port": free_port(),
                    "host": "127.0.0.1",
                    "debug": False,
                }
            )
        )
        cmd = [str(venv / "bin" / "mlserver"), "start", str(repo)]
    else:  # fastapi-1w, fastapi-2w, noop-2w
        app_dir = work / "fastapi_app"
        app_dir.mkdir(exist_ok=True)
        (app_dir / "bench_app.py").write_text(textwrap.dedent(FASTAPI_APP))
        env["BENCH_KIND"] = kind
        env["BENCH_MODEL_FILE"] = str(
            model_dir / "model.joblib" if strings else booster_file(model_dir)
        )
        if strings:
            path = "/v2/models/fraud_strings/infer"
        workers = name.split("-")[1].rstrip("w")
        cmd = [
            sys.executable, "-m", "uvicorn", "bench_app:app", "--app-dir", str(app_dir),
            "--host", "127.0.0.1", "--port", str(http_port), "--workers", workers,
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        grpc = None
        ready = "/docs"
        if name.startswith("noop"):
            path = "/noop"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    served = Served(name, proc, http_port, grpc, path, log)
    try:
        wait_http(http_port, ready, 180, proc)
    except RuntimeError as exc:
        stop(served)
        raise RuntimeError(f"{name}: {exc}\n{log.read_text()[-3000:]}") from exc
    return served


def stop(served: Served) -> None:
    if served.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(served.proc.pid, signal.SIGTERM)
        try:
            served.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(served.proc.pid, signal.SIGKILL)
            served.proc.wait()


# ----------------------------------------------------------------------------- load


@dataclass
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    gen_cpu: float = float("nan")  # the generator's CPU use, share of its threads' capacity


@contextlib.contextmanager
def children_cpu(into: list[float]) -> Any:
    """CPU seconds (user + system) of the child processes waited for inside the block: the load
    generator's, since the servers are still running and so not yet waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    into.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(port: int, path: str, body: bytes, connections: int, duration: float) -> Point:
    script = WORK / "post.lua"
    (WORK / "body.json").write_bytes(body)
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = io.open("{WORK / "body.json"}"):read("*a")\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    threads = min(2, connections)
    seconds = max(1, round(duration))
    cpu: list[float] = []
    with children_cpu(cpu):
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    n_err = int(non2xx.group(1)) if non2xx else 0
    if errors:
        n_err += sum(int(g) for g in errors.groups())
    return Point(rps, p50, p99, n_err, cpu[0] / (seconds * threads))


def _grpc_worker(port: int, payload: bytes, concurrency: int, duration: float, q: object) -> None:
    import grpc

    async def main() -> tuple[int, list[float], int]:
        latencies: list[float] = []
        errors = 0
        # Several connections, so SO_REUSEPORT spreads them over a server's worker processes
        # (a local subchannel pool stops grpc from sharing one connection between channels).
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(4)
        ]
        calls = [ch.unary_unary("/inference.GRPCInferenceService/ModelInfer") for ch in channels]
        end = time.perf_counter() + duration

        async def loop(call: Any) -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    await call(payload, timeout=30)
                    latencies.append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(loop(calls[i % len(calls)]) for i in range(concurrency)))
        for ch in channels:
            await ch.close()
        return len(latencies), latencies, errors

    q.put(asyncio.run(main()))  # type: ignore[attr-defined]


def grpc_payload() -> bytes:
    import numpy as np
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="input-0", datatype="FP32", shape=[1, N_FEATURES])
    row = np.array([0.1 * i - 1.0 for i in range(N_FEATURES)], dtype=np.float32)
    req.raw_input_contents.append(row.tobytes())
    return bytes(req.SerializeToString())


def run_grpc(port: int, concurrency: int, duration: float, procs: int = 2) -> Point:
    payload = grpc_payload()
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    workers = [
        ctx.Process(target=_grpc_worker, args=(port, payload, concurrency // procs, duration, q))
        for _ in range(procs)
    ]
    cpu: list[float] = []
    with children_cpu(cpu):
        for w in workers:
            w.start()
        results = [q.get(timeout=duration + 120) for _ in workers]
        for w in workers:
            w.join()
    latencies = sorted(lat for _, lats, _ in results for lat in lats)
    count = sum(n for n, _, _ in results)
    errors = sum(e for _, _, e in results)
    if not latencies:
        return Point(0.0, float("nan"), float("nan"), errors)
    return Point(
        count / duration,
        statistics.median(latencies) * 1000,
        latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
        errors,
        cpu[0] / (duration * procs),
    )


def grpc_preflight(port: int, payload: bytes) -> int:
    """One ``ModelInfer`` through grpcio, which must succeed: the length of the answer's gRPC
    message. h2load sees HTTP/2 only (a gRPC error is an HTTP 200 with a ``grpc-status``
    trailer), so :func:`run_h2load` counts as answered the requests whose DATA it received."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        return len(call(payload, timeout=30))


def run_h2load(
    port: int, payload: bytes, in_flight: int, duration: float, connections: int
) -> Point:
    """gRPC load from h2load: ``connections`` HTTP/2 connections with ``in_flight /
    connections`` streams each, every request the same pre-encoded gRPC frame (the 5-byte
    prefix and the serialized ``ModelInferRequest``), so the generator does no protobuf work."""
    answer = grpc_preflight(port, payload)
    frame = WORK / "grpc-request.bin"
    frame.write_bytes(b"\x00" + struct.pack(">I", len(payload)) + payload)
    log = WORK / "h2load.log"
    log.unlink(missing_ok=True)
    seconds = max(1, round(duration))
    cpu: list[float] = []
    command = [
        "h2load",
        "-t", "1",
        "-c", str(connections),
        "-m", str(max(1, in_flight // connections)),
        "-D", str(seconds),
        "--warm-up-time", "1",
        "-d", str(frame),
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        f"--log-file={log}",
        f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer",
    ]  # fmt: skip
    with children_cpu(cpu):
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    data = re.search(r"traffic: .*?, \S+ \((\d+)\) data", out)
    if done is None or data is None:
        raise RuntimeError(f"cannot read h2load's output:\n{out}")
    n_done, n_ok = int(done.group(1)), int(done.group(2))
    # Every answered request brings one gRPC message of ``answer`` bytes behind its 5-byte
    # prefix; a failed RPC brings none (only a grpc-status trailer).
    answered = min(n_ok, int(data.group(1)) // (5 + answer))
    latencies = sorted(
        int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line
    )
    if not latencies:
        return Point(0.0, float("nan"), float("nan"), n_done, cpu[0] / seconds)
    return Point(
        answered / seconds,
        statistics.median(latencies),
        latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        n_done - answered,
        cpu[0] / seconds,
    )


def rss_tree(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def soak(model_dir: Path, seconds: float, connections: int) -> None:
    served = start("usina-2w", model_dir, WORK)
    try:
        body = request_body()
        run_wrk(served.http_port, served.path, body, connections, 10)  # warm up
        before = rss_tree(served.proc.pid)
        point = run_wrk(served.http_port, served.path, body, connections, seconds)
        after = rss_tree(served.proc.pid)
    finally:
        stop(served)
    growth = (after - before) / before * 100
    print(
        f"\nsoak {seconds:.0f}s at {connections} connections: {point.rps:,.0f} req/s answered "
        f"(non-2xx = shed: {point.errors}), p50 {point.p50_ms:.1f} ms, p99 {point.p99_ms:.1f} ms;"
        f" RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.2f}%, target < 5%)"
    )


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument(
        "--servers",
        default="usina,mlserver,mlserver-batching,fastapi-1w,fastapi-2w,noop-2w",
    )
    parser.add_argument("--grpc-concurrency", type=int, default=64, help="gRPC requests in flight")
    parser.add_argument(
        "--grpc-generator",
        choices=["h2load", "python"],
        default="h2load",
        help="h2load: pre-encoded frames from C; python: grpc.aio clients in 2 processes",
    )
    parser.add_argument(
        "--grpc-connections", type=int, default=16, help="h2load's HTTP/2 connections"
    )
    parser.add_argument(
        "--model",
        choices=["lightgbm", "strings"],
        default="lightgbm",
        help="lightgbm: 30 float features; strings: a Pipeline one-hot-encoding string columns",
    )
    parser.add_argument("--soak", type=float, default=0.0, help="overload soak seconds (0: off)")
    parser.add_argument("--soak-connections", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    for tool in ("wrk", "h2load") if args.grpc_generator == "h2load" else ("wrk",):
        if shutil.which(tool) is None:
            print(
                f"{tool} is not installed: run  bash scripts/install_load_generators.sh",
                file=sys.stderr,
            )
            return 2
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=WORK))
    kind = args.model
    model_dir = build_strings_model(WORK) if kind == "strings" else build_model(WORK)
    conns = [int(c) for c in args.connections.split(",")]
    body = request_body(kind)
    rest: dict[str, dict[int, Point]] = {}
    grpc_points: dict[str, Point] = {}
    if kind == "strings":
        print("model: scikit-learn Pipeline, one-hot uf and mcc (strings) + 2 numbers; one row")
    else:
        print(f"model: {N_TREES}-tree LightGBM, {N_FEATURES} features; one row per request")
    print(
        f"{'server':<23}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'gen cpu':>9}"
    )
    for name in args.servers.split(","):
        label = "usina-2w" if name == "usina" else name
        served = start(label, model_dir, work, kind)
        try:
            run_wrk(served.http_port, served.path, body, 16, 2)  # warm up
            rest[name] = {}
            for c in conns:
                point = run_wrk(served.http_port, served.path, body, c, args.duration)
                rest[name][c] = point
                print(
                    f"{name:<23}{c:>6}{point.rps:>10,.0f}{point.p50_ms:>9.2f}"
                    f"{point.p99_ms:>9.2f}{point.errors:>8}{point.gen_cpu:>9.0%}",
                    flush=True,
                )
            if served.grpc_port is not None and kind == "lightgbm":
                if args.grpc_generator == "h2load":
                    point = run_h2load(
                        served.grpc_port,
                        grpc_payload(),
                        args.grpc_concurrency,
                        args.duration,
                        args.grpc_connections,
                    )
                else:
                    point = run_grpc(served.grpc_port, args.grpc_concurrency, args.duration)
                grpc_points[name] = point
                print(
                    f"{name + ' gRPC':<23}{args.grpc_concurrency:>6}{point.rps:>10,.0f}"
                    f"{point.p50_ms:>9.2f}{point.p99_ms:>9.2f}{point.errors:>8}"
                    f"{point.gen_cpu:>9.0%}",
                    flush=True,
                )
        finally:
            stop(served)
    top = max(conns)
    print(f"\nratios at {top} connections (REST) / {args.grpc_concurrency} in flight (gRPC):")

    def ratio(a: str, b: str, points: dict[str, Point]) -> None:
        if a in points and b in points and points[b].rps:
            pa, pb = points[a], points[b]
            kind = "gRPC" if points is grpc_points else "REST"
            if b.endswith(" REST"):
                kind = "gRPC"
            print(
                f"  {a} / {b} ({kind}): throughput x{pa.rps / pb.rps:.2f}, "
                f"p99 {pa.p99_ms:.1f} ms vs {pb.p99_ms:.1f} ms"
            )

    at_top = {n: p[top] for n, p in rest.items() if top in p}
    for other in ("mlserver", "mlserver-batching", "fastapi-1w", "fastapi-2w", "noop-2w"):
        ratio("usina", other, at_top)
    for other in ("mlserver", "mlserver-batching"):
        ratio("usina", other, grpc_points)
    if "usina" in grpc_points and "usina" in at_top:
        ratio("usina", "usina REST", {"usina": grpc_points["usina"], "usina REST": at_top["usina"]})
    print(
        "  targets: REST >= 4x MLServer and >= the best plain FastAPI, p99 no worse; "
        "gRPC >= 3x MLServer's gRPC and >= 0.5x usina's REST, p99 <= MLServer's"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rest": {n: {c: vars(p) for c, p in ps.items()} for n, ps in rest.items()},
                    "grpc": {n: vars(p) for n, p in grpc_points.items()},
                },
                indent=2,
            )
        )
    if args.soak:
        soak(model_dir, args.soak, args.soak_connections)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
