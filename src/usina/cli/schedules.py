"""``usina schedules``: pipelines that run on their own, on a platform server (``--server URL``
or ``USINA_SERVER``, with ``USINA_TOKEN``). Every replica of the server runs the scheduler;
each tick becomes exactly one run (see ``usina.server.scheduler``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from usina.cli.common import Output, OutputOpt, out, parse_params, server
from usina.cli.display import print_json
from usina.errors import DefinitionError
from usina.i18n import N_, _, error

schedules_app = typer.Typer(
    help="Schedules on the platform server: cron in a time zone, catch-up, backfill.",
    no_args_is_help=True,
)


def _remote() -> Any:
    remote = server()
    if remote is None:
        raise error(
            DefinitionError,
            N_(
                "schedules live in the platform server: pass --server URL (or set USINA_SERVER) "
                "and USINA_TOKEN"
            ),
        )
    return remote


def _path(project: str, name: str) -> str:
    return f"/api/v1/schedules/{quote(project, safe='')}/{quote(name, safe='')}"


def _show(item: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(out, item)
        return
    state = _("paused") if item["paused"] else _("next {tick}").format(tick=item["next_tick"])
    out.print(
        _(
            "{schedule}: {pipeline} at '{cron}' ({timezone}), {state}; concurrency "
            "{concurrency}, catch-up {catchup}"
        ).format(
            schedule=f"{item['project']}/{item['name']}",
            pipeline=item["pipeline"],
            cron=item["cron"],
            timezone=item["timezone"],
            state=state,
            concurrency=item["concurrency"],
            catchup=item["catchup"],
        ),
        markup=False,
    )
    for tick in item.get("ticks") or []:
        why = f" ({tick['reason']})" if tick.get("reason") else ""
        out.print(
            f"  {tick['nominal']}  {tick['outcome']:<8} {tick['run_id'] or ''}{why}", markup=False
        )


@schedules_app.command("create")
def create(
    name: str,
    pipeline: Annotated[str, typer.Option(help="a pipeline the server has")],
    cron: Annotated[str, typer.Option(help="5-field cron, e.g. '0 3 * * *' (03:00 daily)")],
    timezone: Annotated[str, typer.Option(help="IANA time zone")] = "UTC",
    project: Annotated[str, typer.Option(help="the schedule's project")] = "default",
    param: Annotated[list[str], typer.Option("--param", "-p", help="NAME=VALUE")] = [],  # noqa: B006
    concurrency: Annotated[str, typer.Option(help="allow, forbid or replace")] = "forbid",
    catchup: Annotated[str, typer.Option(help="latest, all or skip")] = "latest",
    starting_deadline: Annotated[
        float | None, typer.Option(help="seconds after which a missed tick never runs")
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """Create a schedule, or update the one of that name in place."""
    body = {
        "name": name, "project": project, "pipeline": pipeline, "cron": cron,
        "timezone": timezone, "params": parse_params(param), "concurrency": concurrency,
        "catchup": catchup, "starting_deadline": starting_deadline,
    }  # fmt: skip
    _show(_remote().call("PUT", "/api/v1/schedules", body=body), output)


@schedules_app.command("ls")
def ls(output: OutputOpt = Output.text) -> None:
    """The schedules of the projects the token can read."""
    items = _remote().call("GET", "/api/v1/schedules")
    if output is Output.json:
        print_json(out, items)
        return
    table = Table(
        _("project"), _("name"), _("pipeline"), _("cron"), _("zone"), _("state"), _("last tick")
    )
    for i in items:
        state = _("paused") if i["paused"] else _("next {tick}").format(tick=i["next_tick"])
        table.add_row(
            i["project"], i["name"], i["pipeline"], i["cron"], i["timezone"], state,
            i["last_tick"] or "-",
        )  # fmt: skip
    out.print(table)


@schedules_app.command("show")
def show(name: str, project: str = "default", output: OutputOpt = Output.text) -> None:
    """A schedule and what its last ticks became."""
    _show(_remote().call("GET", _path(project, name)), output)


@schedules_app.command("pause")
def pause(name: str, project: str = "default", output: OutputOpt = Output.text) -> None:
    """Stop firing (ticks while paused are not caught up)."""
    _show(_remote().call("POST", _path(project, name) + "/pause"), output)


@schedules_app.command("resume")
def resume(name: str, project: str = "default", output: OutputOpt = Output.text) -> None:
    """Fire again from now on."""
    _show(_remote().call("POST", _path(project, name) + "/resume"), output)


@schedules_app.command("delete")
def delete(name: str, project: str = "default") -> None:
    """Delete a schedule (its runs stay)."""
    _remote().call("DELETE", _path(project, name))
    out.print(_("deleted {name}").format(name=f"{project}/{name}"))


@schedules_app.command("backfill")
def backfill(
    name: str,
    start: Annotated[str, typer.Option(help="ISO 8601, e.g. 2026-11-01T00:00:00Z")],
    end: Annotated[str, typer.Option(help="ISO 8601")],
    project: str = "default",
    output: OutputOpt = Output.text,
) -> None:
    """Run the schedule's ticks of a date range, a few at a time, each with its interval."""
    reply = _remote().call(
        "POST", _path(project, name) + "/backfill", body={"start": start, "end": end}
    )
    if output is Output.json:
        print_json(out, reply)
        return
    out.print(
        _("queued {count} ticks of {name}").format(
            count=len(reply["queued"]), name=f"{project}/{name}"
        )
    )
    for tick in reply["queued"]:
        out.print(f"  {tick['nominal']}  {tick['run_id']}", markup=False)
