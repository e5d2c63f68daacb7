"""Orchestration overhead: usina against Prefect 3, Metaflow and Kedro on the same workloads.

Run from the repository root, with the project's virtual environment (``make install``)::

    .venv/bin/python benchmarks/orchestration.py            # full: warm-up + median of 3
    .venv/bin/python benchmarks/orchestration.py --quick    # smoke: 1 run each, no warm-up
    .venv/bin/python benchmarks/orchestration.py --json     # machine-readable result on stdout

Workloads (files under ``benchmarks/workloads/``, one per tool and workload):

- W1: a 50-step linear chain of no-op steps, each taking the previous step's output.
- W2: a 20-way fan-out/fan-in: a source step makes an 8 MB numpy array, 20 parallel steps each
  return a new 8 MB array, a join step takes all 20 and checks their sum.
- one (W0): the smallest run (one step; Metaflow needs ``start`` and ``end``, so two), to compute
  the marginal per-step overhead = (W1 - one) / (50 - steps in one).
- W3: W1 again in a state folder where W1 has just run (untimed): usina with its cache on (50
  cached steps), Metaflow's ``resume end`` (49 steps cloned, ``end`` run). Prefect and Kedro
  keep no results between runs by default: n/a.

Kedro is the in-process peer (issue 22): its runner calls the nodes in one process, with no
process per step and nothing persisted, so it is the floor usina's isolated steps aim at.

Every run is a fresh process tree started by this script, with its own temporary state folder
(``USINA_HOME``, ``PREFECT_HOME``, ``METAFLOW_HOME`` and Metaflow's local datastore), so nothing
carries over between runs except the operating system's file cache (unless ``--reuse-state``).
Wall time is measured here, from process start to exit. Peak RSS is the largest sum of RSS over
the run's whole process tree, sampled every 10 ms (see benchmarks/README.md for what that does and
does not count).

Prefect, Metaflow and Kedro are installed by this script on first use, each into its own virtual
environment under ``benchmarks/.venvs/<peer>`` (git-ignored), at the versions pinned below. None
of the results are hard-coded: they are what this machine measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - the project's .venv has it
    sys.exit(
        "benchmarks/orchestration.py needs psutil: run it with .venv/bin/python (make install)"
    )

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOADS_DIR = HERE / "workloads"
VENVS = HERE / ".venvs"

# Pinned peers (latest 3.x / 2.x on the index when this was written); numpy pinned alike so the
# array work is the same library version as far as the index allows.
PINS: dict[str, tuple[str, ...]] = {
    "prefect": ("prefect==3.9.1", "numpy==2.4.6"),
    "metaflow": ("metaflow==2.19.39", "numpy==2.4.6"),
    "kedro": ("kedro==1.7.0", "numpy==2.4.6"),
}
TOOLS = ("usina", "prefect", "metaflow", "kedro")
# Opt-in (``--tools usina,usina-noprof``): usina with per-attempt profiling off
# (``USINA_PROFILE_INTERVAL=0``), to print what profiling costs; "usina" runs with it on.
VARIANTS = ("usina-noprof",)
WORKLOADS = ("w1", "w2", "one", "w3")
# W3 re-runs W1 (its file) after an untimed W1 in the same state folder, for these tools.
CACHED_RERUN = ("usina", "usina-noprof", "metaflow")
CHAIN_STEPS = 50
# Steps in each tool's smallest run: Metaflow cannot run a flow without both start and end.
ONE_STEPS = {"usina": 1, "usina-noprof": 1, "prefect": 1, "metaflow": 2, "kedro": 1}
SAMPLE_INTERVAL_S = 0.010
MIB = 1024 * 1024

# Targets for usina (issue 2's benchmark acceptance): usina / peer wall time at most this.
WALL_TARGETS = {"prefect": 0.25, "metaflow": 0.5}
PER_STEP_TARGET_MS = 15.0
# Issue 22's: W0 at most this many seconds and this fraction of Metaflow's; W3 at most this.
W0_TARGET_S, W0_METAFLOW_RATIO, W3_TARGET_S = 0.5, 0.6, 0.3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Installing the peers


def _python3(explicit: str | None) -> str:
    found = explicit or shutil.which("python3") or getattr(sys, "_base_executable", sys.executable)
    return str(found)


def ensure_peer_venv(peer: str, python: str) -> Path:
    """Create ``benchmarks/.venvs/<peer>`` with the pinned packages, once per set of pins."""
    venv = VENVS / peer
    stamp = venv / ".bench-pins"
    wanted = "\n".join(PINS[peer]) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted and (venv / "bin" / "python").exists():
        return venv
    log(f"[setup] creating {venv.relative_to(REPO)} with {' '.join(PINS[peer])}")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    subprocess.run([vpy, "-m", "pip", "install", "-q", "uv"], check=True)
    subprocess.run(
        [str(venv / "bin" / "uv"), "pip", "install", "-q", "--python", vpy, *PINS[peer]],
        check=True,
    )
    stamp.write_text(wanted)
    return venv


def tool_version(tool: str, python: Path) -> str:
    module = tool
    code = (
        "import importlib.metadata as m, numpy, sys;"
        f"print(m.version({module!r}), numpy.__version__, sys.version.split()[0])"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return "unknown"
    version, numpy_version, py = out.stdout.split()
    return f"{version} (numpy {numpy_version}, Python {py})"


# --------------------------------------------------------------------------------------------
# How each tool runs a workload


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    prime: list[str] | None = None  # run first, untimed, in the same folders (W3)


def _clean_env() -> dict[str, str]:
    """This process's environment less anything that would steer a tool or a virtualenv."""
    drop = ("PREFECT_", "METAFLOW_", "USINA_", "MLFLOW_", "PYTHON", "VIRTUAL_ENV", "CONDA")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def invocation(
    tool: str, workload: str, scratch: Path, state: Path, concurrency: int
) -> Invocation | None:
    """How to run one workload: ``scratch`` is the run's own folder, ``state`` holds the homes.
    None: the tool has no such workload (W3 without a cache)."""
    cached = workload == "w3"
    if cached and tool not in CACHED_RERUN:
        return None
    files = "usina" if tool in VARIANTS else tool
    script = WORKLOADS_DIR / f"{files}_{'w1' if cached else workload}.py"
    env = _clean_env()
    env["BENCH_CONCURRENCY"] = str(concurrency)
    if tool == "usina-noprof":
        env["USINA_PROFILE_INTERVAL"] = "0"
    if tool in ("usina", *VARIANTS):
        env["USINA_HOME"] = str(state / "usina-home")
        usina = REPO / ".venv" / "bin" / "usina"
        argv = [str(usina), "run", str(script), "--max-parallel", str(concurrency)]
        if cached:
            return Invocation(argv, env, scratch, prime=argv)
        return Invocation([*argv, "--no-cache"], env, scratch)
    if tool == "kedro":
        python = VENVS / "kedro" / "bin" / "python"
        return Invocation([str(python), str(script)], env, scratch)
    if tool == "prefect":
        # Prefect's defaults: no PREFECT_API_URL, so each run starts a temporary API server.
        # Only its home moves, so runs do not pile state up in one database.
        env["PREFECT_HOME"] = str(state / "prefect-home")
        # The one setting changed: how long the client waits for that server to come up (20 s by
        # default), which a busy 2-core machine can exceed, failing the run instead of timing it.
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
        python = VENVS / "prefect" / "bin" / "python"
        return Invocation([str(python), str(script)], env, scratch)
    if tool == "metaflow":
        env["METAFLOW_HOME"] = str(state / "metaflow-home")
        env["METAFLOW_DEFAULT_DATASTORE"] = "local"
        env["METAFLOW_DEFAULT_METADATA"] = "local"
        env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(state / "metaflow-data")
        env["USERNAME"] = "bench"
        python = VENVS / "metaflow" / "bin" / "python"
        argv = [str(python), str(script), "run", "--max-workers", str(concurrency)]
        if cached:
            resume = [str(python), str(script), "resume", "end", "--max-workers", str(concurrency)]
            return Invocation(resume, env, scratch, prime=argv)
        return Invocation(argv, env, scratch)
    raise ValueError(tool)


# --------------------------------------------------------------------------------------------
# Measuring one run


@dataclass
class Sample:
    wall_s: float
    peak_rss: int
    ok: bool
    detail: str = ""


def _procfs_children(pid: int) -> list[int] | None:
    """Direct children from /proc/PID/task/TID/children; None where the kernel lacks it."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None  # no such file for a live thread: CONFIG_PROC_CHILDREN is off
        except OSError:
            continue
    return found


class TreeSampler(threading.Thread):
    """Sums RSS over a process and all its descendants every ``interval`` seconds.

    The tree is walked through /proc/PID/task/TID/children where Linux has it, which costs a
    few file reads per process in the tree (~0.1 ms of CPU a sample); elsewhere psutil's
    ``children(recursive=True)``, which reads every process on the machine (~2 ms a sample on a
    busy 2-core box, so ~20% of a core at 10 ms). RSS of each process comes from psutil.
    """

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.procfs = _procfs_children(pid) is not None
        self._procs: dict[int, psutil.Process] = {pid: self.root}
        self._done = threading.Event()

    def _tree(self) -> list[int]:
        if self.procfs:
            pids, i = [self.pid], 0
            while i < len(pids):
                kids = _procfs_children(pids[i])
                pids.extend(kids or ())
                i += 1
            return pids
        try:
            return [self.pid, *(p.pid for p in self.root.children(recursive=True))]
        except psutil.Error:
            return []

    def sample(self) -> None:
        total = 0
        for pid in self._tree():
            try:
                proc = self._procs.get(pid)
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        self.samples += 1
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _reap_group(pgid: int) -> bool:
    """End what the run left behind in its own process group; True if anything was left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return True


def measure(inv: Invocation, timeout: float, log_path: Path) -> Sample:
    if inv.prime is not None:
        with open(log_path.with_suffix(".prime.log"), "wb") as out:
            primed = subprocess.run(
                inv.prime, cwd=inv.cwd, env=inv.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, timeout=timeout, check=False,
            )  # fmt: skip
        if primed.returncode != 0:
            tail = log_path.with_suffix(".prime.log").read_text(errors="replace")
            return Sample(0.0, 0, False, "the untimed first run failed:\n" + tail[-2000:])
    with open(log_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            inv.argv,
            cwd=inv.cwd,
            env=inv.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so leftovers can be ended
        )
        sampler = TreeSampler(proc.pid, SAMPLE_INTERVAL_S)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        wall = time.perf_counter() - started
        sampler.stop()
    leftovers = _reap_group(proc.pid)
    if rc is None:
        proc.wait()
        return Sample(wall, sampler.peak, False, f"timed out after {timeout:.0f}s")
    if rc != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        return Sample(wall, sampler.peak, False, f"exit {rc}: " + "\n".join(tail))
    return Sample(wall, sampler.peak, True, "left processes behind" if leftovers else "")


# --------------------------------------------------------------------------------------------
# The benchmark


NOT_SUPPORTED = "no such workload for this tool"


@dataclass
class Cell:
    """One tool on one workload: the timed runs (warm-up excluded)."""

    runs: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def wall_s(self) -> float | None:
        return statistics.median(r.wall_s for r in self.runs) if self.ok else None

    @property
    def peak_rss(self) -> int | None:
        return int(statistics.median(r.peak_rss for r in self.runs)) if self.ok else None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.runs)


def run_once(
    tool: str,
    workload: str,
    label: str,
    *,
    concurrency: int,
    timeout: float,
    keep: bool,
    state: Path | None,
) -> Sample | None:
    """One run in a new scratch folder; ``state`` is a shared state folder, or None for fresh.
    None: the tool has no such workload."""
    scratch = Path(tempfile.mkdtemp(prefix=f"usina-bench-{tool}-{workload}-"))
    try:
        inv = invocation(tool, workload, scratch, state or scratch, concurrency)
        if inv is None:
            return None
        sample = measure(inv, timeout, scratch / "output.log")
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    note = f" ({sample.detail})" if sample.ok and sample.detail else ""
    log(
        f"  {tool:8} {workload:3} {label:9} {sample.wall_s:7.2f} s  "
        f"{sample.peak_rss / MIB:7.0f} MiB  load {os.getloadavg()[0]:.1f}{note}"
        + ("" if sample.ok else "  FAILED")
    )
    if not sample.ok:
        log("    " + sample.detail.replace("\n", "\n    "))
    return sample


def run_all(
    tools: list[str],
    workloads: list[str],
    *,
    reps: int,
    warmup: int,
    concurrency: int,
    timeout: float,
    keep: bool,
    reuse_state: bool,
) -> dict[str, dict[str, Cell]]:
    """Per workload: the warm-ups, then the timed runs, the tools taking turns in each round.

    Taking turns spreads any change in the machine's load over all tools alike, rather than
    letting one tool's whole series fall into a busy spell.
    """
    results = {tool: {w: Cell() for w in WORKLOADS} for tool in tools}
    states = {
        tool: Path(tempfile.mkdtemp(prefix=f"usina-bench-{tool}-state-")) if reuse_state else None
        for tool in tools
    }
    try:
        for workload in workloads:
            for i in range(warmup + reps):
                label = "warm-up" if i < warmup else f"run {i - warmup + 1}/{reps}"
                for tool in tools:
                    cell = results[tool][workload]
                    if cell.error is not None:
                        continue
                    sample = run_once(
                        tool,
                        workload,
                        label,
                        concurrency=concurrency,
                        timeout=timeout,
                        keep=keep,
                        state=states[tool],
                    )
                    if sample is None:
                        cell.error = NOT_SUPPORTED
                    elif not sample.ok:
                        cell.error = sample.detail
                    elif i >= warmup:
                        cell.runs.append(sample)
    finally:
        for state in states.values():
            if state is not None and not keep:
                shutil.rmtree(state, ignore_errors=True)
    return results


def per_step_ms(tool: str, cells: dict[str, Cell]) -> float | None:
    w1, one = cells["w1"].wall_s, cells["one"].wall_s
    if w1 is None or one is None:
        return None
    return (w1 - one) / (CHAIN_STEPS - ONE_STEPS[tool]) * 1000


def summarize(results: dict[str, dict[str, Cell]]) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    for tool, cells in results.items():
        tools[tool] = {
            "workloads": {
                w: {
                    "wall_s": c.wall_s,
                    "peak_rss_mib": None if c.peak_rss is None else c.peak_rss / MIB,
                    "runs_wall_s": [r.wall_s for r in c.runs],
                    "runs_peak_rss_mib": [r.peak_rss / MIB for r in c.runs],
                    "error": c.error,
                }
                for w, c in cells.items()
            },
            "per_step_ms": per_step_ms(tool, cells),
            "one_step_run_steps": ONE_STEPS[tool],
        }
    ratios: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    if "usina" in tools:
        u = tools["usina"]
        for peer in ("prefect", "metaflow", "kedro"):
            if peer not in tools:
                continue
            p = tools[peer]
            ratios[peer] = {}
            for w in WORKLOADS:
                ratios[peer][f"{w}_wall"] = _ratio(
                    u["workloads"][w]["wall_s"], p["workloads"][w]["wall_s"]
                )
                ratios[peer][f"{w}_peak_rss"] = _ratio(
                    u["workloads"][w]["peak_rss_mib"], p["workloads"][w]["peak_rss_mib"]
                )
            ratios[peer]["per_step"] = _ratio(u["per_step_ms"], p["per_step_ms"])
            limit = WALL_TARGETS.get(peer)
            for w in ("w1", "w2") if limit is not None else ():
                r = ratios[peer][f"{w}_wall"]
                targets.append(
                    {
                        "target": f"usina {w.upper()} wall <= {_frac(limit)} of {peer}'s",
                        "value": r,
                        "holds": None if r is None else r <= limit,
                    }
                )
        ms = u["per_step_ms"]
        targets.append(
            {
                "target": f"usina marginal overhead <= {PER_STEP_TARGET_MS:g} ms/step",
                "value": ms,
                "holds": None if ms is None else ms <= PER_STEP_TARGET_MS,
            }
        )
        targets += _issue22_targets(u, ratios)
        if "prefect" in tools:
            for w in ("w1", "w2"):
                r = ratios["prefect"][f"{w}_peak_rss"]
                targets.append(
                    {
                        "target": f"usina {w.upper()} peak RSS <= prefect's",
                        "value": r,
                        "holds": None if r is None else r <= 1.0,
                    }
                )
    report: dict[str, Any] = {"tools": tools, "ratios": ratios, "targets": targets}
    if "usina" in tools and "usina-noprof" in tools:
        on, off = tools["usina"], tools["usina-noprof"]
        report["profiling"] = {
            **{
                f"{w}_wall": _ratio(on["workloads"][w]["wall_s"], off["workloads"][w]["wall_s"])
                for w in WORKLOADS
            },
            "per_step_ms_added": None
            if on["per_step_ms"] is None or off["per_step_ms"] is None
            else on["per_step_ms"] - off["per_step_ms"],
        }
    return report


def _issue22_targets(u: dict[str, Any], ratios: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 22's: process isolation at in-process speed."""
    w = u["workloads"]
    found: list[dict[str, Any]] = []

    def target(text: str, value: float | None, limit: float) -> None:
        found.append(
            {"target": text, "value": value, "holds": None if value is None else value <= limit}
        )

    target(f"usina W0 wall <= {W0_TARGET_S:g} s", w["one"]["wall_s"], W0_TARGET_S)
    if "metaflow" in ratios:
        target(
            f"usina W0 wall <= {W0_METAFLOW_RATIO:g} of metaflow's",
            ratios["metaflow"]["one_wall"],
            W0_METAFLOW_RATIO,
        )
    if "kedro" in ratios:
        for name in ("w1", "w2"):
            target(
                f"usina {name.upper()} wall <= kedro's (in-process)",
                ratios["kedro"][f"{name}_wall"],
                1.0,
            )
    target(f"usina W3 (50 cached steps) wall <= {W3_TARGET_S:g} s", w["w3"]["wall_s"], W3_TARGET_S)
    return found


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _frac(x: float) -> str:
    return {0.25: "1/4", 0.5: "1/2"}.get(x, f"{x:g}")


def _fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or "n/a" padded to the width the spec asks for."""
    if value is None:
        width = spec.split(".")[0]
        return format("n/a", f">{width}") if width else "n/a"
    return format(value, spec)


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"Orchestration benchmark on {meta['machine']}",
        f"{meta['reps']} timed run(s) per cell after {meta['warmup']} warm-up, median shown, "
        "tools taking turns; "
        f"every run a fresh process tree; concurrency {meta['concurrency']} "
        "(usina --max-parallel, Prefect ThreadPoolTaskRunner max_workers, "
        "Metaflow --max-workers, Kedro ThreadRunner max_workers in W2; Kedro's W0/W1 are "
        "sequential)",
        f"state folders: {meta['state']} ("
        + (
            "one per tool, reused by every run"
            if meta["state"] == "reused"
            else "a new USINA_HOME / PREFECT_HOME / METAFLOW_HOME for every run"
        )
        + f"); 1-minute load average {meta['load_average_1m']['before']:.2f} before, "
        f"{meta['load_average_1m']['after']:.2f} after",
        "",
    ]
    head = (
        f"{'tool':9} {'W0 s':>7} {'W1 s':>7} {'W2 s':>7} {'W3 s':>7} {'ms/step':>8} "
        f"{'RSS W0':>8} {'RSS W1':>8} {'RSS W2':>8}  version"
    )
    lines += [head, "-" * len(head)]
    for tool, data in report["tools"].items():
        w = data["workloads"]
        lines.append(
            f"{tool:9} {_fmt(w['one']['wall_s'], '7.2f')} {_fmt(w['w1']['wall_s'], '7.2f')} "
            f"{_fmt(w['w2']['wall_s'], '7.2f')} {_fmt(w['w3']['wall_s'], '7.2f')} "
            f"{_fmt(data['per_step_ms'], '8.1f')} {_fmt(w['one']['peak_rss_mib'], '8.0f')} "
            f"{_fmt(w['w1']['peak_rss_mib'], '8.0f')} {_fmt(w['w2']['peak_rss_mib'], '8.0f')}  "
            f"{meta['versions'].get(tool, '')}"
        )
    lines.append("")
    lines.append(
        "s: wall seconds; W0: the smallest run ('one'); W3: W1 again with its results kept "
        "(usina's cache, Metaflow's resume; n/a: the tool keeps none); ms/step: (W1 - W0) / "
        "(50 - steps in W0) (Metaflow's smallest run has 2 steps, so /48); RSS: peak MiB, summed "
        "over the run's process tree, sampled every 10 ms"
    )
    lines.append("timed runs, s (the spread shows how steady the machine was):")
    for tool, data in report["tools"].items():
        parts = []
        for wname, cell in data["workloads"].items():
            if cell["runs_wall_s"]:
                parts.append(f"{wname} " + " ".join(f"{x:.2f}" for x in cell["runs_wall_s"]))
        lines.append(f"  {tool:9} " + ("; ".join(parts) or "none"))
    for tool, data in report["tools"].items():
        for wname, cell in data["workloads"].items():
            if cell["error"] and cell["error"] != NOT_SUPPORTED:
                first = cell["error"].splitlines()[0] if cell["error"] else ""
                lines.append(f"{tool} {wname} failed: {first}")
    if report["ratios"]:
        lines += ["", "usina / peer (below 1 means usina is faster or smaller):"]
        for peer, r in report["ratios"].items():
            lines.append(
                f"  vs {peer:9} W0 {_fmt(r['one_wall'], '.3f')}  W1 {_fmt(r['w1_wall'], '.3f')}  "
                f"W2 {_fmt(r['w2_wall'], '.3f')}  W3 {_fmt(r['w3_wall'], '.3f')}  "
                f"ms/step {_fmt(r['per_step'], '.3f')}  "
                f"RSS W1 {_fmt(r['w1_peak_rss'], '.2f')}  RSS W2 {_fmt(r['w2_peak_rss'], '.2f')}"
            )
    if "profiling" in report:
        p = report["profiling"]
        lines += [
            "",
            "per-attempt profiling (usina, sampling on) / usina-noprof (USINA_PROFILE_INTERVAL=0):",
            f"  W0 {_fmt(p['one_wall'], '.3f')}  W1 {_fmt(p['w1_wall'], '.3f')}  "
            f"W2 {_fmt(p['w2_wall'], '.3f')}  W3 {_fmt(p['w3_wall'], '.3f')}  "
            f"ms/step added {_fmt(p['per_step_ms_added'], '.1f')}",
        ]
    if report["targets"]:
        lines += ["", "targets:"]
        for t in report["targets"]:
            verdict = {True: "HOLDS", False: "MISSED", None: "n/a"}[t["holds"]]
            lines.append(f"  {verdict:7} {t['target']} (measured {_fmt(t['value'], '.3f')})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run per cell, no warm-up")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per cell (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs per cell (default 1)")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel steps (default 4)")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}"
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma-separated subset of w1,w2,one,w3"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--python", help="interpreter for the peers' venvs (default python3)")
    parser.add_argument("--keep", action="store_true", help="keep each run's temporary folder")
    parser.add_argument(
        "--reuse-state",
        action="store_true",
        help="one state folder per tool for the whole invocation (databases created by the "
        "warm-up and reused), instead of a fresh one per run",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.warmup = 1, 0
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for t in tools:
        if t not in TOOLS + VARIANTS:
            parser.error(f"unknown tool {t!r}; choose from {', '.join(TOOLS + VARIANTS)}")
    for w in workloads:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")

    versions: dict[str, str] = {}
    for tool in tools:
        if tool in ("usina", *VARIANTS):
            usina = REPO / ".venv" / "bin" / "usina"
            if not usina.exists():
                log(f"[setup] {usina} is missing: run 'make install' first")
                return 2
            versions[tool] = tool_version(tool, REPO / ".venv" / "bin" / "python")
        else:
            venv = ensure_peer_venv(tool, _python3(args.python))
            versions[tool] = tool_version(tool, venv / "bin" / "python")

    load_before = os.getloadavg()
    for tool in tools:
        log(f"[{tool}] {versions[tool]}")
    results = run_all(
        tools, workloads, reps=args.reps, warmup=args.warmup, concurrency=args.concurrency,
        timeout=args.timeout, keep=args.keep, reuse_state=args.reuse_state,
    )  # fmt: skip
    load_after = os.getloadavg()

    report = summarize(results)
    report["meta"] = {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 1024**3:.0f} GiB, {platform.system()} "
        f"{platform.release()}",
        "reps": args.reps,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "state": "reused" if args.reuse_state else "fresh",
        "load_average_1m": {"before": load_before[0], "after": load_after[0]},
        "versions": versions,
        "rss": "peak of the sum of RSS over the run's process tree, sampled every 10 ms "
        "with psutil; median over the timed runs",
        "wall": "median over the timed runs of process start to exit, measured by the harness",
    }
    if "usina" in tools:
        # The cost of hashing a step's project code (cache keys), on a ~200-module project
        # against a small one: it must follow what a step reaches, not the project's size.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from code_hashing import measure_all

        report["code_hashing"] = measure_all()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
        if "code_hashing" in report:
            print("\ncache keys, project code hashing (benchmarks/code_hashing.py):")
            print(json.dumps(report["code_hashing"], indent=2))
    failed = any(
        c.error and c.error != NOT_SUPPORTED for cells in results.values() for c in cells.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
