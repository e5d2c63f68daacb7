"""The web UI: server-rendered pages (Jinja2) with a little JavaScript for live status.

Pages read through the same stores and permission checks as the API. The token is kept in an
HttpOnly, SameSite=Strict cookie set by the sign-in form. The API never takes the cookie for a
change (see ``usina.server.auth``); the UI's own actions (cancel, resume, rerun, sign out) are
forms that carry a CSRF token besides the cookie: an HMAC of the session's token, so a page on
another site cannot forge it and every replica can check it without shared state. A post
without a valid one is refused (403) and recorded like other denials.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import hmac
import json
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from pydantic import ValidationError

from usina.engine.policy import advice_for
from usina.engine.records import AttemptState, RunState
from usina.errors import NotFoundError, StateError, UsinaError
from usina.i18n import error_text, translate
from usina.server import auth, i18n
from usina.server.api import attempt_log, visible_run
from usina.server.dag import NODE_H, NODE_W, layout
from usina.server.denials import HiddenRunError, client_of, token_id_of
from usina.server.profiles import attempt_charts
from usina.server.routes import models as model_routes
from usina.server.routes import runs as run_routes
from usina.server.routes import schedules as schedule_routes
from usina.server.schemas import (
    AliasRequest,
    AttemptOut,
    RunDetail,
    StepOut,
    SubmitRequest,
    attempt_out,
    run_detail,
    summary_from_row,
)
from usina.stores.platform import (
    ALL_PROJECTS,
    Principal,
    Role,
    decode_cursor,
    encode_cursor,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from usina.server.context import ServerContext

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
LOG_LINES = 60
HEADLINE_LINES = 5
PAGE = 50


def _fmt_time(ts: float | None) -> Markup:
    """A ``<time>`` in UTC; app.js shows it in the viewer's zone and keeps UTC in the title."""
    if not ts:
        return Markup("")
    utc = time.gmtime(ts)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        time.strftime("%Y-%m-%dT%H:%M:%SZ", utc),
        shown := time.strftime("%Y-%m-%d %H:%M:%S UTC", utc),
        shown,
    )


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


templates.env.filters["when"] = _fmt_time
templates.env.filters["took"] = _fmt_duration
templates.env.filters["iso_when"] = lambda iso: _fmt_time(
    calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")) if iso else None
)
templates.env.filters["utc"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class _Redirect(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def _lang(request: Request) -> str:
    return i18n.negotiate(
        request.query_params.get("lang"),
        request.cookies.get(i18n.COOKIE),
        request.headers.get("accept-language"),
    )


def _principal(request: Request) -> Principal:
    ctx: ServerContext = request.app.state.ctx
    token = request.cookies.get(auth.COOKIE)
    principal = ctx.tokens.get(ctx, token) if token else None
    if principal is None:
        raise _Redirect("/ui/login?next=" + quote(request.url.path))
    return principal


def csrf_token(session: str) -> str:
    """The CSRF token of a signed-in browser: an HMAC keyed by its session's API token."""
    return hmac.new(session.encode(), b"usina-ui-csrf", hashlib.sha256).hexdigest()


def _render(
    request: Request, template: str, principal: Principal | None, **context: Any
) -> Response:
    lang = _lang(request)
    session = request.cookies.get(auth.COOKIE)
    other = "en" if lang == "pt-BR" else "pt-BR"
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": i18n.translator(lang),
            "lang": lang,
            "toggle": f"{request.url.path}?lang={other}",
            "principal": principal,
            "csrf": csrf_token(session) if session and principal is not None else None,
            "state_words": json.dumps(
                {k[6:]: v for k, v in i18n.translator(lang).items() if k.startswith("state.")}
            ),
            **context,
        },
    )
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True)
    return response


def _page(request: Request, build: Any) -> Response:
    try:
        return build()  # type: ignore[no-any-return]
    except _Redirect as r:
        return RedirectResponse(r.url, status_code=303)
    except NotFoundError as exc:
        if isinstance(exc, HiddenRunError):
            request.app.state.denials.record(
                request.app.state.ctx,
                "other_project",
                client=client_of(request),
                token_id=exc.token_id,
                project=exc.project,
                target=exc.run_id,
                path=request.url.path,
            )
        principal = None
        with contextlib.suppress(_Redirect):
            principal = _principal(request)
        said = error_text(exc, _lang(request))
        response = _render(request, "error.html", principal, message=said)
        response.status_code = 404
        return response


# -- sign in -------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/ui/runs") -> Response:
    return _render(request, "login.html", None, next=_safe_next(next), failed=False)


def _safe_next(target: str) -> str:
    return target if target.startswith("/ui/") and "//" not in target else "/ui/runs"


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    form = parse_qs((await request.body()).decode(errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/ui/runs"])[0])
    checked = await anyio.to_thread.run_sync(ctx.platform.check_token, token) if token else None
    if checked is None or checked.principal is None:
        await anyio.to_thread.run_sync(
            partial(
                request.app.state.denials.record,
                ctx,
                "ui_login",
                client=client_of(request),
                token_id=checked.token_id if checked is not None else None,
                verdict=checked.verdict.value if checked is not None else "empty",
            )
        )
        response = _render(request, "login.html", None, next=target, failed=True)
        response.status_code = 401
        return response
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(auth.COOKIE, token, httponly=True, samesite="strict", max_age=7 * 86400)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    refused = await _refused(request)
    if refused is not None:
        return refused
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(auth.COOKIE)
    return response


async def _refused(request: Request) -> Response | None:
    """403 (and a denial in the audit log) unless the form's CSRF token matches the session;
    None when it does. Reads the form."""
    form = parse_qs((await request.body()).decode(errors="replace"))
    session = request.cookies.get(auth.COOKIE) or ""
    sent = (form.get("csrf") or [""])[0]
    if session and hmac.compare_digest(sent.encode(), csrf_token(session).encode()):
        return None
    ctx: ServerContext = request.app.state.ctx
    await anyio.to_thread.run_sync(
        partial(
            request.app.state.denials.record,
            ctx,
            "csrf",
            client=client_of(request),
            token_id=token_id_of(session) if session else None,
            target=request.url.path,
            method=request.method,
            sent=bool(sent),
        )
    )
    principal = None
    with contextlib.suppress(_Redirect):
        principal = _principal(request)
    response = _render(request, "error.html", principal, message=_words(request)["csrf_refused"])
    response.status_code = 403
    return response


def _words(request: Request) -> dict[str, str]:
    return i18n.translator(_lang(request))


# -- runs ----------------------------------------------------------------------------------


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    state: str | None = None,
    pipeline: str | None = None,
    project: str | None = None,
    cursor: str | None = None,
) -> Response:
    def build() -> Response:
        principal = _principal(request)
        ctx: ServerContext = request.app.state.ctx
        visible = principal.visible_projects()
        if project:
            allowed = principal.can(project, Role.VIEWER)
            visible = frozenset({project}) if allowed else frozenset()
        try:
            after = decode_cursor(cursor) if cursor else None
        except ValueError:
            after = None
        wanted = RunState(state) if state in {s.value for s in RunState} else None
        rows = ctx.platform.runs_page(
            projects_=visible,
            limit=PAGE + 1,
            after=after,
            state=wanted,
            pipeline=pipeline or None,
        )
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        nxt = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        filters = {
            k: v for k, v in {"state": state, "pipeline": pipeline, "project": project}.items() if v
        }
        return _render(
            request,
            "runs.html",
            principal,
            runs=[summary_from_row(r) for r in rows],
            next_cursor=nxt,
            filters=filters,
            states=[s.value for s in RunState],
            first_page=cursor is None,
        )

    return _page(request, build)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> Response:
    def build() -> Response:
        principal = _principal(request)
        ctx: ServerContext = request.app.state.ctx
        run = visible_run(ctx, principal, run_id)
        detail = run_detail(run, ctx.metadata.get_steps(run_id))
        attempts = ctx.metadata.get_attempts(run_id)
        by_step: dict[str, list[dict[str, Any]]] = {}
        for a in attempts:
            text = attempt_log(ctx, a)
            lines = text.splitlines()[-LOG_LINES:]
            by_step.setdefault(a.node, []).append(
                {
                    "a": _advice_in_language(attempt_out(a), run_id, _lang(request)),
                    "lines": lines,
                    "running": a.state is AttemptState.RUNNING,
                    "follow": f"/api/v1/runs/{quote(run_id)}/steps/{quote(a.node)}/logs"
                    f"?attempt={a.number}&follow=true",
                    "log": f"/api/v1/runs/{quote(run_id)}/steps/{quote(a.node)}/logs"
                    f"?attempt={a.number}",
                }
            )
        graph = layout(
            run.plan.get("nodes", []), {s.node: (s.state, s.attempts) for s in detail.steps}
        )
        return _render(
            request,
            "run.html",
            principal,
            run=detail,
            headline=_headline(detail, by_step, i18n.translator(_lang(request))),
            attempts=by_step,
            graph=graph,
            node_w=NODE_W,
            node_h=NODE_H,
            events=ctx.metadata.list_events(run_id)[-50:],
            finished=run.state.finished,
            can_edit=principal.can(run.project, Role.EDITOR),
            can_rerun=ctx.pipelines.find(run.pipeline) is not None,
            resumable=run.state.finished and run.state is not RunState.SUCCEEDED,
            profiles=attempt_charts(ctx.artifacts, attempts),
        )

    return _page(request, build)


def _advice_in_language(attempt: AttemptOut, run_id: str, lang: str) -> AttemptOut:
    """The attempt with its advice in the page's language (the API's JSON keeps the English)."""
    if attempt.advice is None:
        return attempt
    said = advice_for(attempt.failure_class, run_id, partial(translate, lang=lang))
    return attempt.model_copy(update={"advice": said})


def _headline(
    run: RunDetail, by_step: dict[str, list[dict[str, Any]]], t: dict[str, str]
) -> dict[str, Any] | None:
    """What a failed run's page opens with: the step that failed first, its failure class, the
    first lines of its error (the exception before the traceback), the advice and where its
    log is."""
    if run.state != RunState.FAILED.value:
        return None
    failed = [s for s in run.steps if s.state == AttemptState.FAILED.value]
    if not failed:
        return {"title": None, "lines": (run.error or "").splitlines()[:HEADLINE_LINES]}
    step = min(failed, key=lambda s: s.finished_at or float("inf"))
    items = by_step.get(step.node, [])
    attempt = items[-1]["a"] if items else None
    text = (attempt.message if attempt is not None else None) or step.error or ""
    lines = text.splitlines()
    cut = next((i for i, line in enumerate(lines) if line.startswith("Traceback")), len(lines))
    title = Markup(escape(t["step_failed"])).format(step=Markup("<b>{}</b>").format(step.node))
    return {
        "title": title,
        "step": step.node,
        "failure_class": attempt.failure_class if attempt is not None else None,
        "lines": (lines[:cut] or lines)[:HEADLINE_LINES],
        "advice": attempt.advice if attempt is not None else None,
        "anchor": f"#attempt-{attempt.id}" if attempt is not None else None,
        "log": items[-1]["log"] if items else None,
    }


# -- actions -------------------------------------------------------------------------------
# Each calls the API's route function, so permissions, state checks and the audit entry are
# the API's own.


@router.post("/runs/{run_id}/{action}", response_class=HTMLResponse)
async def run_action(request: Request, run_id: str, action: str) -> Response:
    refused = await _refused(request)
    if refused is not None:
        return refused

    def act() -> str:
        principal = _principal(request)
        ctx: ServerContext = request.app.state.ctx
        if action == "cancel":
            run_routes.cancel_run(request, principal, run_id)
            return run_id
        if action == "resume":
            run_routes.resume_run(request, principal, run_id)
            return run_id
        if action == "rerun":
            run = visible_run(ctx, principal, run_id)
            body = SubmitRequest(
                pipeline=run.pipeline,
                params=run.params,
                project=run.project,
                labels=dict(run.labels),
            )
            return run_routes.submit_run(request, principal, body).id
        raise NotFoundError(f"no action {action!r}: cancel, resume or rerun")

    return await _act(request, act)


@router.post("/pipelines/{name}/submit", response_class=HTMLResponse)
async def submit_action(request: Request, name: str) -> Response:
    """A run of ``name`` with the form's parameters (``p.<param>``; empty means the default)."""
    refused = await _refused(request)
    if refused is not None:
        return refused
    form = parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True)

    def act() -> str:
        body = SubmitRequest(
            pipeline=name,
            params={k[2:]: v[0] for k, v in form.items() if k.startswith("p.") and v[0] != ""},
            project=(form.get("project") or ["default"])[0] or "default",
        )
        principal = _principal(request)
        return run_routes.submit_run(request, principal, body).id

    return await _act(request, act)


@router.post("/models/{name}/aliases/{alias}", response_class=HTMLResponse)
async def promote_action(request: Request, name: str, alias: str) -> Response:
    """Point ``alias`` at the form's ``version`` (the API's promote, with its checks)."""
    refused = await _refused(request)
    if refused is not None:
        return refused
    form = parse_qs((await request.body()).decode(errors="replace"))

    def act() -> str:
        body = AliasRequest(version=(form.get("version") or [""])[0])
        model_routes.set_model_alias(request, _principal(request), name, alias, body)
        return "/ui/models"

    return await _act(request, act)


async def _act(request: Request, act: Callable[[], str]) -> Response:
    """Runs ``act`` (it returns a run id or a /ui/ path to go to next); refusals and errors as
    the error page with the API's status."""

    def build() -> Response:
        try:
            target = act()
        except (HTTPException, ValidationError, UsinaError) as exc:
            if isinstance(exc, NotFoundError):
                raise
            if isinstance(exc, HTTPException):
                status, message = exc.status_code, str(exc.detail)
            elif isinstance(exc, ValidationError):
                status, message = 400, "; ".join(e["msg"] for e in exc.errors())
            else:
                status = 409 if isinstance(exc, StateError) else 400
                message = error_text(exc, _lang(request))
            principal = None
            with contextlib.suppress(_Redirect):
                principal = _principal(request)
            response = _render(request, "error.html", principal, message=message)
            response.status_code = status
            return response
        url = target if target.startswith("/ui/") else f"/ui/runs/{quote(target)}"
        return RedirectResponse(url, status_code=303)

    return await anyio.to_thread.run_sync(partial(_page, request, build))


@router.post("/schedules/{project}/{name}/{action}", response_class=HTMLResponse)
async def schedule_action(request: Request, project: str, name: str, action: str) -> Response:
    """Pause or resume a schedule (the API's routes, with their checks and audit)."""
    refused = await _refused(request)
    if refused is not None:
        return refused

    def act() -> str:
        principal = _principal(request)
        if action == "pause":
            schedule_routes.pause_schedule(request, principal, project, name)
        elif action == "resume":
            schedule_routes.resume_schedule(request, principal, project, name)
        else:
            raise NotFoundError(f"no action {action!r}: pause or resume")
        return "/ui/schedules"

    return await _act(request, act)


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request) -> Response:
    def build() -> Response:
        principal = _principal(request)
        found = schedule_routes.list_schedules(request, principal)
        return _render(
            request,
            "schedules.html",
            principal,
            schedules=found,
            editable={s.project for s in found if principal.can(s.project, Role.EDITOR)},
        )

    return _page(request, build)


@router.get("/pipelines/{name}", response_class=HTMLResponse)
def pipeline_page(request: Request, name: str) -> Response:
    """Metrics of a pipeline's steps over its recent runs, one small chart per metric."""

    def build() -> Response:
        principal = _principal(request)
        ctx: ServerContext = request.app.state.ctx
        rows = ctx.platform.step_metrics(name, projects_=principal.visible_projects(), limit=100)
        series: dict[str, list[tuple[float, float, str]]] = {}
        for run_id, at, step, metrics in rows:
            for metric_name, value in metrics.items():
                if value == value and abs(value) != float("inf"):
                    series.setdefault(f"{step}.{metric_name}", []).append((at, value, run_id))
        charts = [_chart(key, points) for key, points in sorted(series.items())]
        recent = ctx.platform.runs_page(
            projects_=principal.visible_projects(), limit=PAGE, pipeline=name
        )
        reg = ctx.pipelines.find(name)
        editable = sorted(p for p, r in principal.roles.items() if r >= Role.EDITOR)
        return _render(
            request,
            "pipeline.html",
            principal,
            name=name,
            charts=charts,
            recent=[summary_from_row(r) for r in recent],
            params=list(reg.pipeline.params.values()) if reg is not None else [],
            submit_projects=(
                [p if p != ALL_PROJECTS else "default" for p in editable] if reg is not None else []
            ),
        )

    return _page(request, build)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, a: str, b: str) -> Response:
    """Two runs side by side: parameters, step metrics, and each step's state (cached or
    not) and duration."""

    def build() -> Response:
        principal = _principal(request)
        ctx: ServerContext = request.app.state.ctx
        runs = [
            run_detail(visible_run(ctx, principal, run_id), ctx.metadata.get_steps(run_id))
            for run_id in (a, b)
        ]
        steps = [{s.node: s for s in run.steps} for run in runs]
        nodes = list(dict.fromkeys(n for by_node in steps for n in by_node))
        params = sorted({k for run in runs for k in run.params})
        metrics = sorted(
            {f"{s.node}.{m}" for run in runs for s in run.steps for m in s.metrics},
        )

        def metric(by_node: dict[str, StepOut], key: str) -> Any:
            node, _, name = key.rpartition(".")
            step = by_node.get(node)
            return step.metrics.get(name) if step is not None else None

        return _render(
            request,
            "compare.html",
            principal,
            runs=runs,
            params=[(k, [run.params.get(k) for run in runs]) for k in params],
            metrics=[(k, [metric(by_node, k) for by_node in steps]) for k in metrics],
            steps=[(n, [by_node.get(n) for by_node in steps]) for n in nodes],
        )

    return _page(request, build)


def _chart(key: str, points: list[tuple[float, float, str]]) -> dict[str, Any]:
    """An SVG line chart of one metric over runs (oldest first): a y axis with the range's
    ends, an x axis with the first and last run ids, each point titled with its run."""
    w, h = 460, 170
    left, right, top, bottom = 56, 12, 10, 38
    values = [v for _, v, _ in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(1, len(points) - 1)
    plot_w, plot_h = w - left - right, h - top - bottom
    coords = [
        (
            left + (i * plot_w / n if len(points) > 1 else plot_w / 2),
            top + plot_h - (v - lo) * plot_h / span,
        )
        for i, (_, v, _) in enumerate(points)
    ]
    y_ticks = [
        (top + plot_h - (v - lo) * plot_h / span, f"{v:.4g}") for v in dict.fromkeys((lo, hi))
    ]
    firsts = [(coords[0][0], points[0][2], "start")]
    if len(points) > 1:
        firsts.append((coords[-1][0], points[-1][2], "end"))
    return {
        "key": key,
        "w": w,
        "h": h,
        "x0": left,
        "x1": w - right,
        "y0": top,
        "y1": top + plot_h,
        "y_ticks": y_ticks,
        "x_ticks": firsts,
        "line": " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
        "dots": [
            (x, y, run_id, v, at) for (x, y), (at, v, run_id) in zip(coords, points, strict=True)
        ],
        "last": values[-1],
        "lo": lo,
        "hi": hi,
    }


# -- models and endpoints ------------------------------------------------------------------


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request) -> Response:
    def build() -> Response:
        principal = _principal(request)
        ctx: ServerContext = request.app.state.ctx
        models, problem, promotable = [], None, set()
        if ctx.models is not None:
            try:
                models = ctx.models.list_models(principal.visible_projects())
                if any(r >= Role.EDITOR for r in principal.roles.values()):
                    promotable = {
                        m.name
                        for m in models
                        if principal.can(ctx.models.project_of(m.name), Role.EDITOR)
                    }
            except UsinaError as exc:
                problem = str(exc)
        return _render(
            request,
            "models.html",
            principal,
            models=models,
            promotable=promotable,
            has_registry=ctx.models is not None,
            problem=problem,
        )

    return _page(request, build)


@router.get("/endpoints", response_class=HTMLResponse)
def endpoints_page(request: Request) -> Response:
    def build() -> Response:
        from usina.server.api import list_endpoints

        principal = _principal(request)
        found = list_endpoints(request, principal, check=True)
        return _render(
            request,
            "endpoints.html",
            principal,
            endpoints=found,
            server_url=str(request.base_url).rstrip("/"),
        )

    return _page(request, build)
