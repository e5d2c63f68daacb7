"""The cache with real processes: unchanged -> nothing runs; a change re-runs exactly what it
affects; a cached result whose artifact is gone is recomputed."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.cli_helpers import Usina

PIPE = """
from usina import pipeline, step

@step(cache=False)
def load(path: str) -> str:
    with open(path) as fh:
        return fh.read()

@step
def double(text: str) -> str:
    return text * 2

@step
def count(n: int) -> int:
    return n + {bump}

@step
def join(a: str, b: int) -> str:
    return f"{{a}}:{{b}}"

@pipeline
def p(n: int = 3):
    join(double(load("data.txt")), count(n))
"""


@pytest.fixture
def usina(tmp_path):
    u = Usina(tmp_path)
    (tmp_path / "data.txt").write_text("abc")
    u.write("p.py", PIPE.format(bump=1))
    return u


def executed(usina: Usina, res) -> set[str]:
    assert res.code == 0, res.out + res.err
    run = res.json()
    return {s["node"] for s in run["steps"] if s["state"] == "succeeded" and not s["cached"]}


def test_unchanged_rerun_executes_no_cacheable_step(usina):
    assert executed(usina, usina("run", "p.py", "-o", "json")) == {
        "load",
        "double",
        "count",
        "join",
    }
    assert executed(usina, usina("run", "p.py", "-o", "json")) == {"load"}  # cache=False only
    text = usina("run", "p.py")
    assert "from cache" in text.out
    assert "cached: double, count, join" in text.out


def test_code_change_reruns_that_step_and_downstream(usina):
    usina("run", "p.py", "-o", "json")
    usina.write("p.py", PIPE.format(bump=2))
    assert executed(usina, usina("run", "p.py", "-o", "json")) == {"load", "count", "join"}


def test_param_change_reruns_that_step_and_downstream(usina):
    usina("run", "p.py", "-o", "json")
    assert executed(usina, usina("run", "p.py", "-p", "n=4", "-o", "json")) == {
        "load",
        "count",
        "join",
    }


def test_input_content_change_reruns_its_consumers(usina, tmp_path):
    usina("run", "p.py", "-o", "json")
    (tmp_path / "data.txt").write_text("abcd")
    assert executed(usina, usina("run", "p.py", "-o", "json")) == {"load", "double", "join"}


def test_no_cache_flag_runs_everything(usina):
    usina("run", "p.py", "-o", "json")
    assert executed(usina, usina("run", "p.py", "--no-cache", "-o", "json")) == {
        "load",
        "double",
        "count",
        "join",
    }


def test_deleted_artifact_is_recomputed_not_reused(usina, tmp_path):
    first = usina("run", "p.py", "-o", "json").json()
    count_out = next(s for s in first["steps"] if s["node"] == "count")["outputs"][0]["digest"]
    hexd = count_out.split(":", 1)[1]
    blob = tmp_path / ".usina" / "artifacts" / "sha256" / hexd[:2] / hexd
    assert blob.exists()
    blob.unlink()
    assert executed(usina, usina("run", "p.py", "-o", "json")) == {"load", "count"}
    assert blob.exists()


def test_deleting_the_whole_store_recomputes_everything(usina, tmp_path):
    usina("run", "p.py", "-o", "json")
    shutil.rmtree(tmp_path / ".usina" / "artifacts" / "sha256")
    assert executed(usina, usina("run", "p.py", "-o", "json")) == {
        "load",
        "double",
        "count",
        "join",
    }
