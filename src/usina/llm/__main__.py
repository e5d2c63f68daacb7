"""``python -m usina.llm serve MODEL``: the LLM server without the full CLI."""

from usina.llm.cli import app

app()
