"""``usina mcp``: the MCP server on stdio (for a local agent) or streamable HTTP.

Register it in the CLI with ``app.add_typer(usina.mcp.cli.app, name="mcp")``; it needs the
``mcp`` extra. Tools call usina server at ``--server`` / ``USINA_SERVER`` with ``--token`` /
``USINA_TOKEN`` (stdio), or with each HTTP caller's own bearer token (``--transport http``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from usina.i18n import _

app = typer.Typer(add_completion=False, help="MCP server: let AI agents operate usina.")


@app.callback(invoke_without_command=True)
def mcp(
    server: Annotated[
        str, typer.Option(envvar="USINA_SERVER", help="usina server URL the tools call.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None,
        typer.Option(envvar="USINA_TOKEN", help="API token the tools use (stdio transport)."),
    ] = None,
    transport: Annotated[
        str, typer.Option(help="stdio (one local agent) or http (streamable HTTP at /mcp).")
    ] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: port.")] = 8765,
) -> None:
    """Serve usina's MCP tools (runs, why, logs, resume, cancel, models, endpoints, KPIs)."""
    try:
        from usina.mcp.client import PlatformAPI
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise typer.BadParameter(
            _("usina mcp needs the mcp extra: pip install 'usina[mcp]'")
        ) from exc
    api = PlatformAPI(server)
    if transport == "stdio":
        from usina.mcp.tools import build_server

        build_server(api, lambda _ctx: token).run("stdio")
        return
    if transport != "http":
        raise typer.BadParameter(
            _("--transport {transport!r}: use stdio or http").format(transport=transport)
        )
    import contextlib

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from usina.mcp.http import build_http

    mcp_http = build_http(api)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):  # type: ignore[no-untyped-def]
        async with mcp_http.running():
            yield

    uvicorn.run(
        Starlette(routes=[Mount("/mcp", mcp_http.asgi)], lifespan=lifespan), host=host, port=port
    )
