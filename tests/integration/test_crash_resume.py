"""Crash safety: ``kill -9`` of ``usina run`` at random moments, then ``usina runs resume``.

Every run completes, every step has exactly one successful attempt, no two attempts of a step
ever overlapped in time, and every artifact is present with the right hash.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.integration.cli_helpers import Usina
from usina.engine.records import AttemptState, RunState
from usina.stores.sql import SqlMetadataStore

STEPS = 20

PIPE = """
import os, time, json
from usina import pipeline, step

JOURNAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "journal")

def _mark(name, what):
    with open(os.path.join(JOURNAL, name), "a") as fh:
        fh.write(json.dumps({"what": what, "pid": os.getpid(), "t": time.time()}) + "\\n")
        fh.flush()
        os.fsync(fh.fileno())

@step
def s(prev: str, i: int) -> str:
    _mark(f"s{i}", "start")
    time.sleep(0.1 + (i % 3) * 0.05)
    out = hashlib_like(prev, i)
    _mark(f"s{i}", "end")
    return out

def hashlib_like(prev, i):
    import hashlib
    return hashlib.sha256(f"{prev}|{i}".encode()).hexdigest() * 50

@pipeline
def chain(n: int = 20, salt: str = ""):
    # two interleaved lanes, so some steps run in parallel; salt makes each round's run new
    a = s("a" + salt, 0)
    b = s("b" + salt, 1)
    for i in range(2, n, 2):
        a = s(a, i)
        b = s(b, i + 1)
"""


def _attempts_overlap(journal: Path) -> list[str]:
    problems = []
    for file in journal.iterdir():
        events = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        open_by_pid: dict[int, float] = {}
        intervals = []
        for e in events:
            if e["what"] == "start":
                open_by_pid[e["pid"]] = e["t"]
            else:
                intervals.append((open_by_pid.pop(e["pid"], e["t"]), e["t"]))
        # a started attempt that never ended was killed; it may overlap nothing that ended later
        for _pid, t in open_by_pid.items():
            intervals.append((t, t))
        intervals.sort()
        for (s1, e1), (s2, _e2) in itertools.pairwise(intervals):
            if s2 < e1:
                problems.append(f"{file.name}: attempts overlap ({s1:.3f}-{e1:.3f} and {s2:.3f})")
    return problems


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path):
    rng = random.Random(20261127)
    usina = Usina(tmp_path)
    usina.write("chain.py", PIPE)
    (tmp_path / "journal").mkdir()
    kills = 0
    for round_ in range(10):
        for f in (tmp_path / "journal").iterdir():
            f.unlink()
        log = tmp_path / "popen.log"
        log.write_text("")
        proc = usina.popen("run", "chain.py", "-p", f"salt={round_}", "--max-parallel", "3")
        deadline = time.monotonic() + 60
        while "of pipeline chain" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)  # the run is submitted: from here on, any moment is fair
        time.sleep(rng.uniform(0.0, 2.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its zygote, not the steps
            kills += 1
        proc.wait(timeout=30)
        store = SqlMetadataStore(f"sqlite:///{tmp_path}/.usina/usina.db")
        try:
            [run] = store.list_runs(limit=1, before=None)
            assert run.params["salt"] == str(round_)
            if run.state is not RunState.SUCCEEDED:
                res = usina("runs", "resume", run.id, "--output", "json", timeout=180)
                assert res.code == 0, f"round {round_}: {res.out}\n{res.err}"
            run = store.get_run(run.id)
            steps = store.get_steps(run.id)
            attempts = store.get_attempts(run.id)
        finally:
            store.close()
        assert run.state is RunState.SUCCEEDED, f"round {round_}"
        assert len(steps) == STEPS
        for step_ in steps:
            mine = [a for a in attempts if a.node == step_.node]
            ok = [a for a in mine if a.state is AttemptState.SUCCEEDED]
            assert len(ok) == 1, f"round {round_}: {step_.node} has {len(ok)} successful attempts"
            assert not [a for a in mine if a.state is AttemptState.RUNNING]
            for out in step_.outputs:
                hexd = out.digest.split(":", 1)[1]
                blob = tmp_path / ".usina" / "artifacts" / "sha256" / hexd[:2] / hexd
                assert hashlib.sha256(blob.read_bytes()).hexdigest() == hexd
        assert not _attempts_overlap(tmp_path / "journal"), f"round {round_}"
    assert kills >= 8  # the seeded moments fall inside the run nearly every time
