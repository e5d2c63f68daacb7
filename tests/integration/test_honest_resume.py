"""``usina runs resume`` never keeps a stale step: a step whose code changed since it succeeded
runs again with what depends on it; ``--rerun`` forces a step; a succeeded run with nothing
changed is left alone; a run started with ``--no-cache`` keeps ignoring the cache."""

from __future__ import annotations

import pytest

from tests.integration.cli_helpers import Usina

PIPE = """
import os

from usina import pipeline, step

import helpers

@step
def a(x: int) -> int:
    return x + 1

@step
def b(v: int) -> int:
    return helpers.bump(v)

@step
def c(v: int) -> int:
    if os.path.exists("fail.flag"):
        raise RuntimeError("asked to fail")
    return v * 10

@step
def d(v: int) -> int:
    return v - 1

@step
def other(x: int) -> int:
    return x * 2

@pipeline
def p(x: int = 1):
    d(c(b(a(x))))
    other(x)
"""


@pytest.fixture
def usina(tmp_path):
    u = Usina(tmp_path)
    u.write("p.py", PIPE)
    u.write("helpers.py", "def bump(v):\n    return v + 100\n")
    return u


def attempts(usina: Usina, run_id: str) -> dict[str, int]:
    shown = usina("runs", "show", run_id, "-o", "json").json()
    return {s["node"]: s["attempts"] for s in shown["steps"]}


def first_run(usina: Usina, *extra: str) -> dict[str, object]:
    res = usina("run", "p.py", "-o", "json", *extra)
    return res.json()


def test_resume_after_a_code_change_reruns_it_and_its_dependents_only(usina):
    run = first_run(usina)
    assert run["state"] == "succeeded"
    usina.write("helpers.py", "def bump(v):\n    return v + 200\n")
    res = usina("runs", "resume", run["id"])
    assert res.code == 0, res.out + res.err
    assert "b: runs again (code of helpers.py:bump changed)" in res.out
    assert attempts(usina, run["id"]) == {"a": 1, "b": 2, "c": 2, "d": 2, "other": 1}
    shown = usina("runs", "show", run["id"], "-o", "json").json()
    values = {s["node"]: s["why"] for s in shown["steps"]}
    assert values["b"] == "resume: code of helpers.py:bump changed"
    assert values["c"] == "resume: upstream step 'b' runs again"
    assert values["a"] == "first run"  # from the first run; not run again


def test_rerun_forces_a_step_and_its_dependents(usina):
    run = first_run(usina)
    res = usina("runs", "resume", run["id"], "--rerun", "c")
    assert res.code == 0, res.out + res.err
    assert attempts(usina, run["id"]) == {"a": 1, "b": 1, "c": 2, "d": 2, "other": 1}
    bad = usina("runs", "resume", run["id"], "--rerun", "nope")
    assert bad.code == 2
    assert "has no step 'nope'" in bad.err


def test_resume_of_a_succeeded_run_with_nothing_changed_is_a_no_op(usina):
    run = first_run(usina)
    before = usina("runs", "show", run["id"], "-o", "json").json()
    res = usina("runs", "resume", run["id"])
    assert res.code == 0, res.out + res.err
    assert "nothing to run" in res.out
    after = usina("runs", "show", run["id"], "-o", "json").json()
    assert after["finished_at"] == before["finished_at"]
    assert after["started_at"] == before["started_at"]
    assert attempts(usina, run["id"]) == {"a": 1, "b": 1, "c": 1, "d": 1, "other": 1}


def test_a_resumed_no_cache_run_keeps_ignoring_the_cache(usina, tmp_path):
    assert first_run(usina)["state"] == "succeeded"  # fills the cache
    (tmp_path / "fail.flag").write_text("")
    failed = first_run(usina, "--no-cache")
    assert failed["state"] == "failed"
    (tmp_path / "fail.flag").unlink()
    res = usina("runs", "resume", failed["id"], "-o", "json")
    assert res.code == 0, res.out + res.err
    steps = {s["node"]: s for s in res.json()["steps"]}
    assert not steps["d"]["cached"]
    assert steps["d"]["attempts"] == 1
    shown = usina("runs", "show", failed["id"], "-o", "json").json()
    assert {s["node"]: s["why"] for s in shown["steps"]}["d"] == "resume: skipped"
