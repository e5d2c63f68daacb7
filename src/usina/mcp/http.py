"""The MCP server over streamable HTTP, for ``usina server`` (``/mcp``) or on its own.

Stateless JSON mode: every POST is answered on its own, so any replica behind a load balancer
can answer any call (no "session not found"). The caller's ``Authorization: Bearer`` header is
forwarded to the API on every tool call. Host/Origin checks are off by default: auth is a bearer
token, never a cookie, so a page that rebinds DNS cannot act as the user; pass
``allowed_hosts`` to turn them on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from mcp.server.transport_security import TransportSecuritySettings

from usina.mcp.client import PlatformAPI
from usina.mcp.tools import build_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mcp.server.mcpserver import Context, MCPServer
    from starlette.applications import Starlette


def bearer_of(ctx: Context) -> str | None:
    """The token in the HTTP request behind this tool call."""
    request = ctx.request_context.request
    header = request.headers.get("authorization", "") if request is not None else ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True, slots=True)
class McpHttp:
    """The ASGI app and the MCP server behind it (whose session manager must run)."""

    server: MCPServer
    asgi: Starlette

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield


def build_http(api: PlatformAPI, allowed_hosts: list[str] | None = None) -> McpHttp:
    security = (
        TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts)
        if allowed_hosts
        else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    server = build_server(api, bearer_of)
    asgi = server.streamable_http_app(
        streamable_http_path="/",
        stateless_http=True,
        json_response=True,
        transport_security=security,
    )
    return McpHttp(server, asgi)


def mount(app: Any, path: str = "/mcp") -> McpHttp:
    """Serve MCP at ``path`` of usina server's FastAPI ``app``: the tools call the same app
    in-process (same auth, roles and audit), and the app's lifespan runs the MCP sessions."""
    api = PlatformAPI("http://usina.internal", transport=httpx.ASGITransport(app=app))
    mcp_http = build_http(api)
    app.mount(path, mcp_http.asgi)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:
        async with mcp_http.running(), inner(host) as state:
            yield state

    app.router.lifespan_context = lifespan
    return mcp_http
