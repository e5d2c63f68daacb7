"""What a ``usina`` start and a local worker (zygote) import: each heavy module named here cost
a W0 run (one no-op step) tens of milliseconds of CPU when it was imported up front
(benchmarks/README.md, "Where the time goes")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Needed only by some commands (--server, k8s queues, tracking, serving): imported there.
CLI_LAZY = (
    "yaml",
    "urllib.request",
    "http.client",
    "kubernetes",
    "usina.backends.kubernetes",
    "mlflow",
    "pandas",
    "fastapi",
    "fsspec",
    "sqlalchemy",
    "alembic",
    "numpy",
)
# The zygote forks every attempt from its own imports: what a no-op step does not use stays out.
ZYGOTE_LAZY = ("fsspec", "asyncio", "sqlalchemy", "yaml", "typer", "rich", "mlflow", "pandas")


def _imported(code: str, names: tuple[str, ...]) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(n for n in {names!r} if n in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.splitlines()[-1]))  # after what the code printed


def test_the_cli_module_imports_no_command_specific_dependency() -> None:
    assert _imported("import usina.cli.main", CLI_LAZY) == []


def test_the_zygote_imports_no_checkpoint_or_database_library() -> None:
    code = (
        "import usina.runtime.zygote, usina.runtime.execute, usina.runtime.loader\n"
        "from usina.stores.artifacts import FsspecArtifactStore"
    )
    assert _imported(code, ZYGOTE_LAZY) == []


# A local one-step ``usina run`` (W0): the other commands, migrations, Typer's pydantic path,
# PostgreSQL's dialect and the backend plugins' metadata scan are not part of it.
RUN_LAZY = (
    "alembic",
    "pydantic",
    "sqlalchemy.dialects.postgresql",
    "usina.cli.runs",
    "usina.cli.schedules",
    "usina.llm",
    "usina.mcp",
    "usina.deploy",
    "mlflow",
    "yaml",
    "psutil",  # the local backend's fallbacks only (no /proc to walk, a process left behind)
    "usina.cli.remote",
)


def test_a_local_run_imports_only_what_it_uses(tmp_path: Path) -> None:
    pipeline = tmp_path / "one.py"
    pipeline.write_text(
        "from usina import pipeline, step\n\n"
        "@step\ndef noop(x: int) -> int:\n    return x + 1\n\n"
        "@pipeline\ndef one(start: int = 0) -> None:\n    noop(start)\n"
    )
    code = (
        "import os\n"
        f"os.environ['USINA_HOME'] = {str(tmp_path / 'home')!r}\n"
        "from usina.cli.main import main\n"
        f"assert main(['run', {str(pipeline)!r}, '--no-cache']) == 0"
    )
    assert _imported(code, RUN_LAZY) == []


@pytest.mark.parametrize("probe", ["urllib.request", "yaml"])
def test_the_probe_sees_an_imported_module(probe: str) -> None:
    # The check above can fail: a module imported by the code is reported.
    assert _imported(f"import {probe}", (probe,)) == [probe]
