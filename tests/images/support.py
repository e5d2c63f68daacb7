"""Helpers of the image tests: free loopback ports, waiting for HTTP, long-running containers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def logs(name: str) -> str:
    proc = subprocess.run(["podman", "logs", name], capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def wait_http(url: str, name: str, timeout: float = 180) -> str:
    """The body of ``url`` once it answers 200; fails with the container's log otherwise."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Running}}", name],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if state != "true":
            raise AssertionError(f"container {name} stopped ({state!r}):\n{logs(name)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return str(resp.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(1)
    raise AssertionError(f"{url} did not answer 200 in {timeout}s ({last}):\n{logs(name)}")


@contextlib.contextmanager
def container(name: str, *args: str) -> Iterator[str]:
    """``podman run --detach`` with the host's network; removed on exit."""
    subprocess.run(["podman", "rm", "--force", "--time=0", name], capture_output=True, check=False)
    proc = subprocess.run(
        [
            *("podman", "run", "--detach", "--pull=never", "--network=host"),
            *("--no-healthcheck", f"--name={name}", *args),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    try:
        yield name
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--time=2", name], capture_output=True, check=False
        )
