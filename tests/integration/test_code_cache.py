"""Cache keys cover the project code a step can run: a change in a helper module, two imports
away, or in a class method re-runs exactly the steps that use it (and their dependents), and
``runs show`` says why each step ran."""

from __future__ import annotations

import pytest

from tests.integration.cli_helpers import Usina

PIPE = """
from usina import pipeline, step

import helpers
from shapes import Scaler
from lib import top

@step
def scaled(x: int) -> int:
    return helpers.scale(x)

@step
def deep(x: int) -> int:
    return top(x)

@step
def method(x: int) -> int:
    return Scaler().apply(x)

@step
def plain(x: int) -> int:
    return x + 1

@step
def total(a: int, b: int, c: int, d: int) -> int:
    return a + b + c + d

@pipeline
def p(x: int = 2):
    total(scaled(x), deep(x), method(x), plain(x))
"""

HELPERS = """
FACTOR = {factor}

def scale(x):
    # a comment
    return x * FACTOR
"""

LIB = """
from lib2 import inner

def top(x):
    return inner(x) + 1
"""

LIB2 = """
def inner(x):
    return x * {mult}
"""

SHAPES = """
class Scaler:
    def apply(self, x):
        return x + {add}
"""


@pytest.fixture
def usina(tmp_path):
    u = Usina(tmp_path)
    u.write("p.py", PIPE)
    u.write("helpers.py", HELPERS.format(factor=3))
    u.write("lib.py", LIB)
    u.write("lib2.py", LIB2.format(mult=2))
    u.write("shapes.py", SHAPES.format(add=1))
    u.write("unrelated.py", "VALUE = 1\n")
    return u


def ran(usina: Usina) -> tuple[set[str], dict[str, object]]:
    res = usina("run", "p.py", "-o", "json")
    assert res.code == 0, res.out + res.err
    run = res.json()
    done = {s["node"] for s in run["steps"] if s["state"] == "succeeded" and not s["cached"]}
    shown = usina("runs", "show", run["id"], "-o", "json")
    assert shown.code == 0, shown.err
    why = {s["node"]: s["why"] for s in shown.json()["steps"] if s["why"]}
    return done, why


def test_helper_changes_rerun_exactly_the_steps_that_use_them(usina):
    done, why = ran(usina)
    assert done == {"scaled", "deep", "method", "plain", "total"}
    assert why["scaled"] == "first run"

    # (a) a constant in a helper module
    usina.write("helpers.py", HELPERS.format(factor=4))
    done, why = ran(usina)
    assert done == {"scaled", "total"}
    assert why["scaled"] == "code of helpers.py:FACTOR changed"
    assert why["total"] == "input a changed"

    # (b) a function two imports away
    usina.write("lib2.py", LIB2.format(mult=5))
    done, why = ran(usina)
    assert done == {"deep", "total"}
    assert "lib2.py:inner" in str(why["deep"])

    # (c) a class method
    usina.write("shapes.py", SHAPES.format(add=7))
    done, why = ran(usina)
    assert done == {"method", "total"}
    assert "shapes.py:Scaler" in str(why["method"])

    # an unrelated module, and a comment-only edit: nothing runs
    usina.write("unrelated.py", "VALUE = 2\n")
    usina.write("helpers.py", HELPERS.format(factor=4).replace("# a comment", "# changed"))
    done, _ = ran(usina)
    assert done == set()


def test_no_cache_is_the_reason_given(usina):
    ran(usina)
    res = usina("run", "p.py", "--no-cache", "-o", "json")
    assert res.code == 0, res.err
    shown = usina("runs", "show", res.json()["id"], "-o", "json").json()
    assert {s["why"] for s in shown["steps"]} == {"--no-cache"}
