"""Usage and definition errors exit 2 with a message naming the step; tools get JSON."""

from __future__ import annotations

import textwrap

import pytest

from tests.integration.cli_helpers import Usina


@pytest.fixture
def usina(tmp_path):
    return Usina(tmp_path)


def _write(usina: Usina, body: str) -> None:
    usina.write("p.py", "from usina import Resources, pipeline, step\n" + textwrap.dedent(body))


@pytest.mark.parametrize(
    ("body", "args", "message"),
    [
        (
            """
            @step(resources=Resources(memory="4GB"))
            def train() -> int:
                return 1

            @pipeline
            def p():
                train()
            """,
            [],
            "step 'train' is not valid: memory: '4GB' has an unknown unit 'GB'; did you mean 4Gi?",
        ),
        (
            """
            @step
            def train():
                return 1

            @pipeline
            def p():
                train()
            """,
            [],
            "step 'train' is not valid: it has no return annotation",
        ),
        (
            """
            @step
            def a(x: int) -> int:
                return x

            @pipeline
            def p():
                x = a(1)
                y = a(x)
                x.after(y)
            """,
            [],
            "has a cycle: a -> a-2 -> a",
        ),
        (
            """
            @step
            def a(x: int) -> int:
                return x

            @pipeline
            def p(lr: float = 0.1):
                a(1)
            """,
            ["-p", "lr=fast"],
            "parameter 'lr' expects float, got 'fast'",
        ),
        (
            """
            @step
            def a(x: int) -> int:
                return x

            @pipeline
            def p(lr: float = 0.1):
                a(1)
            """,
            ["-p", "epochs=3"],
            "pipeline 'p' has no parameter 'epochs'; its parameters are: lr",
        ),
        (
            """
            @step
            def a(x: int) -> int:
                return x

            a(1)

            @pipeline
            def p():
                a(1)
            """,
            [],
            "step 'a' was called outside a @pipeline",
        ),
    ],
    ids=[
        "memory-unit",
        "no-return-annotation",
        "cycle",
        "mistyped-param",
        "unknown-param",
        "outside-pipeline",
    ],
)
def test_definition_errors_exit_2_naming_the_step(usina, body, args, message):
    _write(usina, body)
    res = usina("run", "p.py", *args)
    assert res.code == 2, res.out + res.err
    assert message in " ".join(res.err.split()), res.err
    assert (
        not (usina.home / ".usina" / "usina.db").exists()
        or usina("runs", "ls", "-o", "json").json() == []
    )


def test_unknown_run_is_a_usage_error(usina):
    res = usina("runs", "show", "no-such-run")
    assert res.code == 2
    assert "does not exist" in res.err


def test_unknown_option_is_a_usage_error(usina):
    assert usina("run", "--bogus").code == 2


def test_runs_ls_json_is_a_list(usina):
    res = usina("runs", "ls", "--output", "json")
    assert res.code == 0
    assert res.json() == []


def test_a_command_whose_extra_is_missing_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``usina serve`` without the serving extra: the pip line, not "No such command"."""
    import typer

    from usina.cli import main as cli_main
    from usina.cli import optional

    def load_command(module: str, function: str) -> object:
        if module == "usina.serving.cli":
            raise ModuleNotFoundError("No module named 'grpc'", name="grpc")
        return optional.importlib.import_module(module).__dict__[function]

    monkeypatch.setattr(optional, "load_command", load_command)
    fresh = typer.Typer(name="usina", no_args_is_help=True, add_completion=False)
    fresh.callback()(lambda: None)
    monkeypatch.setattr(cli_main, "app", fresh)
    assert cli_main.main(["serve", "models:/fraud@champion", "--port", "9000"]) == 1
    message = capsys.readouterr().err
    assert "No such command" not in message
    assert "pip install 'usina[serving]'" in message
    assert "'grpc' is not installed" in message


def test_k8s_queues_is_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's ``usina k8s queues example`` reaches the queues commands."""
    from usina.cli.main import main

    assert main(["k8s", "queues", "example"]) == 0
    assert "cohort:" in capsys.readouterr().out
