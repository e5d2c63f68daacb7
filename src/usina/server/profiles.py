"""Attempts' resource profiles on the server: a JSON endpoint and the run page's charts.

``GET /api/v1/runs/{run_id}/profiles`` returns every attempt's profile records (the series and
their summary, ``usina.engine.profiles``), for tools and for a page that refreshes them.
``attempt_charts`` turns the same records into small server-drawn SVG charts (CPU, memory,
GPU utilisation over the attempt's time, one line per rank or GPU) with the request and the
limit as horizontal lines; ``templates/profile_charts.html`` draws them inside each attempt of
the run page. The app registers the router (``app.include_router(profiles.router)``) and the
run page passes ``profiles=attempt_charts(ctx.artifacts, attempts)`` to its template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request

from usina.engine.profiles import AttemptProfile, Profile, load_profile
from usina.server.api import visible_run
from usina.server.auth import CurrentPrincipal  # noqa: TC001 - FastAPI reads it at run time
from usina.server.schemas import Problem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usina.engine.ports import ArtifactStore
    from usina.engine.records import AttemptRecord
    from usina.server.context import ServerContext

router = APIRouter(prefix="/api/v1")

W, H, PAD, LEFT = 420, 130, 8, 44  # chart size; LEFT leaves room for the axis labels
GI, MI = 2**30, 2**20
__all__ = ["attempt_charts", "router", "run_profiles"]


RunIdPath = Annotated[str, Path(min_length=1, max_length=200)]


@router.get(
    "/runs/{run_id}/profiles",
    tags=["runs"],
    responses={code: {"model": Problem} for code in (401, 404)},
)
def run_profiles(
    request: Request, principal: CurrentPrincipal, run_id: RunIdPath
) -> dict[str, Any]:
    """Every attempt's resource profile: CPU, memory, I/O and GPU series, their peak / p95 /
    mean, and the attempt's requests and limits (empty ``profiles`` when none was recorded)."""
    ctx: ServerContext = request.app.state.ctx
    visible_run(ctx, principal, run_id)
    items = []
    for a in ctx.metadata.get_attempts(run_id):
        found = load_profile(ctx.artifacts, a.id)
        items.append(
            {
                "attempt": a.id,
                "node": a.node,
                "number": a.number,
                "state": a.state.value,
                "profiles": [p.to_json() for p in found.profiles],
            }
        )
    return {"run": run_id, "attempts": items}


def _bytes(n: float) -> str:
    return f"{n / GI:.1f}Gi" if n >= GI else f"{n / MI:.0f}Mi"


def _chart(
    kind: str,
    title: str,
    lines: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    request: float | None,
    limit: float | None,
    top: float | None = None,
    fmt: Any = str,
) -> dict[str, Any] | None:
    """One chart: ``lines`` are (label, t, values); request and limit become horizontal lines."""
    lines = [(label, t, v) for label, t, v in lines if t and v and len(t) == len(v)]
    if not lines:
        return None
    end = max(t[-1] for _, t, _ in lines) or 1.0
    peak = max(max(v) for _, _, v in lines)
    ceiling = top or max(peak, request or 0.0, limit or 0.0) * 1.1 or 1.0

    def y(value: float) -> float:
        return H - PAD - min(value, ceiling) / ceiling * (H - 2 * PAD)

    def x(at: float) -> float:
        return LEFT + at / end * (W - LEFT - PAD)

    series = [
        {
            "label": label,
            "points": " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t, v, strict=True)),
            "peak": fmt(max(v)),
        }
        for label, t, v in lines
    ]
    marks = []
    for name, value in (("request", request), ("limit", limit)):
        if value:
            marks.append({"name": name, "y": round(y(value), 1), "label": f"{name} {fmt(value)}"})
    if request and limit and request == limit:  # usina's memory: one line, both names
        marks = [{"name": "limit", "y": marks[0]["y"], "label": f"request = limit {fmt(limit)}"}]
    return {
        "kind": kind,
        "title": title,
        "w": W,
        "h": H,
        "left": LEFT,
        "pad": PAD,
        "series": series,
        "marks": marks,
        "top": fmt(ceiling),
        "peak": fmt(peak),
        "seconds": end,
    }


def charts_of(found: AttemptProfile) -> list[dict[str, Any]]:
    """The CPU, memory and GPU charts of one attempt (empty without a profile)."""
    profiles: list[Profile] = list(found.profiles)
    if not profiles:
        return []

    def label(p: Profile) -> str:
        return f"rank {p.rank}" if p.rank is not None else "process tree"

    first = profiles[0]
    charts = [
        _chart(
            "cpu",
            "CPU (cores)",
            [(label(p), p.t, p.series.get("cpu", ())) for p in profiles],
            request=first.requests.get("cpu"),
            limit=first.limits.get("cpu"),
            fmt=lambda v: f"{v:.2f}",
        ),
        _chart(
            "memory",
            f"memory ({first.memory_source})",
            [(label(p), p.t, p.series.get("memory", ())) for p in profiles],
            request=first.requests.get("memory"),
            limit=first.limits.get("memory"),
            fmt=_bytes,
        ),
        _chart(
            "gpu",
            "GPU utilisation (%)",
            [
                (
                    f"{label(p)} GPU {g.index}" if len(profiles) > 1 else f"GPU {g.index}",
                    p.t,
                    g.util,
                )
                for p in profiles
                for g in p.gpus
            ],
            request=None,
            limit=None,
            top=100.0,
            fmt=lambda v: f"{v:.0f}%",
        ),
    ]
    return [c for c in charts if c is not None]


def attempt_charts(
    artifacts: ArtifactStore, attempts: Sequence[AttemptRecord]
) -> dict[str, list[dict[str, Any]]]:
    """Each attempt's charts by attempt id, for ``templates/profile_charts.html``."""
    return {a.id: charts_of(load_profile(artifacts, a.id)) for a in attempts}
