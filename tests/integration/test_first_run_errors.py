"""First-run errors: the store is found like git finds ``.git``, reads never create one, and a
pipeline file that fails at import, or a step that would need pickle, is refused with exit 2
and a short message naming the file and line (no traceback of usina's own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_helpers import Result, Usina

GOOD = """
from usina import pipeline, step

@step
def one(x: int) -> int:
    return x + 1

@step
def boom(v: int) -> int:
    raise RuntimeError("no")

@pipeline
def p(x: int = 1):
    one(x)

@pipeline
def bad(x: int = 1):
    boom(one(x))
"""


def cli(cwd: Path, *args: str) -> Result:
    """The CLI in ``cwd`` with no USINA_HOME: it must find (or not) the store itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USINA_", "MLFLOW_"))}
    env["COLUMNS"] = "200"
    proc = subprocess.run(
        [sys.executable, "-m", "usina.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("import usina\nx = (\n", 2, "syntax error"),
        ("import usina\nimport no_such_module_here\n", 2, "No module named 'no_such_module_here'"),
        ("import sys\nsys.exit(3)\n", 2, "SystemExit"),
    ],
)
def test_a_file_failing_at_import_exits_2_naming_file_and_line(tmp_path, source, line, words):
    (tmp_path / "p.py").write_text(source)
    res = Usina(tmp_path)("run", "p.py")
    assert res.code == 2, res.out + res.err
    assert f"p.py:{line}" in res.err
    assert words in res.err
    assert "Traceback" not in res.err


def test_a_step_returning_a_type_that_needs_pickle_is_refused_at_definition(tmp_path):
    (tmp_path / "p.py").write_text(
        "from usina import pipeline, step\n\n"
        "class Model:\n    pass\n\n"
        "@step\ndef fit(x: int) -> Model:\n    return Model()\n\n"
        "@pipeline\ndef p(x: int = 1):\n    fit(x)\n"
    )
    res = Usina(tmp_path)("run", "p.py")
    assert res.code == 2, res.out + res.err
    assert "@step(pickle=True)" in res.err
    assert "Traceback" not in res.err


def test_reads_never_create_a_store_and_name_where_they_looked(tmp_path):
    assert cli(tmp_path, "runs", "ls").code == 0
    missing = cli(tmp_path, "runs", "show", "nope-1")
    assert missing.code == 2
    assert "no usina store" in missing.err
    assert str(tmp_path) in missing.err.replace("\n", "")
    assert not (tmp_path / ".usina").exists()


def test_the_store_is_found_walking_up_and_a_missing_run_names_it(tmp_path):
    (tmp_path / "p.py").write_text(GOOD)
    first = cli(tmp_path, "run", "p.py:p", "-o", "json")
    assert first.code == 0, first.err
    run_id = first.json()["id"]
    sub = tmp_path / "notebooks" / "deep"
    sub.mkdir(parents=True)
    shown = cli(sub, "runs", "show", run_id, "-o", "json")
    assert shown.code == 0, shown.err
    assert shown.json()["id"] == run_id
    assert not (sub / ".usina").exists()
    missing = cli(sub, "runs", "show", "nope-1")
    assert missing.code == 2
    assert str(tmp_path / ".usina") in missing.err.replace("\n", "")


def test_the_summary_counts_a_step_that_ran_and_failed_as_ran(tmp_path):
    (tmp_path / "p.py").write_text(GOOD)
    res = Usina(tmp_path)("run", "p.py:bad")
    assert res.code == 1
    assert "2 ran, 0 from cache" in res.out
