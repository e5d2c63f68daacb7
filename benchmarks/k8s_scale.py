"""2,000 concurrent single-pod Jobs through the Kubernetes API emulator.

Prints, for the happy path: API requests per Job (target <= 3), the backend's CPU-seconds per
Job (this process: client, informers, classification, log copies; the emulator runs in its own
process), and the p50/p99 delay from a Job finishing (in the emulator) to ``observe`` reporting
it. Run: ``.venv/bin/python benchmarks/k8s_scale.py [--jobs 2000] [--run 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402

from tests.k8s.support import MemoryArtifacts, make_task  # noqa: E402
from usina.backends.kubernetes import KubernetesSettings, job_name  # noqa: E402
from usina.backends.kubernetes.backend import KubernetesBackend  # noqa: E402
from usina.engine.ports import TaskState  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--run", type=float, default=20.0, help="seconds each pod runs")
    args = parser.parse_args()

    emulator = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "k8s" / "emulator.py"), "--run", str(args.run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert emulator.stdout is not None
    url = emulator.stdout.readline().split()[1]
    config = client.Configuration()
    config.host = url
    api = client.ApiClient(config)
    settings = KubernetesSettings(
        namespace="ml", image="registry.example.com/usina:1.0", log_sync_seconds=None
    )
    setup0 = time.process_time()
    backend = KubernetesBackend(settings, api, MemoryArtifacts())
    backend.wait_synced()
    setup = time.process_time() - setup0  # the client's API classes are slow to build, once
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    ids = [f"bench-s{i:05d}-1" for i in range(args.jobs)]
    launched = 0.0

    def launch_all() -> None:  # the engine submits while it observes
        nonlocal launched
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda a: backend.launch(make_task(a)), ids))
        launched = time.monotonic() - wall0

    launcher = threading.Thread(target=launch_all)
    launcher.start()
    reported: dict[str, float] = {}
    pending = set(ids)
    while pending:
        for attempt, obs in backend.observe(sorted(pending)).items():
            if obs.state in (TaskState.SUCCEEDED, TaskState.FAILED):
                reported[attempt] = time.time()
                pending.discard(attempt)
                if obs.state is not TaskState.SUCCEEDED:
                    raise SystemExit(f"{attempt} failed: {obs}")
        if pending:
            backend.wait(1.0)
    wall = time.monotonic() - wall0
    launcher.join()
    cpu = time.process_time() - cpu0
    with urllib.request.urlopen(f"{url}/_emulator/stats") as resp:
        stats = json.load(resp)
    backend.close()
    api.close()
    assert emulator.stdin is not None
    emulator.stdin.close()
    emulator.wait(timeout=30)

    finished = stats["finished"]
    delays = [reported[a] - finished[job_name(a)] for a in ids]
    requests = stats["requests"]
    total = sum(requests.values())
    print(
        f"jobs: {args.jobs} (each pod runs {args.run:g} s); launched in {launched:.1f} s; "
        f"all reported in {wall:.1f} s"
    )
    print(
        f"API requests per Job: {total / args.jobs:.3f} (target <= 3)   "
        + ", ".join(f"{k}={v}" for k, v in sorted(requests.items()))
    )
    print(
        f"backend CPU-seconds per Job: {cpu / args.jobs * 1000:.2f} ms "
        f"({cpu:.1f} s for {args.jobs} Jobs; plus {setup:.1f} s once to build the client)"
    )
    print(
        f"delay Job finished -> reported: p50 {statistics.median(delays) * 1000:.0f} ms, "
        f"p99 {percentile(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
