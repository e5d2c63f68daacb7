"""A real ``mlflow server`` for the end-to-end tests, as a team runs it next to the platform: its
backend store in SQLite, its artifacts in an S3 bucket (SeaweedFS) that the server proxies
(``--serve-artifacts``), so clients (the usina servers and the Jobs' pods) need only the
tracking URI, never the object store's credentials.

``MlflowServer.start(folder, s3)`` returns once ``/health`` answers; ``stop()`` ends its process
group (``mlflow server`` runs uvicorn as a child). A server that does not come up fails the
test loudly with its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.seaweedfs import SeaweedS3

STARTUP_TIMEOUT = 240.0  # a cold `mlflow server` can take a minute on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _executable() -> str:
    here = Path(sys.executable).with_name("mlflow")
    return str(here) if here.exists() else shutil.which("mlflow") or "mlflow"


@dataclass
class MlflowServer:
    process: subprocess.Popen[bytes]
    url: str
    artifacts: str  # s3://bucket/prefix where the server writes every artifact
    log: Path

    @classmethod
    def start(cls, folder: Path, s3: SeaweedS3, prefix: str = "mlflow") -> MlflowServer:
        folder.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        artifacts = s3.url(prefix)
        command = [
            _executable(), "server",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", artifacts, "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        # Only the MLflow server holds the object store's credentials (MLflow's S3 client reads
        # the endpoint from MLFLOW_S3_ENDPOINT_URL). No background job runner: none is needed.
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))},
            **s3.env(),
            "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        log = folder / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=folder, env=env, start_new_session=True,
            )  # fmt: skip
        server = cls(process, f"http://127.0.0.1:{port}", artifacts, log)
        server._wait(STARTUP_TIMEOUT)
        return server

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.process.returncode}: {self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not up after {timeout}s: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
