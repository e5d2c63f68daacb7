"""The usina workloads of benchmarks/orchestration.py compile into the DAGs the benchmark claims.

Only compiles them: the benchmark itself (and Prefect and Metaflow) never runs in the tests.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from usina import Pipeline

WORKLOADS = Path(__file__).resolve().parents[2] / "benchmarks" / "workloads"


@pytest.fixture
def load() -> Iterator[Callable[[str], Pipeline]]:
    added: list[str] = []

    def _load(stem: str) -> Pipeline:
        name = f"_usina_bench_{stem}"
        spec = importlib.util.spec_from_file_location(name, WORKLOADS / f"{stem}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # steps must be importable by module and name
        added.append(name)
        spec.loader.exec_module(module)
        pipelines = [v for v in vars(module).values() if isinstance(v, Pipeline)]
        assert len(pipelines) == 1, f"{stem}.py should define exactly one pipeline"
        return pipelines[0]

    yield _load
    for name in added:
        sys.modules.pop(name, None)


def test_w1_is_a_50_step_chain(load) -> None:
    plan = load("usina_w1").compile()
    assert len(plan.nodes) == 50
    ids = [n.id for n in plan.nodes]
    assert ids == ["noop", *(f"noop-{i}" for i in range(2, 51))]
    assert plan.nodes[0].upstream == ()
    for before, node in itertools.pairwise(plan.nodes):
        assert node.upstream == (before.id,)
        assert node.inputs == {"x": {"ref": [before.id, 0]}}


def test_w2_is_a_20_way_fan_out_and_in(load) -> None:
    plan = load("usina_w2").compile()
    assert len(plan.nodes) == 22
    by_step: dict[str, list[str]] = {}
    for node in plan.nodes:
        by_step.setdefault(node.step, []).append(node.id)
    assert {k: len(v) for k, v in by_step.items()} == {"source": 1, "work": 20, "join": 1}
    for work in by_step["work"]:
        assert plan.node(work).upstream == ("source",)
    assert sorted(plan.node("join").upstream) == sorted(by_step["work"])
    assert plan.params == {"n": 1_000_000}  # float64: 8 MB per array


def test_one_step_run_has_one_node(load) -> None:
    plan = load("usina_one").compile()
    assert [n.id for n in plan.nodes] == ["noop"]
