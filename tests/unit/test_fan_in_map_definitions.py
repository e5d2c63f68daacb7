"""Definitions of fan-in, ``map`` and named calls: the plan they compile to, and the errors."""

from __future__ import annotations

import pytest

from usina import DefinitionError, pipeline, step


@step
def part(i: int) -> int:
    return i


@step
def make(n: int) -> list:
    return list(range(n))


@step
def total(parts: list) -> int:
    return sum(parts)


@step
def by_name(parts: dict) -> int:
    return len(parts)


class Model:
    pass


def test_a_list_and_a_dict_of_outputs_are_one_input_each() -> None:
    @pipeline
    def p(n: int = 3):
        parts = [part(i, name=f"p{i}") for i in range(n)]
        total(parts)
        by_name({"a": parts[0], "b": parts[1]})

    plan = p.compile()
    node = plan.node("total")
    assert node.inputs["parts"]["refs"] == [["p0", 0], ["p1", 0], ["p2", 0]]
    assert node.upstream == ("p0", "p1", "p2")
    assert plan.node("by_name").inputs["parts"]["keys"] == ["a", "b"]


def test_default_names_are_deterministic_and_names_must_be_unique() -> None:
    @pipeline
    def p():
        part(1)
        part(2)
        part(3, name="third")

    assert [n.id for n in p.compile().nodes] == ["part", "part-2", "third"]

    @pipeline
    def twice():
        part(1, name="x")
        part(2, name="x")

    with pytest.raises(DefinitionError, match="two steps are named 'x'"):
        twice.compile()


def test_map_over_a_parameter_list_and_over_a_run_time_list() -> None:
    @pipeline
    def static(items: list = [1, 2, 3]):  # noqa: B006
        total(part.map(items, name="sq"))

    plan = static.compile()
    assert [n.id for n in plan.nodes if n.step == "part"] == ["sq[0]", "sq[1]", "sq[2]"]
    assert plan.node("sq[1]").inputs["i"] == {"const": 2}

    @pipeline
    def dynamic(n: int = 3):
        total(part.map(make(n), max_width=4))

    plan = dynamic.compile()
    branch = plan.node("part[3]")
    assert branch.inputs["i"] == {"ref": ["make", 0], "item": 3, "width": 4}
    assert plan.node("total").inputs["parts"]["optional"] is True

    @pipeline
    def too_wide(items: list = [1, 2, 3]):  # noqa: B006
        part.map(items, max_width=2)

    with pytest.raises(DefinitionError, match="more than max_width=2"):
        too_wide.compile()


def test_a_return_type_that_needs_pickle_is_refused_with_the_fix() -> None:
    with pytest.raises(DefinitionError, match=r"@step\(pickle=True\)"):

        @step
        def fit(x: int) -> Model:
            return Model()

    @step(pickle=True)
    def fit_ok(x: int) -> Model:
        return Model()

    assert fit_ok.pickle
