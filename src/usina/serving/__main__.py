"""``python -m usina.serving MODEL_URI ...``: the same as ``usina serve``."""

from __future__ import annotations

from usina.serving.cli import app

if __name__ == "__main__":
    app()(prog_name="usina-serve")
