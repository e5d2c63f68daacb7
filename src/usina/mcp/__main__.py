"""``python -m usina.mcp``: the same as ``usina mcp``."""

from usina.mcp.cli import app

app(prog_name="usina-mcp")
