"""How runs look on a terminal (Rich) and to tools (JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from usina.engine.policy import advice_for
from usina.engine.records import (  # noqa: F401 - also used by callers
    WHY_EVENTS,
    AttemptRecord,
    RunRecord,
    StepRecord,
    StepState,
    step_reasons,
)
from usina.i18n import N_, _, reword, translate

_STYLE = {
    StepState.PENDING: "dim",
    StepState.BACKOFF: "yellow",
    StepState.RUNNING: "cyan",
    StepState.SUCCEEDED: "green",
    StepState.FAILED: "red",
    StepState.SKIPPED: "dim",
    StepState.CANCELLED: "magenta",
}


#: The states a run or step shows (``StepState``, ``RunState`` and "cached"), marked for the
#: catalogue: records keep the English value, the terminal shows ``state_name``.
STATE_NAMES = (
    N_("pending"),
    N_("backoff"),
    N_("running"),
    N_("succeeded"),
    N_("failed"),
    N_("skipped"),
    N_("cancelled"),
    N_("cached"),
)


def state_name(state: str) -> str:
    """A run's or step's state in the reader's language (as is in English)."""
    return translate(state)


#: The texts the engine stores in English (a step's error, an attempt's message) that the CLI
#: shows in the reader's language: the same ``N_`` messages as where they are made
#: (engine/policy.py's retry decisions, engine/failures.py's ends of a process), matched
#: back (``usina.i18n.reword``). tests/unit/test_i18n.py checks that none is missing.
STORED_TEXTS = (
    N_("cancelled by a user"),
    N_("no node can run it as asked"),
    N_("gave up after {count} disruptions (retry budget {budget})"),
    N_("gave up after {count} {failure} failures (retry budget {budget})"),
    N_("out of memory at the cap max_memory={cap}"),
    N_("retry {count}/{budget} with memory {before} -> {after}"),
    N_("retry {count}/{budget} after {failure}"),
    N_("was killed by {signal} from outside"),
    N_("killed by SIGKILL near its memory limit"),
    N_(
        "killed with SIGKILL (exit 137) without a disruption: most likely the memory "
        "limit (the kernel's OOM killer), else a liveness kill"
    ),
    N_("killed by signal {signal}"),
    N_(
        "the step raised an exception (exit {code}); the traceback is in the attempt's "
        "error record and log"
    ),
    N_("the step raised MemoryError (exit {code})"),
    N_(
        "the usina runtime could not load the task or its inputs, or write its outputs "
        "(exit {code})"
    ),
    N_("a rank of the gang was killed from outside (exit {code}); the gang was stopped"),
    N_("it ended without an exit code"),
    N_("exited with code {code}"),
    # engine.py and steps.py (f-strings there, copied here: a change to one of them leaves
    # that text in English): a run's headline; a step skipped or failed before any attempt
    N_("step '{step}' failed ({error})"),
    N_("upstream step '{step}' failed"),
    N_("upstream step '{step}' skipped"),
    N_("upstream step '{step}' cancelled"),
    N_("the map input '{input}' from step '{source}': {problem}"),
    N_(
        "the map input '{input}' from step '{source}' has {count} items, more than "
        "max_width={width}; raise max_width in {step}.map()"
    ),
)

#: Why a step ran instead of coming from the cache (its ``step_cache_miss``/``step_rerun``
#: event, made by engine/cache.py's ``miss_reason`` and the engine's resume), as stored.
WHY_TEXTS = (
    N_("first run"),
    N_("no cached result"),
    N_("no cached result (its last run did not succeed)"),
    N_("upstream step '{step}' runs again"),
    N_("its input is missing or corrupt"),
    N_("its cache key changed"),
    N_("not run: past the end of its map's list ({reason})"),
)
#: The parts of ``miss_reason``'s "<part> and <part> changed".
CHANGED_PARTS = (
    N_("code of the step"),
    N_("code of {names}"),
    N_("data file {names}"),
    N_("param {names}"),
    N_("input {names}"),
    N_("env var {names}"),
    N_("the Python environment (installed packages)"),
    N_("cache_version"),
    N_("the number of outputs"),
)


def stored_text(text: str) -> str:
    """A text the engine stored in English, in the reader's language where it is one of
    ``STORED_TEXTS`` (a value inside one too: a run's headline holds its step's error): a
    step's error is ``"<failure class>: <reason>"``, an attempt's message one such text per
    line. Anything else (a traceback, the step's own exception) stays as it is."""
    if "\n" in text:
        return "\n".join(stored_text(line) for line in text.split("\n"))
    head, sep, rest = text.partition(": ")
    if sep and head.replace("_", "").isalpha() and head.islower():
        return f"{head}: {stored_text(rest)}"
    return reword(text, STORED_TEXTS, value=stored_text)


def why_text(why: str) -> str:
    """Why a step ran (``step_reasons``), in the reader's language where usina wrote it."""
    if why.startswith("resume: "):
        return _("resume: {why}").format(why=why_text(why.removeprefix("resume: ")))
    if why in STATE_NAMES:  # a resume runs a failed, skipped or cancelled step again
        return state_name(why)
    if why.endswith(" changed") and why not in WHY_TEXTS:
        parts = [reword(p, CHANGED_PARTS) for p in why.removesuffix(" changed").split(" and ")]
        return _("{what} changed").format(what=" {} ".format(_("and")).join(parts))
    return reword(why, WHY_TEXTS)


def _duration(start: float | None, end: float | None) -> float | None:
    if start is None:
        return None
    return max(0.0, (end or time.time()) - start)


def format_duration(seconds: float | None) -> str:
    """ "12.3s" under a minute, else "4m05s"; "" for no duration."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def ordered(run: RunRecord, steps: Sequence[StepRecord]) -> list[StepRecord]:
    """Steps in the plan's (topological) order, the order people read a pipeline in."""
    index = {node["id"]: i for i, node in enumerate(run.plan.get("nodes", []))}
    return sorted(steps, key=lambda s: index.get(s.node, len(index)))


def steps_table(run: RunRecord, steps: Sequence[StepRecord]) -> Table:
    """The steps table of a run being driven here (``run_table`` of its JSON)."""
    return run_table(run_json(run, steps))


def _step_style(state: str) -> str:
    try:
        return _STYLE[StepState(state)]
    except ValueError:
        return "dim"  # "cached" (the server's name for a step taken from the cache)


def run_table(run: dict[str, Any]) -> Table:
    """A run's steps from its JSON (``run_json`` or the server's): the same table whether the
    run was read locally or from a server."""
    title = f"{run['pipeline']} · {run['id']} · {state_name(run['state'])}"
    table = Table(title=title, title_justify="left")
    table.add_column(_("step"))
    table.add_column(_("state"))
    table.add_column(_("attempt"), justify="right")
    table.add_column(_("duration"), justify="right")
    table.add_column(_("note"), overflow="fold")
    for s in run["steps"]:
        cached = bool(s.get("cached"))
        label = state_name("cached" if cached else s["state"])
        took = s["duration"]
        if took is None and s["state"] == "running" and s.get("started_at"):
            took = _duration(s["started_at"], None)  # so far
        table.add_row(
            s["node"],
            f"[{_step_style(s['state'])}]{label}[/]",
            str(s["attempts"] or ""),
            "" if cached else format_duration(took),
            stored_text(s["error"]) if s["error"] else _why_note(s),
        )
    return table


def _why_note(s: dict[str, Any]) -> str:
    why = s.get("why")
    if not why or s.get("cached"):
        return ""
    if why.startswith("not run"):
        return why_text(why)
    return _("ran: {why}").format(why=why_text(why))


def step_line(s: dict[str, Any]) -> str:
    """A step's progress line from its JSON: ``  train: failed attempt 2 12.3s (reason)``."""
    cached = bool(s.get("cached"))
    label = state_name("cached" if cached else s["state"])
    extra = " " + _("attempt {n}").format(n=s["attempts"]) if s["attempts"] > 1 else ""
    took = "" if cached or s["duration"] is None else format_duration(s["duration"])
    when = f" {took}" if took else ""
    note = f" ({stored_text(s['error'])})" if s["error"] else ""
    return f"  {s['node']}: {label}{extra}{when}{note}"


def run_summary(run: dict[str, Any]) -> str:
    """``run ID STATE in 1m05s: 2 ran, 1 from cache; cached: a; failed: b`` from run JSON."""
    cached = [s["node"] for s in run["steps"] if s.get("cached")]
    ran = [
        s["node"]
        for s in run["steps"]
        if s["state"] in ("succeeded", "failed") and not s.get("cached") and s["attempts"]
    ]
    took = format_duration(run["duration"])
    parts = [
        _("run {run} {state} in {took}: {ran} ran, {cached} from cache").format(
            run=run["id"],
            state=state_name(run["state"]),
            took=took,
            ran=len(ran),
            cached=len(cached),
        )
    ]
    if cached:
        parts.append(_("cached: {steps}").format(steps=", ".join(cached)))
    failed = [s["node"] for s in run["steps"] if s["state"] == "failed"]
    if failed:
        parts.append(_("failed: {steps}").format(steps=", ".join(failed)))
    return "; ".join(parts)


def runs_table(items: Sequence[dict[str, Any]]) -> Table:
    """``usina runs ls``: one row per run, from run JSON (local or the server's)."""
    table = Table()
    for col in (N_("run"), N_("pipeline"), N_("state"), N_("created"), N_("duration")):
        table.add_column(translate(col))
    for r in items:
        table.add_row(
            r["id"],
            r["pipeline"],
            state_name(r["state"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"])),
            format_duration(r["duration"]) if r["finished_at"] else "",
        )
    return table


def summary_line(run: RunRecord, steps: Sequence[StepRecord]) -> str:
    """``run_summary`` of a run driven here."""
    return run_summary(run_json(run, steps))


def run_json(
    run: RunRecord,
    steps: Sequence[StepRecord],
    attempts: Sequence[AttemptRecord] | None = None,
    reasons: dict[str, str] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "pipeline": run.pipeline,
        "project": run.project,
        "state": run.state.value,
        "params": run.params,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration": _duration(run.started_at, run.finished_at) if run.finished_at else None,
        "error": run.error,
        "steps": [
            {
                "node": s.node,
                "state": s.state.value,
                "cached": s.cached,
                "attempts": s.attempts,
                "started_at": s.started_at,
                "duration": _duration(s.started_at, s.finished_at) if s.finished_at else None,
                "error": s.error,
                "metrics": s.metrics,
                "outputs": [o.to_json() for o in s.outputs],
                "why": None if s.cached else (reasons or {}).get(s.node),
            }
            for s in ordered(run, steps)
        ],
    }
    if attempts is not None:
        data["attempts"] = [attempt_json(a) for a in attempts]
    return data


def attempt_json(a: AttemptRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "node": a.node,
        "number": a.number,
        "state": a.state.value,
        "failure_class": a.failure_class.value if a.failure_class else None,
        "exit_code": a.exit_code,
        "reason": a.reason,
        "message": a.message,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "resources": a.resources,
        "gpu_seconds": a.gpu_seconds,
    }


def print_why(console: Console, report: dict[str, Any]) -> None:
    """``usina runs why`` for people, in the reader's language: each failed attempt's class,
    evidence and what to do (the report itself, ``--output json``, stays in English)."""
    error = report["error"]
    head = _("run {run}: {state}").format(run=report["run"], state=state_name(report["state"]))
    console.print(head + (f" — {stored_text(error)}" if error else ""))
    if not report["failed_attempts"]:
        console.print(_("no attempt failed"))
        return
    for item in report["failed_attempts"]:
        attempt = _("attempt {n}").format(n=item["number"])
        code = _("exit {code}").format(code=item["exit_code"])
        console.print(
            f"\n[bold]{item['node']}[/] {attempt}: "
            f"[red]{item['failure_class']}[/] ({code}, {item['reason']})"
        )
        if item["message"]:
            console.print(stored_text(item["message"].rstrip()[-3000:]), markup=False)
        if item["log_tail"]:
            console.print(_("last log lines:"), style="dim")
            for line in item["log_tail"]:
                console.print(f"  {line}", markup=False)
        for line in item.get("memory_curve") or []:
            console.print(f"  {reword(line, _curve_texts())}", markup=False)
        console.print(_("what to do: {advice}").format(advice=why_advice(item, report["run"])))


def _curve_texts() -> tuple[str, ...]:
    from usina.cli.profile_cmds import CURVE_TEXTS  # it imports this module

    return CURVE_TEXTS


def why_advice(item: dict[str, Any], run_id: str) -> str:
    """What to do about a failed attempt (its JSON), in the reader's language: from its
    failure class (a local report and a server's say the same), else the report's own text."""
    said = advice_for(item["failure_class"], run_id, translate)
    return said if said is not None else str(item.get("advice") or "")


def print_json(console: Console, data: object) -> None:
    console.print_json(json.dumps(data, default=str))


class Progress:
    """Shows a run's steps while it is driven: a live table on a terminal, lines elsewhere."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self.live_enabled = live
        self._seen: dict[str, tuple[str, int]] = {}
        self._live: Any = None

    def __enter__(self) -> Progress:
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(console=self.console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, run: RunRecord, steps: Sequence[StepRecord]) -> None:
        if self._live is not None:
            self._live.update(steps_table(run, steps))
            return
        # Only the steps that changed since the last pass are made into lines (a pass of a
        # long pipeline changes one or two of them).
        changed = []
        for record in steps:
            key = ("cached" if record.cached else record.state.value, record.attempts)
            if self._seen.get(record.node) != key:
                self._seen[record.node] = key
                changed.append(record)
        if not changed:
            return
        for step in run_json(run, changed)["steps"]:
            if step["state"] != StepState.PENDING.value:
                self.console.print(step_line(step), highlight=False)


def _num(value: Any, fmt: str = "{:.2f}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def kpi_table(report: dict[str, Any], period: str) -> Table:
    """``usina kpi`` for people: one row per KPI, then one per registered model."""
    runs, rec, gpu, wait = report["runs"], report["recovery"], report["gpu"], report["queue_wait"]
    table = Table(title=_("usina KPIs, runs submitted in the last {period}").format(period=period))
    table.add_column(_("KPI"))
    table.add_column(_("value"), justify="right")
    table.add_row(
        _("runs finished (ok / failed / cancelled)"),
        f"{runs['finished']} ({runs['succeeded']} / {runs['failed']} / {runs['cancelled']})",
    )
    table.add_row(_("success rate"), _num(runs["success_rate"], "{:.1%}"))
    table.add_row(
        _("mean time to recovery"),
        _("{mttr} ({recovered} recovered, {open} open)").format(
            mttr=format_duration(rec["mttr_seconds"]) or "-",
            recovered=rec["recovered"],
            open=rec["open"],
        ),
    )
    table.add_row(_("GPU-hours used"), _num(gpu["used_hours"]))
    table.add_row(
        _("GPU-hours wasted"),
        f"{_num(gpu['wasted_hours'])} ({_num(gpu['wasted_share'], '{:.1%}')})",
    )
    for klass, hours in gpu["wasted_hours_by_class"].items():
        table.add_row(
            "  " + _("wasted by {failure_class}").format(failure_class=klass), _num(hours)
        )
    idle = report.get("gpu_idle")  # with the artifact store: from the attempts' profiles
    if idle is not None:
        table.add_row(
            _("GPU-hours idle (of profiled)"),
            _("{idle} of {profiled} ({share})").format(
                idle=_num(idle["idle_hours"]),
                profiled=_num(idle["profiled_hours"]),
                share=_num(idle["idle_share"], "{:.1%}"),
            ),
        )
        for row in idle["by_step"]:
            if row["idle_hours"] > 0:
                where = f"{row['team']} / {row['pipeline']} / {row['step']}"
                table.add_row(
                    "  " + _("idle in {where}").format(where=where), _num(row["idle_hours"])
                )
    table.add_row(
        _("queue wait p50 / p99"),
        f"{format_duration(wait['p50_seconds']) or '-'} / "
        f"{format_duration(wait['p99_seconds']) or '-'}",
    )
    models = report.get("models")
    if models is not None and not models["available"]:
        table.add_row(_("models (MLflow)"), _("unavailable: {error}").format(error=models["error"]))
    for m in (models or {}).get("models", []):
        gate = ", ".join(f"{k}={v}" for k, v in m["champion_gate"].items() if k != "gate.reason")
        said = _("champion v{champion}, {new} new, {promoted} promoted").format(
            champion=m["champion"] or "-", new=m["new_versions"], promoted=m["promoted"]
        )
        table.add_row(
            _("model {model}").format(model=m["name"]), said + (f" ({gate})" if gate else "")
        )
    return table


def terminal_log(text: str) -> str:
    """A step's output as the terminal may show it: control sequences other than colour
    removed (a step cannot clear the screen or retitle the window), see ``usina.logtext``."""
    from usina.logtext import terminal_safe

    return terminal_safe(text)
