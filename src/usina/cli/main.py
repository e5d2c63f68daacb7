"""``usina``: run pipelines and inspect their runs. Exit codes: 0 ok, 1 run failed, 2 usage.

The commands live one group per module (``run``, ``runs``, ``k8s``, ``kpi``, ``tokens``);
``serve``, ``server`` and ``deploy`` come with their extras, and without one they say which
``pip install`` line brings them (``optional``).
"""

from __future__ import annotations

import enum
import logging
import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from usina.cli.click_words import show_usage_error
from usina.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, out, set_server
from usina.cli.help import lang_in, translated
from usina.cli.optional import OPTIONAL, register_optional
from usina.errors import DefinitionError, NotFoundError, StateError, UsinaError
from usina.i18n import DEFAULT, _, error_text, language, language_from_env, set_language

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_app", "main"]  # and ``app``

#: The top-level commands, in the order ``usina --help`` lists them: name -> (module, attribute,
#: "command" or "group"). A command's module is imported only when the app is built with it:
#: ``usina run`` builds (and imports) ``run`` alone (``build_app``), not the 40 others, which
#: cost a one-step run ~0.2 s of imports and of Typer building their parameters.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("usina.cli.run", "run", "command"),
    "advise": ("usina.cli.profile_cmds", "advise", "command"),
    "deploy-llm": ("usina.deploy.llm_cli", "deploy_llm", "command"),
    "kpi": ("usina.cli.kpi", "kpi", "command"),
    "version": ("usina.cli.main", "version", "command"),
    "runs": ("usina.cli.runs", "runs_app", "group"),
    "k8s": ("usina.cli.k8s", "k8s_app", "group"),
    "token": ("usina.cli.tokens", "tokens_app", "group"),
    "bundle": ("usina.cli.bundle_cmds", "bundle_app", "group"),
    "schedules": ("usina.cli.schedules", "schedules_app", "group"),
    "triggers": ("usina.cli.triggers", "triggers_app", "group"),
    "llm": ("usina.llm.cli", "app", "group"),
    "mcp": ("usina.mcp.cli", "app", "group"),
}

#: The root's options that take a value (``_command_in``: the word after one is not a command).
_ROOT_VALUE_OPTIONS = frozenset({"--server", "--token", "--log-format", "--lang"})


def build_app(only: str | None = None) -> typer.Typer:
    """The ``usina`` app with every command, or with ``only`` that one (plus the root's options),
    which is all one invocation parses."""
    import importlib

    built = typer.Typer(
        name="usina",
        help="Run ML pipelines locally or on Kubernetes, and inspect their runs.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    built.callback()(_root)
    for name, (module, attribute, kind) in COMMANDS.items():
        if only is not None and name != only:
            continue
        found = getattr(importlib.import_module(module), attribute)
        if kind == "group":
            if name == "runs":
                _with_runs_top(found)
            built.add_typer(found, name=name)
        else:
            built.command(name)(found)
    if only is None or only in OPTIONAL:
        register_optional(built, only)
    return built


def _with_runs_top(runs_app: typer.Typer) -> None:
    """``usina runs top`` lives with the profiles' commands; added once per process."""
    from usina.cli import profile_cmds

    if not any(c.name == "top" for c in runs_app.registered_commands):
        runs_app.command("top")(profile_cmds.runs_top)


def _command_in(argv: list[str]) -> str | None:
    """The top-level command ``argv`` names, when it is one of ours (else None: the whole app
    is built, for ``--help`` and for Click's own "No such command")."""
    words = iter(argv)
    for word in words:
        if word in _ROOT_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS or word in OPTIONAL else None
    return None


def __getattr__(name: str) -> typer.Typer:
    # ``usina.cli.main.app``: the whole app (the docs' reference pages are made from it).
    if name == "app":
        return build_app()
    raise AttributeError(name)


class Lang(enum.StrEnum):
    en = "en"
    pt_BR = "pt-BR"


class LogFormat(enum.StrEnum):
    plain = "plain"
    json = "json"


def _configure_logging(log_format: str | None) -> None:
    """Logging is the CLI's to configure (never the library's): plain lines, or JSON lines with
    run/step/attempt ids (``--log-format json`` or ``USINA_LOG_FORMAT=json``), on stderr."""
    handler = logging.StreamHandler()
    if (log_format or "plain").lower() == LogFormat.json.value:
        from usina.monitoring.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=os.environ.get("USINA_LOG_LEVEL", "WARNING"), handlers=[handler], force=True
    )


def _root(
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="USINA_SERVER",
            help="talk to a usina server at this URL instead of running locally",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="USINA_TOKEN", help="API token for --server"),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            envvar="USINA_LOG_FORMAT",
            help="log lines on stderr: plain, or json (with run, step and attempt ids)",
        ),
    ] = None,
    lang: Annotated[
        Lang | None,
        typer.Option(
            "--lang",
            help="language of messages: en or pt-BR (default: USINA_LANG, then LC_ALL, "
            "LC_MESSAGES, LANG)",
        ),
    ] = None,
) -> None:
    """Run ML pipelines locally or on Kubernetes, and inspect their runs."""
    if lang is not None:
        set_language(lang.value)
    if server:
        from usina.cli.remote import Remote  # a local run does without (~8 ms of imports)

        set_server(Remote(server, token))
    else:
        set_server(None)
    if log_format is not None:
        _configure_logging(log_format.value)


def version() -> None:
    """Print usina's version."""
    import usina

    out.print(usina.__version__)


def main(argv: list[str] | None = None) -> int:
    """The ``usina`` program; ``argv``: arguments to run in this process (tests), instead of
    ``sys.argv`` in a process of its own, which then ends at once (``_leave``)."""
    before = language()
    set_language(language_from_env(os.environ))
    try:
        code = _main(argv)
    finally:
        if argv is not None:  # in-process (tests): the next command starts from the env again
            set_language(before)
    if argv is None:
        _leave(code)
    return code


def _leave(code: int) -> None:
    """End the process now: the atexit handlers run and the output is flushed, but the
    interpreter's teardown of every module (~0.1 s of CPU with SQLAlchemy loaded, a fifth of a
    one-step run) is skipped. Only when no non-daemon thread is left, whose end the normal exit
    would wait for."""
    import atexit
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or EXIT_FAILED
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    # Logging is the CLI's to configure: MLflow would otherwise install its own INFO handler.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    _configure_logging(os.environ.get("USINA_LOG_FORMAT"))
    args = sys.argv[1:] if argv is None else argv
    asked = lang_in(args, _ROOT_VALUE_OPTIONS)
    if asked is not None:  # before Click parses: it prints --help as it goes
        set_language(asked)
    app = build_app(_command_in(args))
    try:
        if language() == DEFAULT:
            result = app(args=args, standalone_mode=False)
        else:  # the same command, its --help texts in the language
            result = translated(app, language())(args=args, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:  # click usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    except (DefinitionError, NotFoundError, StateError) as exc:
        err.print(_error_line(exc))
        return EXIT_USAGE
    except UsinaError as exc:
        err.print(_error_line(exc))
        return EXIT_FAILED
    except Exception as exc:
        # Click's usage errors (typer may vendor its own copy of click): they know how to show
        # themselves and carry their exit code.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            show_usage_error(exc)
            return EXIT_USAGE
        if type(exc).__name__ == "Abort":
            return 130
        raise
    return result if isinstance(result, int) else EXIT_OK


def _error_line(exc: Exception) -> str:
    # "usina[extra]" in a message is not markup
    return "[red]{label}[/] {message}".format(
        label=escape(_("error:")), message=escape(error_text(exc))
    )


if __name__ == "__main__":
    sys.exit(main())
