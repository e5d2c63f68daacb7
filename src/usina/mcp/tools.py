"""The MCP tool set: runs, failures, logs, models, endpoints and KPIs, as calls to the API.

Read tools come first; ``submit_run``, ``resume_run``, ``cancel_run`` and ``promote_model``
change things and need the editor role in the run's or model's project (the API checks it and
writes the audit entry, refused calls included). Outputs are bounded: lists are paged, log
tails are cut to ``max_lines`` (at most 2000), failure messages to a few kilobytes, so one call
cannot flood an agent's context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from usina.mcp.client import ApiError, PlatformAPI

TokenSource = Callable[[Context], str | None]

INSTRUCTIONS = (
    "usina runs ML pipelines and serves models. Start with list_runs; for a failed run call why "
    "(failure class, evidence, advice), read logs if needed, then resume_run once fixed. "
    "Models: list_models, show_model, promote_model (moves an alias such as champion). "
    "Mutating tools need the editor role in the project; every call is audited by the server."
)
_MAX_MESSAGE = 4000
_WHY_LOG_LINES = 15

RunId = Annotated[str, Field(description="A run id, as list_runs shows (e.g. demo-20261201-...)")]
ModelName = Annotated[str, Field(description="A registered model's name, e.g. 'fraud'.")]


def _tail(text: str, lines: int) -> list[str]:
    return text.splitlines()[-lines:] if lines else []


def _cut(text: str | None, limit: int = _MAX_MESSAGE) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return "…" + text[-limit:]


def build_server(api: PlatformAPI, token_of: TokenSource, *, name: str = "usina") -> MCPServer:
    """The MCP server; ``token_of(ctx)`` says whose token a call uses (stdio: the configured
    one; HTTP: the request's ``Authorization`` header)."""
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS)

    async def call(ctx: Context, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await api.call(method, path, token_of(ctx), **kwargs)
        except ApiError as exc:
            raise ToolError(str(exc)) from exc

    @server.tool()
    async def list_runs(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=200, description="Most runs returned.")] = 20,
        state: Annotated[
            str | None,
            Field(
                description="Only runs in this state: pending, running, succeeded, failed, "
                "cancelled."
            ),
        ] = None,
        pipeline: Annotated[str | None, Field(description="Only runs of this pipeline.")] = None,
    ) -> dict[str, Any]:
        """Runs the token can see, newest first: id, pipeline, state, times."""
        page = await call(
            ctx, "GET", "/runs", params={"limit": limit, "state": state, "pipeline": pipeline}
        )
        keys = ("id", "pipeline", "project", "state", "created_at", "finished_at", "error")
        return {"runs": [{k: r.get(k) for k in keys} for r in page["items"]]}

    @server.tool()
    async def show_run(ctx: Context, run_id: RunId) -> dict[str, Any]:
        """One run: parameters, state and every step with its state, attempts and error."""
        run: dict[str, Any] = await call(ctx, "GET", f"/runs/{quote(run_id)}")
        run["error"] = _cut(run.get("error"))
        return run

    @server.tool()
    async def why(ctx: Context, run_id: RunId) -> dict[str, Any]:
        """Why a run failed: each failed attempt's failure class (user_error, oom, preempted,
        infra, ...), exit code, reason, message, last log lines and what to do next."""
        run = await call(ctx, "GET", f"/runs/{quote(run_id)}")
        attempts = await call(ctx, "GET", f"/runs/{quote(run_id)}/attempts")
        failed = []
        for item in attempts:
            if item.get("state") != "failed":
                continue
            log = await call(
                ctx,
                "GET",
                f"/runs/{quote(run_id)}/steps/{quote(item['node'])}/logs",
                params={"attempt": item["number"]},
                text=True,
            )
            failed.append(
                {
                    "step": item["node"],
                    "attempt": item["number"],
                    "failure_class": item.get("failure_class"),
                    "exit_code": item.get("exit_code"),
                    "reason": item.get("reason"),
                    "message": _cut(item.get("message")),
                    "advice": item.get("advice"),
                    "log_tail": _tail(log, _WHY_LOG_LINES),
                }
            )
        return {
            "run": run_id,
            "state": run["state"],
            "error": _cut(run.get("error")),
            "failed_attempts": failed,
            "next": (
                f"fix the cause, then call resume_run with run_id={run_id!r}"
                if run["state"] == "failed"
                else "nothing failed for good"
            ),
        }

    @server.tool()
    async def logs(
        ctx: Context,
        run_id: RunId,
        step: Annotated[str, Field(description="The step (node) name, as show_run lists.")],
        attempt: Annotated[
            int | None, Field(ge=1, description="Attempt number; default: the latest.")
        ] = None,
        max_lines: Annotated[
            int, Field(ge=1, le=2000, description="Last lines returned (bounded).")
        ] = 200,
    ) -> dict[str, Any]:
        """The last ``max_lines`` lines of a step attempt's log."""
        text = await call(
            ctx,
            "GET",
            f"/runs/{quote(run_id)}/steps/{quote(step)}/logs",
            params={"attempt": attempt},
            text=True,
        )
        lines = text.splitlines()
        return {"lines": lines[-max_lines:], "truncated": len(lines) > max_lines}

    @server.tool()
    async def submit_run(
        ctx: Context,
        pipeline: Annotated[str, Field(description="A pipeline registered on the server.")],
        params: Annotated[
            dict[str, str] | None, Field(description="Pipeline parameters, as strings.")
        ] = None,
        project: Annotated[str, Field(description="Project the run belongs to.")] = "default",
    ) -> dict[str, Any]:
        """Start a run of a pipeline (editor role). Returns the new run."""
        body = {"pipeline": pipeline, "params": params or {}, "project": project}
        run: dict[str, Any] = await call(ctx, "POST", "/runs", body=body)
        return run

    @server.tool()
    async def resume_run(ctx: Context, run_id: RunId) -> dict[str, Any]:
        """Re-run a run's failed steps (and what depends on them) with the current code,
        keeping the results of steps that succeeded (editor role)."""
        run: dict[str, Any] = await call(ctx, "POST", f"/runs/{quote(run_id)}/resume")
        return run

    @server.tool()
    async def cancel_run(ctx: Context, run_id: RunId) -> dict[str, Any]:
        """Cancel a pending or running run (editor role)."""
        run: dict[str, Any] = await call(ctx, "POST", f"/runs/{quote(run_id)}/cancel")
        return run

    @server.tool()
    async def list_models(ctx: Context) -> dict[str, Any]:
        """Registered models with their versions and aliases (champion, challenger, ...)."""
        return {"models": await call(ctx, "GET", "/models")}

    @server.tool()
    async def show_model(ctx: Context, name: ModelName) -> dict[str, Any]:
        """One registered model: versions (with run and metrics) and aliases."""
        model: dict[str, Any] = await call(ctx, "GET", f"/models/{quote(name)}")
        return model

    @server.tool()
    async def promote_model(
        ctx: Context,
        name: ModelName,
        version: Annotated[str, Field(description="The version to point the alias at.")],
        alias: Annotated[
            str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$", description="Alias to move.")
        ] = "champion",
    ) -> dict[str, Any]:
        """Point an alias of a model at a version (editor role); endpoints that follow the
        alias switch to it."""
        model: dict[str, Any] = await call(
            ctx, "PUT", f"/models/{quote(name)}/aliases/{quote(alias)}", body={"version": version}
        )
        return model

    @server.tool()
    async def list_endpoints(
        ctx: Context,
        check: Annotated[bool, Field(description="Probe each endpoint's readiness now.")] = True,
    ) -> dict[str, Any]:
        """Serving endpoints registered on the platform and whether each is ready."""
        return {"endpoints": await call(ctx, "GET", "/endpoints", params={"check": check})}

    @server.tool()
    async def kpis(
        ctx: Context,
        pipeline: Annotated[str, Field(description="The pipeline whose KPIs to read.")],
        limit: Annotated[int, Field(ge=1, le=200, description="Newest runs considered.")] = 20,
    ) -> dict[str, Any]:
        """A pipeline's KPIs over its newest runs: success rate of finished runs, and the
        metrics its steps logged (e.g. a model's AUC or perplexity) run by run."""
        page = await call(ctx, "GET", "/runs", params={"limit": limit, "pipeline": pipeline})
        states = [r["state"] for r in page["items"]]
        done = [s for s in states if s in ("succeeded", "failed")]
        points = await call(
            ctx, "GET", f"/pipelines/{quote(pipeline)}/metrics", params={"limit": limit}
        )
        return {
            "pipeline": pipeline,
            "runs": len(states),
            "succeeded": states.count("succeeded"),
            "failed": states.count("failed"),
            "success_rate": (states.count("succeeded") / len(done)) if done else None,
            "step_metrics": points,
        }

    return server
