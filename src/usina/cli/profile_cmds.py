"""What steps really used, on the command line: ``usina advise``, ``usina runs top``, the
profile figures of ``runs show`` and the memory curve of ``runs why`` for an ``oom``.

The commands are plain Typer functions; ``usina.cli.main`` registers them::

    app.command("advise")(advise)
    runs_app.command("top")(runs_top)

and calls ``profile_table`` / ``profiles_json`` in ``runs show`` and ``oom_curve_lines`` in
``runs why``. Everything here reads the artifact store's profile records
(``usina.engine.profiles``), written by the runtime's sampler.
"""

from __future__ import annotations

import enum
import math
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from usina.cli.display import format_duration, print_json
from usina.cli.settings import Settings
from usina.engine.profiles import AttemptProfile, Profile, Stat, load_profile
from usina.engine.records import AttemptState
from usina.i18n import N_, _, translate
from usina.sdk.retry import FailureClass

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.engine.ports import ArtifactStore
    from usina.engine.records import AttemptRecord
    from usina.monitoring.advice import StepAdvice

__all__ = [
    "advice_table",
    "advise",
    "oom_curve_lines",
    "oom_curves",
    "profile_table",
    "profiles_json",
    "runs_top",
    "top_table",
]

out = Console(highlight=False, soft_wrap=True)


class Output(enum.StrEnum):
    text = "text"
    json = "json"


OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for tools")
]

MI = 2**20


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= 2**30:
        return f"{n / 2**30:.2f}Gi"
    return f"{n / MI:.0f}Mi"


def _cores(n: float | None) -> str:
    return "-" if n is None else f"{n:.2f}"


def _pct(n: float | None) -> str:
    return "-" if n is None else f"{n:.0f}%"


def _stat_json(stat: Stat | None) -> dict[str, float] | None:
    return stat.to_json() if stat is not None else None


# -- runs show ------------------------------------------------------------------------------


def _rows(found: AttemptProfile) -> list[tuple[str, Profile]]:
    if found.whole is not None:
        return [("", found.whole)]
    return [(f"rank {p.rank}", p) for p in found.ranks]


def profiles_json(artifacts: ArtifactStore, attempts: Sequence[AttemptRecord]) -> list[Any]:
    """Peak / p95 / requested of each resource, per attempt (and per rank): ``runs show -o
    json`` puts it under ``"profiles"``."""
    items: list[Any] = []
    for a in attempts:
        found = load_profile(artifacts, a.id)
        for _kind, p in _rows(found):
            s = p.summary
            items.append(
                {
                    "attempt": a.id,
                    "node": a.node,
                    "number": a.number,
                    "rank": p.rank,
                    "final": p.final,
                    "duration": s.duration,
                    "memory_source": p.memory_source,
                    "cpu": {
                        **(_stat_json(s.cpu) or {}),
                        "seconds": s.cpu_seconds,
                        "requested": p.requests.get("cpu"),
                        "limit": p.limits.get("cpu"),
                    },
                    "memory": {
                        **(_stat_json(s.memory) or {}),
                        "requested": p.requests.get("memory"),
                        "limit": p.limits.get("memory"),
                    },
                    "gpu": {
                        "requested": p.requests.get("gpus"),
                        "seen": s.gpus_seen,
                        "util": _stat_json(s.gpu_util),
                        "memory": _stat_json(s.gpu_memory),
                        "power": _stat_json(s.gpu_power),
                        "idle_seconds": s.gpu_idle_seconds,
                    },
                    "io": {"read_bytes": s.read_bytes, "write_bytes": s.write_bytes},
                }
            )
    return items


def profile_table(artifacts: ArtifactStore, attempts: Sequence[AttemptRecord]) -> Table | None:
    """``runs show``: what each attempt used against what it asked for (None: no profiles)."""
    title = translate(N_("resources used (peak / p95 / requested)"))
    table = Table(title=title, title_justify="left")
    columns = (N_("step"), N_("attempt"), N_("cpu cores"), N_("memory"), N_("gpu util"))
    for name in (*columns, N_("gpu memory")):
        table.add_column(translate(name), justify="left" if name == "step" else "right")
    shown = False
    for a in attempts:
        for label, p in _rows(load_profile(artifacts, a.id)):
            s = p.summary
            cpu = s.cpu
            mem = s.memory
            table.add_row(
                a.node + (f" ({label})" if label else ""),
                str(a.number),
                f"{_cores(cpu.peak if cpu else None)} / {_cores(cpu.p95 if cpu else None)}"
                f" / {_cores(p.requests.get('cpu'))}",
                f"{_bytes(mem.peak if mem else None)} / {_bytes(mem.p95 if mem else None)}"
                f" / {_bytes(p.requests.get('memory'))}",
                (
                    f"{_pct(s.gpu_util.peak)} / {_pct(s.gpu_util.p95)} "
                    f"(mean {_pct(s.gpu_util.mean)})"
                    if s.gpu_util
                    else "-"
                ),
                f"{_bytes(s.gpu_memory.peak)}" if s.gpu_memory else "-",
            )
            shown = True
    return table if shown else None


# -- runs why (oom) ---------------------------------------------------------------------------

_BAR = 40

#: The first line of ``oom_curve_lines``, by (a limit is known, the profile is final). The lines
#: are data of the why report (``--output json`` stays English); ``runs why`` shows this line
#: in the reader's language (``display.print_why``, through ``CURVE_TEXTS``).
_CURVE_HEADS = {
    (False, True): N_("memory over the last {span} of the attempt"),
    (True, True): N_("memory over the last {span} of the attempt, limit {limit}"),
    (False, False): N_(
        "memory over the last {span} of the attempt (last recorded at {time}, before it was killed)"
    ),
    (True, False): N_(
        "memory over the last {span} of the attempt, limit {limit} (last recorded at {time}, "
        "before it was killed)"
    ),
}
NO_SAMPLES = N_("no memory samples were recorded for this attempt")
CURVE_TEXTS = (NO_SAMPLES, *_CURVE_HEADS.values())


def oom_curve_lines(profile: Profile, *, minutes: float = 3.0, rows: int = 15) -> list[str]:
    """The memory curve of the last ``minutes`` of an attempt, one line per point, with its
    limit: what ``runs why`` prints under an ``oom`` attempt.

    Each line is ``-<time before the end>  <bar>  <memory> (<% of limit>)``; the bar is scaled
    to the limit (``|`` marks it), or to the peak when no limit is known.
    """
    cut = profile.last(minutes * 60)
    t, memory = cut.t, cut.series.get("memory", ())
    if not t or not memory:
        return [NO_SAMPLES]
    step = max(1, math.ceil(len(t) / rows))
    points = [
        (t[i], max(memory[i : i + step])) for i in range(0, len(t), step)
    ]  # the larger of merged points: a peak is never smoothed away
    limit = profile.limits.get("memory")
    scale = float(limit) if limit else max(m for _, m in points) or 1.0
    end = t[-1]
    last = time.strftime("%H:%M:%S", time.localtime(profile.started_at + end))
    head = _CURVE_HEADS[(bool(limit), profile.final)]
    span = format_duration(end - t[0]) or "0s"
    lines = [head.format(span=span, limit=_bytes(limit) if limit else "", time=last)]
    for at, value in points:
        filled = min(_BAR, round(_BAR * value / scale))
        bar = "#" * filled + " " * (_BAR - filled)
        if limit:
            bar += "|"
        ago = end - at
        share = f" ({value / float(limit):.0%})" if limit else ""
        when = "-" + (format_duration(ago) or "0.0s")
        lines.append(f"  {when:>7}  {bar} {_bytes(value)}{share}")
    return lines


def oom_curves(artifacts: ArtifactStore, attempts: Sequence[AttemptRecord]) -> dict[str, list[str]]:
    """``oom_curve_lines`` of every ``oom`` attempt that has a profile, by attempt id."""
    found: dict[str, list[str]] = {}
    for a in attempts:
        if a.state is not AttemptState.FAILED or a.failure_class is not FailureClass.OOM:
            continue
        prof = load_profile(artifacts, a.id)
        main = prof.whole or next(
            iter(
                sorted(
                    prof.ranks, key=lambda p: -(p.summary.memory.peak if p.summary.memory else 0)
                )
            ),
            None,
        )
        if main is not None:
            found[a.id] = oom_curve_lines(main)
    return found


# -- usina advise -----------------------------------------------------------------------------


def advice_table(advice: Sequence[StepAdvice]) -> Table:
    from usina.monitoring.advice import format_cpu

    table = Table(title=_("right-sizing advice"), title_justify="left")
    names = (
        N_("step"),
        N_("attempts"),
        N_("memory: asked -> advised"),
        N_("cpu: asked -> advised"),
    )
    for name in names:
        table.add_column(_(name), justify="left" if name == "step" else "right")
    for a in advice:
        table.add_row(
            a.step,
            str(a.attempts),
            f"{_bytes(a.requested_memory)} -> {_bytes(a.memory)}",
            f"{format_cpu(a.requested_cpu) if a.requested_cpu else '-'} -> "
            f"{format_cpu(a.cpu) if a.cpu else '-'}",
        )
    return table


def _open(settings: Settings | None = None) -> Any:
    from usina.compose.components import open_stores

    return open_stores(settings or Settings.from_env())


def advise(
    pipeline: str,
    runs: Annotated[int, typer.Option(help="recent runs of the pipeline to learn from")] = 20,
    margin: Annotated[float, typer.Option(help="safety margin on top of the percentile")] = 0.15,
    output: OutputOpt = Output.text,
) -> None:
    """What each step of PIPELINE should request (memory, CPU), from its recent attempts'
    profiles: the 95th percentile of their peaks plus a margin; and what looked wasteful."""
    from usina.monitoring.advice import AdviceSettings, advise_pipeline

    comps = _open()
    try:
        advice = advise_pipeline(
            comps.metadata, comps.artifacts, pipeline, AdviceSettings(runs=runs, margin=margin)
        )
    finally:
        comps.close()
    if output is Output.json:
        print_json(out, [a.to_json() for a in advice])
        return
    if not advice:
        out.print(
            _(
                "no attempts of pipeline {pipeline!r} in its last {runs} runs; "
                "run it first (usina run FILE), or check the name with usina runs ls"
            ).format(pipeline=pipeline, runs=runs)
        )
        return
    out.print(advice_table(advice))
    warning, oom = _("warning"), _("oom")
    for a in advice:
        out.print(f"\n[bold]{a.step}[/]: {a.explanation}")
        for f in a.findings:
            out.print(f"  [yellow]{warning}[/] {f.kind}: {f.message}")
        for o in a.ooms:
            out.print(f"  [red]{oom}[/] {o.explanation}")


# -- usina runs top ---------------------------------------------------------------------------


def top_table(
    run_id: str, rows: Sequence[tuple[AttemptRecord, AttemptProfile]], now: float
) -> Table:
    """The running attempts of a run with their latest sample."""
    title = _("{run}: running attempts").format(run=run_id)
    table = Table(title=title, title_justify="left")
    names = (
        N_("step"), N_("attempt"), N_("running"), N_("cpu"), N_("memory"), N_("of request"),
        N_("gpu"), N_("sampled"),
    )  # fmt: skip
    for name in names:
        table.add_column(_(name), justify="left" if name == "step" else "right")
    for a, found in rows:
        profiles: list[tuple[str, Profile | None]] = [*_rows(found)] or [("", None)]
        for label, p in profiles:
            cpu = mem = gpu = None
            share = sampled = "-"
            if p is not None and p.t:
                cpu = p.series.get("cpu", (None,))[-1]
                mem = p.series.get("memory", (None,))[-1]
                utils = [g.util[-1] for g in p.gpus if g.util]
                gpu = sum(utils) / len(utils) if utils else None
                req = p.requests.get("memory")
                share = f"{mem / req:.0%}" if mem is not None and req else "-"
                sampled = f"{format_duration(max(0.0, now - (p.started_at + p.t[-1])))} ago"
            table.add_row(
                a.node + (f" ({label})" if label else ""),
                str(a.number),
                format_duration(max(0.0, now - a.started_at)),
                _cores(cpu),
                _bytes(mem),
                share,
                _pct(gpu),
                sampled,
            )
    return table


def runs_top(
    run_id: str,
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="print one table and exit")] = False,
    output: OutputOpt = Output.text,
) -> None:
    """The running attempts of RUN_ID with what they use now (from their profiles, written
    every few seconds while they run); refreshes until the run ends or Ctrl-C."""
    from rich.live import Live

    comps = _open()
    try:

        def snapshot() -> tuple[bool, list[tuple[AttemptRecord, AttemptProfile]]]:
            run = comps.metadata.get_run(run_id)
            running = [
                a for a in comps.metadata.get_attempts(run_id) if a.state is AttemptState.RUNNING
            ]
            return run.state.finished, [(a, load_profile(comps.artifacts, a.id)) for a in running]

        finished, rows = snapshot()
        if output is Output.json:
            print_json(
                out,
                {
                    "run": run_id,
                    "finished": finished,
                    "attempts": profiles_json(comps.artifacts, [a for a, _ in rows]),
                },
            )
            return
        if once or finished or not out.is_terminal:
            out.print(top_table(run_id, rows, time.time()))
            if finished:
                out.print(_("run {run} has finished; see usina runs show {run}").format(run=run_id))
            return
        with Live(top_table(run_id, rows, time.time()), console=out, auto_refresh=False) as live:
            while not finished:
                time.sleep(interval)
                finished, rows = snapshot()
                live.update(top_table(run_id, rows, time.time()), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        comps.close()
