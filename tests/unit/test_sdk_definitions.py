"""Definition errors are found before anything runs, and name the step and the fix."""

from __future__ import annotations

import pytest

from usina import DefinitionError, ParameterError, Resources, Retry, pipeline, step
from usina.sdk.resources import format_memory, memory_bytes, parse_quantity


@step
def make(n: int) -> int:
    return n


@step
def add(a: int, b: int) -> int:
    return a + b


@step
def pair(x: int) -> tuple[int, str]:
    return x, str(x)


@step
def sink(x: int) -> None:
    return None


@pipeline
def good(n: int = 3, lr: float = 0.1, name: str = "x", flag: bool = False):
    a = make(n)
    b = make(n)
    add(a, b)


def test_compile_builds_nodes_in_topological_order_with_repeated_names():
    plan = good.compile()
    assert [n.id for n in plan.nodes] == ["make", "make-2", "add"]
    add_node = plan.node("add")
    assert add_node.inputs == {"a": {"ref": ["make", 0]}, "b": {"ref": ["make-2", 0]}}
    assert add_node.upstream == ("make", "make-2")
    assert plan.params == {"n": 3, "lr": 0.1, "name": "x", "flag": False}


def test_params_are_coerced_from_strings():
    plan = good.compile({"n": "7", "lr": "0.5", "flag": "true"})
    assert plan.params == {"n": 7, "lr": 0.5, "name": "x", "flag": True}
    assert plan.node("make").inputs == {"n": {"const": 7}}


def test_unknown_parameter_is_named_with_the_known_ones():
    with pytest.raises(ParameterError, match=r"no parameter 'epochs'.*flag, lr, n, name"):
        good.compile({"epochs": "3"})


def test_mistyped_parameter_says_what_was_expected():
    with pytest.raises(ParameterError, match=r"parameter 'lr' expects float, got 'fast'"):
        good.compile({"lr": "fast"})
    with pytest.raises(ParameterError, match=r"parameter 'n' expects int"):
        good.compile({"n": "1.5"})


def test_memory_in_gb_is_refused_naming_the_step_and_the_fix():
    with pytest.raises(DefinitionError, match=r"step 'train'.*'4GB'.*did you mean 4Gi"):

        @step(resources=Resources(memory="4GB"))
        def train() -> int:
            return 1


def test_missing_return_annotation_is_refused():
    with pytest.raises(DefinitionError, match=r"step 'noisy'.*no return annotation"):

        @step
        def noisy(x: int):  # type: ignore[no-untyped-def]
            return x


def test_step_called_outside_a_pipeline_is_refused():
    with pytest.raises(DefinitionError, match=r"step 'make' was called outside a @pipeline"):
        make(1)
    assert make.fn(4) == 4


def test_cycle_is_reported_with_its_path():
    @pipeline
    def cyclic():
        a = make(1)
        b = add(a, 2)
        a.after(b)

    with pytest.raises(DefinitionError, match=r"cycle: (make -> add -> make|add -> make -> add)"):
        cyclic.compile()


def test_wrongly_typed_constant_names_the_step_and_input():
    @pipeline
    def wrong():
        make("three")

    with pytest.raises(DefinitionError, match=r"step 'make': input 'n' expects int"):
        wrong.compile()


def test_missing_input_is_reported():
    @pipeline
    def missing():
        add(1)

    with pytest.raises(DefinitionError, match=r"step 'add' was called wrongly"):
        missing.compile()


def test_multiple_outputs_and_no_outputs():
    @pipeline
    def multi():
        x, s = pair(2)
        sink(x).after(s)  # type: ignore[union-attr]

    plan = multi.compile()
    assert plan.node("pair").outputs == 2
    assert plan.node("sink").inputs == {"x": {"ref": ["pair", 0]}}


def test_passing_a_no_output_step_as_input_is_refused():
    @pipeline
    def bad():
        add(sink(1), 2)  # type: ignore[arg-type]

    with pytest.raises(DefinitionError, match=r"returns nothing"):
        bad.compile()


def test_required_parameter_must_be_given():
    @pipeline
    def needs(n: int):
        make(n)

    with pytest.raises(ParameterError, match=r"needs parameter 'n'"):
        needs.compile()
    assert needs.compile({"n": "2"}).params == {"n": 2}


def test_retry_policy_is_validated():
    with pytest.raises(DefinitionError, match=r"retry user=-1"):

        @step(retry=Retry(user=-1))
        def flaky() -> int:
            return 1


def test_timeout_strings():
    @step(timeout="1h30m")
    def slow() -> int:
        return 1

    assert slow.timeout == 5400.0
    with pytest.raises(DefinitionError, match=r"timeout='soon'"):

        @step(timeout="soon")
        def never() -> int:
            return 1


def test_code_hash_changes_with_source_and_cache_version():
    def f() -> int:
        return 1

    def g() -> int:
        return 2

    from usina.sdk.step import Step

    assert Step(f).code_hash != Step(g, name="f").code_hash
    assert Step(f).code_hash != Step(f, cache_version="2").code_hash


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4Gi", 4 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 10**9),
        ("1.5Gi", int(1.5 * 2**30)),
        (1024, 1024),
    ],
)
def test_memory_quantities(text, expected):
    assert memory_bytes(text) == expected


def test_cpu_quantities_and_formatting():
    assert parse_quantity("500m") * 1000 == 500
    assert format_memory(6 * 2**30) == "6Gi"
    assert format_memory(1536 * 2**20) == "1536Mi"
    assert format_memory(1000) == "1Mi"
