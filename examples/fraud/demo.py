"""``make demo``: the fraud pipeline end to end on embedded defaults, then where to look.

Runs ``usina run examples/fraud/pipeline.py`` (SQLite, local artifacts and a local MLflow store
under ``./.usina``), then reads the run back with ``usina.Client`` (as a notebook would) and
prints what was trained, its metrics, whether it became champion, and the commands to look
further. Extra arguments go to ``usina run`` (e.g. ``-p rows=50000``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import usina
from usina.tracking.uri import default_tracking_uri

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "examples" / "fraud" / "pipeline.py"


def _usina(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usina.cli.main", *args],
        cwd=REPO,
        text=True,
        check=False,
    )


def _serve_champion(name: str, sample: Any = None) -> None:
    """Serve the champion over the Open Inference Protocol and score a few transactions of
    the out-of-time test set (``sample``: a polars frame with the features and the label)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # No MLFLOW_TRACKING_URI for the server: `usina serve` finds the store `usina run` used,
    # exactly as the command printed at the end suggests.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "usina.cli.main",
            "serve",
            f"models:/{name}@champion",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--no-grpc",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    print("\ncould not serve the champion (usina serve exited)")
                    return
                time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/v2/models/{name}", timeout=5) as resp:
            meta = json.load(resp)
        n = 0 if sample is None else sample.height
        rows = [
            {
                "name": i["name"],
                "shape": [n],
                "datatype": i["datatype"],
                "data": [
                    float(v) if i["datatype"].startswith("FP") else int(v)
                    for v in sample[i["name"]].fill_null(float("nan")).to_list()
                ],
            }
            for i in meta["inputs"]
        ]
        request = urllib.request.Request(
            f"{base}/v2/models/{name}/infer",
            data=json.dumps({"inputs": rows}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.load(resp)
        scores = answer["outputs"][0]["data"]
        print(f"\n== the champion, served (Open Inference Protocol, {base})")
        labels = sample["label"].to_list() if sample is not None else []
        print(
            f"model {answer['model_name']} version {answer.get('model_version')}, "
            "on out-of-time test transactions:"
        )
        for score, label in zip(scores, labels, strict=False):
            later = "yes" if label else "no"
            print(f"  fraud score {float(score):.4f}   (chargeback came later: {later})")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str]) -> int:
    home = Path(os.environ.get("USINA_HOME") or REPO / ".usina").resolve()
    print(f"usina demo: the fraud pipeline on synthetic payments (state in {home})\n", flush=True)
    ran = _usina("run", str(PIPELINE), *argv)
    if ran.returncode != 0:
        print("\nthe pipeline failed; see above, then: usina runs why RUN", file=sys.stderr)
        return ran.returncode
    # Everything below reads the run the way a notebook would: through usina.Client.
    client = usina.Client(str(home))
    run = client.latest_run("fraud")
    run_id = run.id
    metrics = run.step("evaluate").metrics
    decision = client.load(run_id, "register")
    assert isinstance(decision, dict)
    print("\n== what was trained")
    print(f"run:        {run_id}  ({run.params.get('rows')} transactions)")
    trees = run.step("train").metrics.get("best_iteration")
    print(f"model:      LightGBM, {int(trees) if trees else '?'} trees, gate metric PR-AUC")
    print("metrics on the out-of-time test set:")
    for key, value in sorted(metrics.items()):
        if "." not in key and key != "threshold":
            print(f"  {key:<26}{value:.4f}")
    for method in ("credit", "debit", "pix"):
        if f"{method}.pr_auc" in metrics:
            print(f"  {method + ' pr_auc':<26}{metrics[method + '.pr_auc']:.4f}")
    verdict = "became champion" if decision.get("promoted") else "stayed challenger"
    print(f"\nregistry:   {decision.get('name')} version {decision.get('version')} {verdict}")
    print(f"            {decision.get('reason')}")
    tracking = default_tracking_uri(home=home)
    test_set = client.load(run_id, "split", 2)
    sample = (
        test_set.filter(test_set["label"] == 0)
        .head(2)
        .vstack(test_set.filter(test_set["label"] == 1).head(1))
    )
    _serve_champion(str(decision.get("name") or "fraud"), sample)
    print("\n== where to look (in a new shell, first: . .venv/bin/activate)")
    print(f"usina runs show {run_id}")
    print(f"usina runs why {run_id}        # failed or retried attempts, if any")
    print(f"mlflow ui --backend-store-uri {tracking}   # then http://127.0.0.1:5000")
    print("usina run examples/fraud/pipeline.py   # again: every step up to evaluate is cached")
    print(
        f"usina serve models:/{decision.get('name') or 'fraud'}@champion   # REST :8080, gRPC :8081"
    )
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
