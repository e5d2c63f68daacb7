"""The cost of profiling an attempt (``usina.runtime.profile``), against not profiling it.

Run from the repository root with the project's environment::

    .venv/bin/python benchmarks/profile_overhead.py            # 200 attempts per variant
    .venv/bin/python benchmarks/profile_overhead.py --json

Measured in this one process, variants taking turns so that the machine's load hits both alike:

- per attempt: wall and CPU time of ``with profiled(store, task): <no-op>`` (the start
  counters, a thread start, the last sample, the record written to a local artifact store) in
  a child forked from this process with numpy loaded, as the local backend forks one per
  attempt, against the same block with profiling off (``interval=0``): the fixed cost every
  step pays.
- per sample: CPU time of one sample of a process tree of 1 and of 5 processes: the running
  cost, paid once per ``interval`` (1 s by default) while a step runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy  # noqa: F401 - loaded before forking, as the local backend's zygote does

from usina.engine.ports import Task
from usina.runtime.profile import ProcessTree, ProfileSettings, Sampler, profiled
from usina.stores.artifacts import FsspecArtifactStore


def _task(i: int) -> Task:
    return Task(
        attempt_id=f"bench-{i}",
        run_id="bench",
        pipeline="bench",
        node={"id": "noop", "step": "noop"},
        number=1,
        resources={"cpu": 1, "memory": "2Gi", "gpus": 0},
        inputs={},
        artifacts_url="",
        params={},
    )


def _one_attempt(
    store: FsspecArtifactStore, i: int, settings: ProfileSettings
) -> tuple[float, float]:
    """Wall and CPU seconds of one profiled no-op attempt in a forked child, as the local
    backend's zygote forks one per attempt (its first samples pay the child's page faults)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report through the pipe, leave at once
        os.close(r)
        wall, cpu = time.perf_counter(), time.process_time()
        with profiled(store, _task(i), settings=settings, environ={}):
            pass
        os.write(w, f"{time.perf_counter() - wall} {time.process_time() - cpu}".encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        spent_wall, spent_cpu = map(float, fh.read().split())
    os.waitpid(pid, 0)
    return spent_wall, spent_cpu


def per_attempt(store: FsspecArtifactStore, n: int) -> dict[str, dict[str, float]]:
    on, off = ProfileSettings(interval=1.0), ProfileSettings(interval=0.0)
    times: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for i in range(n):
        for name, settings in (("on", on), ("off", off)):
            times[name].append(_one_attempt(store, i, settings))
    out: dict[str, dict[str, float]] = {}
    for name, rows in times.items():
        out[name] = {
            "wall_ms": statistics.median(r[0] for r in rows) * 1000,
            "cpu_ms": statistics.median(r[1] for r in rows) * 1000,
        }
    return out


def per_sample(children: int, n: int) -> float:
    procs = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        for _ in range(children)
    ]
    try:
        time.sleep(0.3)
        sampler = Sampler(
            None, "bench", tree=ProcessTree(os.getpid()), settings=ProfileSettings(interval=0.01)
        )
        for _ in range(n):
            sampler.sample()
            time.sleep(0.005)
        return sampler.sample_cost / n * 1000
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        store = FsspecArtifactStore(folder)
        attempt = per_attempt(store, args.attempts)
    sample = {f"tree_of_{k + 1}_cpu_ms": per_sample(k, args.samples) for k in (0, 4)}
    extra_wall = attempt["on"]["wall_ms"] - attempt["off"]["wall_ms"]
    report = {
        "per_attempt": attempt,
        "extra_wall_ms_per_attempt": extra_wall,
        "per_sample": sample,
        "share_of_a_core_at_1s": sample["tree_of_1_cpu_ms"] / 1000.0,
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"profiling overhead ({args.attempts} attempts, {args.samples} samples each)")
    for name in ("off", "on"):
        a = attempt[name]
        wall, cpu = a["wall_ms"], a["cpu_ms"]
        print(f"  per attempt, profiling {name:3}: {wall:.2f} ms wall, {cpu:.2f} ms CPU")
    print(f"  extra per attempt: {extra_wall:.2f} ms wall (the orchestration target is 15 ms/step)")
    for key, value in sample.items():
        print(f"  one sample, {key.replace('_', ' ')}: {value:.3f}")
    print(f"  at the default 1 s interval: {report['share_of_a_core_at_1s']:.3%} of a core")
    print(f"  1-minute load average: {report['load_average']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
