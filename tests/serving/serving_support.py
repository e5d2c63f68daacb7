"""Helpers for the serving tests: the server as a subprocess, a tiny raw HTTP/1.1 client."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_server(
    tracking_uri: str,
    model_uri: str,
    log_dir: Path,
    *args: str,
    ready_timeout: float = 120,
    warnings: str = "ignore",
) -> Server:
    """``usina serve`` in a subprocess; ``warnings`` is its PYTHONWARNINGS (ignore, default)."""
    http_port, grpc_port = free_port(), free_port()
    log_path = log_dir / f"server-{http_port}.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONWARNINGS": warnings}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "usina.serving",
                model_uri,
                "--host",
                "127.0.0.1",
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(proc, http_port, grpc_port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            status, _ = get(server.http, "/v2/health/ready", timeout=2)
            if status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready after {ready_timeout}s:\n{server.log()}")


def get(address: str, path: str, timeout: float = 10) -> tuple[int, bytes]:
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def post_json(address: str, path: str, doc: Any, timeout: float = 10) -> tuple[int, Any]:
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(
            "POST", path, body=orjson.dumps(doc), headers={"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        return resp.status, orjson.loads(resp.read())
    finally:
        conn.close()


def row_request(x_row: Any, columns: list[str] | None = None) -> dict[str, Any]:
    """One 2-D FP64 input, or named per-feature inputs when ``columns`` is given."""
    if columns is None:
        return {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, len(x_row)],
                    "datatype": "FP64",
                    "data": [float(v) for v in x_row],
                }
            ]
        }
    return {
        "inputs": [
            {
                "name": c,
                "shape": [1],
                "datatype": "INT64" if c == "hour" else "FP64",
                "data": [int(v) if c == "hour" else float(v)],
            }
            for c, v in zip(columns, x_row, strict=True)
        ]
    }


class RawClient:
    """A keep-alive HTTP/1.1 client on asyncio streams: cheap enough to drive overload."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None
        assert self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("connection closed before a response")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload, headers


def rss_bytes(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


@dataclass
class Result:
    sent: float  # when the request was written (perf_counter)
    done: float
    status: int | None  # None: the connection failed
    version: str | None = None
    value: float | None = None


class LoadGenerator:
    """Closed-loop load from ``connections`` keep-alive connections, in a background thread."""

    def __init__(
        self, address: str, path: str, body: bytes, connections: int, pause: float = 0.0
    ) -> None:
        self.pause = pause
        host, port = address.split(":")
        self.host, self.port = host, int(port)
        self.path, self.body, self.connections = path, body, connections
        self.results: list[Result] = []
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Result]:
        self._stop = True
        if self._thread is not None:
            self._thread.join(60)
        return self.results

    async def _main(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.connections)))

    async def _worker(self) -> None:
        client = RawClient(self.host, self.port)
        try:
            while not self._stop:
                sent = time.perf_counter()
                try:
                    status, payload, _ = await asyncio.wait_for(
                        client.post(self.path, self.body), timeout=30
                    )
                except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                    self.results.append(Result(sent, time.perf_counter(), None))
                    await client.close()
                    if self._stop:
                        return
                    await asyncio.sleep(0.05)
                    continue
                result = Result(sent, time.perf_counter(), status)
                if status == 200:
                    doc = orjson.loads(payload)
                    result.version = doc["model_version"]
                    result.value = doc["outputs"][0]["data"][0]
                self.results.append(result)
                if self.pause:
                    await asyncio.sleep(self.pause)
        finally:
            await client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]
