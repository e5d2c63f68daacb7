"""The runtime's sampler: real steps leave a profile whose numbers match what they did."""

from __future__ import annotations

import json

import pytest

from tests.integration.cli_helpers import Usina
from tests.profile.support import attempts_of, profile_of

MIB = 2**20


@pytest.fixture
def usina(tmp_path):
    u = Usina(tmp_path)
    u.env["USINA_PROFILE_INTERVAL"] = "0.05"
    return u


ALLOCATES = """
import time
from usina import Resources, pipeline, step

@step(resources=Resources(memory="1Gi", cpu=1))
def hold() -> int:
    time.sleep(0.4)                 # the baseline, sampled before the allocation
    block = b"\\x01" * (256 * 2**20)  # 256 MiB, every page written
    time.sleep(0.8)
    return len(block)

@pipeline
def p():
    hold()
"""


def test_a_step_that_allocates_256mi_has_a_recorded_peak_within_10_percent(usina):
    usina.write("p.py", ALLOCATES)
    res = usina("run", "p.py")
    assert res.code == 0, res.out + res.err
    run = usina.last_run()
    [attempt] = attempts_of(usina, run["id"])
    found = profile_of(usina, attempt.id)
    profile = found.whole
    assert profile is not None
    assert profile.final
    assert found.ranks == ()
    memory = profile.series["memory"]
    baseline = memory[0]
    peak = profile.summary.memory.peak
    grown = peak - baseline
    assert abs(grown - 256 * MIB) <= 0.10 * 256 * MIB, (baseline / MIB, peak / MIB)
    assert profile.requests["memory"] == 2**30
    assert profile.limits["memory"] == 2**30
    assert profile.requests["cpu"] == 1.0
    assert profile.summary.samples >= 10  # 1.2 s at 0.05 s
    assert profile.summary.duration == pytest.approx(1.2, abs=0.6)


CPU_BOUND = """
import time
from usina import pipeline, step

@step
def spin() -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    x = 0
    while time.perf_counter() - wall < 1.5:
        x += 1
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}

@pipeline
def p():
    spin()
"""


def test_a_cpu_bound_step_shows_one_core(usina):
    usina.write("p.py", CPU_BOUND)
    res = usina("run", "p.py")
    assert res.code == 0, res.out + res.err
    run = usina.last_run()
    [attempt] = attempts_of(usina, run["id"])
    profile = profile_of(usina, attempt.id).whole
    assert profile is not None
    spent = json.loads(usina("runs", "show", run["id"], "-o", "json").out)
    assert spent["state"] == "succeeded"
    summary = profile.summary
    assert summary.cpu is not None
    # one busy thread: never more than a core; as much of one as this (shared) machine gave it,
    # which the step measured itself with process_time / wall time
    assert summary.cpu.peak <= 1.15
    assert summary.cpu_seconds >= 1.0 * 0.5  # at least half a core for 1.5 s, even when busy
    busy = [c for t, c in zip(profile.t, profile.series["cpu"], strict=True) if 0.2 < t < 1.4]
    assert busy
    assert sum(busy) / len(busy) == pytest.approx(summary.cpu_seconds / summary.duration, abs=0.3)
    assert max(busy) >= 0.6


GANG = """
import time
import usina
from usina import Resources, Torchrun, pipeline, step

@step(distributed=Torchrun(nodes=1, procs_per_node=2), resources=Resources(memory="1Gi"))
def fit() -> int:
    block = b"\\x02" * ((1 + usina.current().rank) * 32 * 2**20)
    time.sleep(0.6)
    return len(block)

@pipeline
def p():
    fit()
"""


def test_a_gang_has_one_series_per_rank(usina):
    usina.write("p.py", GANG)
    res = usina("run", "p.py")
    assert res.code == 0, res.out + res.err
    run = usina.last_run()
    [attempt] = attempts_of(usina, run["id"])
    found = profile_of(usina, attempt.id)
    assert found.whole is None  # the launcher leaves it to its ranks
    assert [p.rank for p in found.ranks] == [0, 1]
    assert len({p.pid for p in found.ranks}) == 2
    for p in found.ranks:
        assert p.final
        assert p.series["memory"]
        assert p.requests["memory"] == 2**30 / 2  # each rank's share of its node's request
        assert p.requests["share_of"] == 2
    grown = [p.summary.memory.peak - p.series["memory"][0] for p in found.ranks]
    assert grown[1] > grown[0] + 20 * MIB  # rank 1 allocated 64 MiB, rank 0 32 MiB
    peak = found.memory_peak()
    assert peak is not None
    assert peak == pytest.approx(2 * found.ranks[1].summary.memory.peak)


def test_profiling_off_writes_nothing(usina):
    usina.env["USINA_PROFILE_INTERVAL"] = "0"
    usina.write("p.py", CPU_BOUND.replace("1.5", "0.1"))
    assert usina("run", "p.py").code == 0
    [attempt] = attempts_of(usina, usina.last_run()["id"])
    assert not profile_of(usina, attempt.id).found
