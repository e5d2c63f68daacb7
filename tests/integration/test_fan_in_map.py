"""Fan-in and map: a step takes a list (or dict) of 20 upstream outputs; ``step.map`` fans out
over a list produced by an upstream step (width decided at run time, bounded), the results
collected downstream; a ``kill -9`` of ``usina run`` among the branches, then ``runs resume``,
finishes without re-running the branches that had finished."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import usina
from tests.integration.cli_helpers import Usina

FAN_IN = """
from usina import pipeline, step

@step
def part(i: int) -> int:
    return i * i

@step
def total(parts: list) -> int:
    return sum(parts)

@step
def named(parts: dict) -> dict:
    return {k: v + 1 for k, v in parts.items()}

@pipeline
def p(n: int = 20):
    parts = [part(i, name=f"part{i}") for i in range(n)]
    total(parts)
    named({"first": parts[0], "last": parts[-1]})
"""

MAP = """
import os, time
from usina import pipeline, step

HERE = os.path.dirname(os.path.abspath(__file__))

@step
def make(n: int) -> list:
    return list(range(n))

@step
def square(x: int, pause: float) -> int:
    with open(os.path.join(HERE, "journal"), "a") as fh:
        fh.write(f"{x}\\n")
    if pause and x >= 2:
        time.sleep(pause)
    return x * x

@step
def collect(squares: list) -> list:
    return squares

@pipeline
def p(n: int = 5, pause: float = 0.0):
    collect(square.map(make(n), pause=pause, max_width=8))
"""


def client(u: Usina) -> usina.Client:
    return usina.Client(str(u.home / ".usina"))


def test_fan_in_of_20_outputs_as_a_list_and_a_dict(tmp_path):
    u = Usina(tmp_path)
    u.write("p.py", FAN_IN)
    res = u("run", "p.py", "-o", "json")
    assert res.code == 0, res.out + res.err
    run = res.json()
    nodes = [s["node"] for s in run["steps"]]
    assert {f"part{i}" for i in range(20)} <= set(nodes)
    with client(u) as c:
        assert c.load(run["id"], "total") == sum(i * i for i in range(20))
        assert c.load(run["id"], "named") == {"first": 1, "last": 362}
    again = u("run", "p.py", "-o", "json").json()
    assert all(s["cached"] for s in again["steps"])


def test_a_map_over_an_upstream_list_decides_its_width_at_run_time(tmp_path):
    u = Usina(tmp_path)
    u.write("p.py", MAP)
    res = u("run", "p.py", "-p", "n=5", "-o", "json")
    assert res.code == 0, res.out + res.err
    run = res.json()
    with client(u) as c:
        assert c.load(run["id"], "collect") == [0, 1, 4, 9, 16]
    ran = {s["node"] for s in run["steps"] if s["attempts"]}
    assert ran == {"make", "collect", *(f"square[{i}]" for i in range(5))}
    assert sorted((tmp_path / "journal").read_text().split()) == ["0", "1", "2", "3", "4"]

    # a longer list: only the new items run, the others come from the cache
    (tmp_path / "journal").unlink()
    longer = u("run", "p.py", "-p", "n=7", "-o", "json")
    assert longer.code == 0, longer.err
    assert sorted((tmp_path / "journal").read_text().split()) == ["5", "6"]

    too_long = u("run", "p.py", "-p", "n=9", "-o", "json")
    assert too_long.code == 1
    errors = " ".join(s["error"] or "" for s in too_long.json()["steps"])
    assert "has 9 items, more than max_width=8" in errors


def test_kill_9_among_the_branches_then_resume_keeps_the_finished_ones(tmp_path):
    u = Usina(tmp_path)
    u.write("p.py", MAP)
    proc = u.popen("run", "p.py", "-p", "n=6", "-p", "pause=3")
    journal = tmp_path / "journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = journal.read_text().split() if journal.exists() else []
        if {"0", "1"} <= set(started) and len(started) >= 3:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the branches did not start: " + (tmp_path / "popen.log").read_text())
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    run_id = u.last_run()["id"]
    before = {s["node"]: s for s in u("runs", "show", run_id, "-o", "json").json()["steps"]}
    done_before = {n for n, s in before.items() if s["state"] == "succeeded"}
    assert {"make", "square[0]", "square[1]"} <= done_before
    assert "collect" not in done_before

    res = u("runs", "resume", run_id, "-o", "json", timeout=300)
    assert res.code == 0, res.out + res.err
    after = {s["node"]: s for s in res.json()["steps"]}
    for node in done_before:
        assert after[node]["attempts"] == before[node]["attempts"], node
    with client(u) as c:
        assert c.load(run_id, "collect") == [0, 1, 4, 9, 16, 25]
    starts = json.dumps(journal.read_text().split())
    assert json.loads(starts).count("0") == 1
    assert json.loads(starts).count("1") == 1
