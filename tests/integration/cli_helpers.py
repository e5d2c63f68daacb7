"""Run the real ``usina`` command line in a subprocess against a temporary state folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Usina:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "USINA_HOME": str(home / ".usina"),
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
        for name in ("USINA_DATABASE_URL", "USINA_ARTIFACTS_URL", "MLFLOW_TRACKING_URI"):
            self.env.pop(name, None)  # each test says where its state lives

    def in_english_by_default(self) -> Usina:
        """No language asked for by the environment (``USINA_LANG``, ``LC_*``): the CLI speaks
        English unless a test asks otherwise."""
        for name in ("USINA_LANG", "LC_ALL", "LC_MESSAGES"):
            self.env.pop(name, None)
        self.env["LANG"] = "C.UTF-8"
        return self

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "usina.cli.main", *args]

    def __call__(self, *args: str, timeout: float = 120) -> Result:
        proc = subprocess.run(
            self.cmd(*args),
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """Start the CLI in the background; its output goes to ``<home>/popen.log``."""
        with open(self.home / "popen.log", "ab") as log:
            return subprocess.Popen(
                self.cmd(*args),
                cwd=self.home,
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def write(self, name: str, source: str) -> Path:
        path = self.home / name
        path.write_text(textwrap.dedent(source))
        return path

    def last_run(self) -> dict[str, Any]:
        runs = self("runs", "ls", "--output", "json").json()
        return runs[0]
