"""``usina triggers``: pipelines that run when something happens — a model alias moves, another
pipeline succeeds, new objects land under a prefix — on a platform server (``--server URL`` or
``USINA_SERVER``, with ``USINA_TOKEN``). Every replica of the server watches; each cause becomes
exactly one run (see ``usina.server.triggers``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from usina.cli.common import Output, OutputOpt, out, parse_params, server
from usina.cli.display import print_json
from usina.errors import DefinitionError
from usina.i18n import N_, _, error, reword, translate
from usina.scheduling.triggers import WATCHING

triggers_app = typer.Typer(
    help="Triggers on the platform server: run a pipeline when an alias moves, a pipeline "
    "succeeds, or new objects appear.",
    no_args_is_help=True,
)


def _remote() -> Any:
    remote = server()
    if remote is None:
        raise error(
            DefinitionError,
            N_(
                "triggers live in the platform server: pass --server URL (or set USINA_SERVER) "
                "and USINA_TOKEN"
            ),
        )
    return remote


def _path(project: str, name: str) -> str:
    return f"/api/v1/triggers/{quote(project, safe='')}/{quote(name, safe='')}"


def _show(item: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(out, item)
        return
    state = _("paused") if item["paused"] else _("watching")
    out.print(
        _(
            "{trigger}: runs {pipeline} when {watching} ({state}, since {since}); the runs get "
            "{params} when the pipeline declares them"
        ).format(
            trigger=f"{item['project']}/{item['name']}",
            pipeline=item["pipeline"],
            watching=_watching(item["watching"]),
            state=state,
            since=item["created_at"],
            params=", ".join(item["cause_params"]),
        ),
        markup=False,
    )
    for firing in item.get("firings") or []:
        out.print(
            f"  {firing['at']}  {translate(firing['outcome']):<8} {firing['run_id'] or ''}  "
            f"{firing['cause']}",
            markup=False,
        )


def _watching(said: str) -> str:
    """What a trigger watches, as the server says it in English, in the reader's language."""
    return reword(said, WATCHING.values())


def _spec(model: str | None, alias: str | None, after: str | None, prefix: str | None) -> Any:
    given = {
        "alias": {"model": model, "alias": alias} if model or alias else None,
        "run-succeeded": {"pipeline": after} if after else None,
        "objects": {"prefix": prefix} if prefix else None,
    }
    chosen = [(kind, spec) for kind, spec in given.items() if spec is not None]
    if len(chosen) != 1:
        raise typer.BadParameter(
            _(
                "say what the trigger watches, once: --model M --alias A (a model alias moves), "
                "--after PIPELINE (a run of it succeeds) or --prefix URL (new objects)"
            )
        )
    kind, spec = chosen[0]
    if kind == "alias" and not (model and alias):
        raise typer.BadParameter(_("an alias trigger needs both --model and --alias"))
    return kind, spec


@triggers_app.command("create")
def create(
    name: str,
    pipeline: Annotated[str, typer.Option(help="the pipeline to run (one the server has)")],
    model: Annotated[str | None, typer.Option(help="fire when this model's --alias moves")] = None,
    alias: Annotated[str | None, typer.Option(help="the alias, e.g. champion")] = None,
    after: Annotated[
        str | None, typer.Option(help="fire when a run of this pipeline succeeds")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="fire on new objects under this fsspec URL or folder")
    ] = None,
    project: Annotated[str, typer.Option(help="the trigger's project")] = "default",
    param: Annotated[list[str], typer.Option("--param", "-p", help="NAME=VALUE")] = [],  # noqa: B006
    paused: Annotated[bool, typer.Option(help="create it paused")] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Create a trigger; what it watches now is its baseline and does not fire."""
    kind, spec = _spec(model, alias, after, prefix)
    body = {
        "name": name, "project": project, "pipeline": pipeline, "kind": kind, "spec": spec,
        "params": parse_params(param), "paused": paused,
    }  # fmt: skip
    _show(_remote().call("POST", "/api/v1/triggers", body=body), output)


@triggers_app.command("ls")
def ls(output: OutputOpt = Output.text) -> None:
    """The triggers of the projects the token can read."""
    items = _remote().call("GET", "/api/v1/triggers")
    if output is Output.json:
        print_json(out, items)
        return
    table = Table(_("project"), _("name"), _("pipeline"), _("when"), _("state"))
    for i in items:
        state = _("paused") if i["paused"] else _("watching")
        table.add_row(i["project"], i["name"], i["pipeline"], _watching(i["watching"]), state)
    out.print(table)


@triggers_app.command("show")
def show(name: str, project: str = "default", output: OutputOpt = Output.text) -> None:
    """A trigger and the causes it handled last, each with its run."""
    _show(_remote().call("GET", _path(project, name)), output)


@triggers_app.command("pause")
def pause(name: str, project: str = "default", output: OutputOpt = Output.text) -> None:
    """Stop firing until resumed."""
    _show(_remote().call("POST", _path(project, name) + "/pause"), output)


@triggers_app.command("resume")
def resume(name: str, project: str = "default", output: OutputOpt = Output.text) -> None:
    """Fire again; what changed while paused fires, once per cause."""
    _show(_remote().call("POST", _path(project, name) + "/resume"), output)


@triggers_app.command("delete")
def delete(name: str, project: str = "default") -> None:
    """Delete a trigger (its runs stay)."""
    _remote().call("DELETE", _path(project, name))
    out.print(_("deleted {name}").format(name=f"{project}/{name}"))
