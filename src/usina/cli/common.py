"""What every command of the CLI shares: consoles, the output option, exit codes, the
``--server`` choice, parameters and how a pipeline file becomes a plan."""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from usina.compose.settings import Settings
from usina.errors import DefinitionError, NotFoundError
from usina.i18n import N_, error

if TYPE_CHECKING:
    from usina.cli.remote import Remote
    from usina.sdk.pipeline import Pipeline, Plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class Output(enum.StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for tools")
]
ParamOpt = Annotated[list[str], typer.Option("--param", "-p", help="NAME=VALUE, repeatable")]

_remote: dict[str, Remote | None] = {"server": None}


def set_server(remote: Remote | None) -> None:
    _remote["server"] = remote


def server() -> Remote | None:
    """The server given with ``--server`` (None: work on the local state folder)."""
    return _remote["server"]


def settings() -> Settings:
    return Settings.from_env()


def existing_settings(run_id: str | None = None) -> Settings:
    """The settings of a store that must exist already (commands on existing runs never create
    an empty one); raises NotFoundError naming where it looked."""
    current = settings()
    if not current.store_exists():
        if run_id:
            raise error(
                NotFoundError,
                N_(
                    "run {run!r} does not exist: no usina store at {where}; run a pipeline "
                    "first (usina run FILE.py), cd into its project, or set USINA_HOME"
                ),
                run=run_id,
                where=current.where(),
            )
        raise error(
            NotFoundError,
            N_(
                "no usina store at {where}; run a pipeline first (usina run FILE.py), cd into "
                "its project, or set USINA_HOME"
            ),
            where=current.where(),
        )
    return current


def parse_params(values: list[str], option: str = "--param") -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise error(
                DefinitionError,
                N_("{option} {item!r} must look like NAME=VALUE"),
                option=option,
                item=item,
            )
        params[key.strip()] = value
    return params


def compile_target(target: str, params: list[str]) -> tuple[Pipeline, Plan]:
    """The pipeline at ``FILE.py[:NAME]`` and its plan, as ``usina run`` submits it (with the
    folder of the file on the attempts' import path)."""
    from usina.runtime.loader import load_pipeline
    from usina.sdk.pipeline import Plan

    pipe = load_pipeline(target)
    plan = pipe.compile(parse_params(params))
    return pipe, Plan(plan.pipeline, plan.params, plan.nodes, plan.source, tuple(sys.path[:1]))
