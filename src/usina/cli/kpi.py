"""``usina kpi``: the platform's KPIs over a period, and the registered models' (MLflow)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from usina.cli.common import Output, OutputOpt, out, settings
from usina.cli.display import kpi_table, print_json
from usina.errors import DefinitionError
from usina.i18n import N_, _, error

if TYPE_CHECKING:
    from usina.compose.settings import Settings


def kpi(
    since: Annotated[
        str, typer.Option(help="the period: runs submitted in the last 30m, 12h, 7d")
    ] = "7d",
    models: Annotated[
        bool, typer.Option("--models/--no-models", help="add the models' KPIs from MLflow")
    ] = True,
    output: OutputOpt = Output.text,
    explain: Annotated[
        bool, typer.Option("--explain", help="print what each KPI counts, and exit")
    ] = False,
) -> None:
    """Platform KPIs of a period: success rate, time to recovery, GPU-hours used, wasted and
    idle, queue wait; and the registered models' versions and champions (MLflow, when
    reachable). ``--explain`` says what each one counts."""
    from usina.compose.components import open_stores
    from usina.monitoring.kpi import compute_kpis, explain_kpis, parse_period

    if explain:
        out.print(explain_kpis(_), markup=False)
        return

    try:
        period = parse_period(since)
    except ValueError:
        raise error(
            DefinitionError,
            N_("--since {text!r}: write a positive period such as 30m, 12h, 7d or 2w"),
            text=since,
        ) from None
    current = settings()
    comps = open_stores(current)
    try:
        now = time.time()
        report = compute_kpis(
            comps.metadata, since=now - period, until=now, artifacts=comps.artifacts
        )
    finally:
        comps.close()
    if models:
        report["models"] = _model_kpis(current, now - period)
    if output is Output.json:
        print_json(out, report)
        return
    out.print(kpi_table(report, since))


def _model_kpis(current: Settings, since: float) -> dict[str, Any]:
    """The models' KPIs, or why there are none: the registry is optional to a report."""
    try:
        from usina.tracking.mlflow import model_kpis

        return {
            "available": True,
            "models": model_kpis(tracking_uri=current.tracking_uri, since=since),
        }
    except Exception as exc:  # no mlflow, no store, server down: the platform KPIs still stand
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "models": []}
