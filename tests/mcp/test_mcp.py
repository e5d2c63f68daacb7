"""The official MCP SDK client, over stdio (``usina mcp``) and over streamable HTTP (``/mcp``
in usina server), operates the platform with a token's rights and no more: it lists the tools,
diagnoses a failed run with ``why``, resumes it after the fix, is refused a cancel with a
viewer token, and the server's audit log records what happened."""

from __future__ import annotations

import json
import os
import sys
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from mcp import ClientSession

pytestmark = pytest.mark.timeout(240)

EXPECTED_TOOLS = {
    "list_runs", "show_run", "why", "logs", "submit_run", "resume_run", "cancel_run",
    "list_models", "show_model", "promote_model", "list_endpoints", "kpis",
}  # fmt: skip


@asynccontextmanager
async def over_stdio(url: str, token: str):
    env = {**os.environ, "USINA_SERVER": url, "USINA_TOKEN": token}
    params = StdioServerParameters(command=sys.executable, args=["-m", "usina.mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_http(url: str, token: str):
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{url}/mcp/", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


TRANSPORTS = {"stdio": over_stdio, "http": over_http}


async def call(session: ClientSession, tool: str, **args: Any) -> tuple[bool, Any]:
    """(is_error, structured result or the error text)."""
    result = await session.call_tool(tool, args)
    if result.is_error:
        return True, " ".join(getattr(c, "text", "") for c in result.content)
    if result.structured_content is not None:
        return False, result.structured_content
    return False, json.loads(result.content[0].text)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_an_agent_lists_diagnoses_resumes_and_is_refused_a_cancel(platform, transport, tmp_path):
    connect = TRANSPORTS[transport]
    needs = tmp_path / "features.parquet"

    async def scenario() -> None:
        async with connect(platform.url, platform.editor) as agent:
            tools = {t.name: t for t in (await agent.list_tools()).tools}
            assert set(tools) >= EXPECTED_TOOLS
            logs_schema = tools["logs"].input_schema
            assert logs_schema["properties"]["max_lines"]["maximum"] == 2000
            assert set(logs_schema["required"]) == {"run_id", "step"}
            assert tools["cancel_run"].description

            failed, run = await call(
                agent, "submit_run", pipeline="fragile", params={"needs": str(needs)}
            )
            assert not failed, run
            run_id = run["id"]
            assert platform.wait(platform.editor, run_id, ("failed",))["state"] == "failed"

            failed, why = await call(agent, "why", run_id=run_id)
            assert not failed, why
            (attempt,) = why["failed_attempts"]
            assert attempt["step"] == "train"
            assert attempt["failure_class"] == "user_error"
            assert "is missing" in (attempt["message"] or "") + "".join(attempt["log_tail"])
            assert attempt["advice"]
            assert "resume_run" in why["next"]

            failed, log = await call(agent, "logs", run_id=run_id, step="train", max_lines=3)
            assert not failed, log
            assert len(log["lines"]) <= 3

            needs.write_text("fixed")  # the agent's fix
            failed, resumed = await call(agent, "resume_run", run_id=run_id)
            assert not failed, resumed
            final = platform.wait(platform.editor, run_id, ("succeeded", "failed"))
            assert final["state"] == "succeeded"

            failed, slow = await call(agent, "submit_run", pipeline="slow")
            assert not failed, slow

        async with connect(platform.url, platform.viewer) as viewer:
            failed, runs = await call(viewer, "list_runs", limit=5)
            assert not failed
            assert run_id in {r["id"] for r in runs["runs"]}
            refused, message = await call(viewer, "cancel_run", run_id=slow["id"])
            assert refused
            assert "editor" in message

        async with connect(platform.url, platform.editor) as agent:
            failed, cancelled = await call(agent, "cancel_run", run_id=slow["id"])
            assert not failed, cancelled

        with platform.api(platform.admin) as http:
            audit = http.get("/api/v1/audit", params={"limit": 200}).json()
        entries = {
            (e["action"], e["target"], e["outcome"], e["actor"].split(" ")[0])
            for e in audit
            if e["target"] in (run_id, slow["id"])
        }
        assert ("run.submit", run_id, "ok", "ana") in entries
        assert ("run.resume", run_id, "ok", "ana") in entries
        assert ("run.cancel", slow["id"], "denied", "vera") in entries
        assert ("run.cancel", slow["id"], "ok", "ana") in entries

    anyio.run(scenario)


def test_without_a_token_the_http_tools_are_refused(platform):
    async def scenario() -> None:
        async with over_http(platform.url, "usn_not_a_token") as agent:
            refused, message = await call(agent, "list_runs")
            assert refused
            assert "token" in message

    anyio.run(scenario)


def test_kpis_and_models_answer_without_a_registry(platform):
    async def scenario() -> None:
        async with over_http(platform.url, platform.viewer) as agent:
            failed, kpis = await call(agent, "kpis", pipeline="fragile")
            assert not failed, kpis
            assert kpis["runs"] >= 0
            failed, models = await call(agent, "list_models")
            assert not failed
            assert models == {"models": []}

    anyio.run(scenario)
