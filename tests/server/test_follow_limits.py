"""Following logs cannot freeze the server (issue #14, finding 1): a hundred silent follow
streams leave /healthz and the API answering, each token holds a bounded number of streams
(429 past it), and clients that go away free their streams."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.server.live import LiveServer, live_server
from usina.server.guards import GuardSettings

STREAMS_PER_TOKEN = 10
TOKENS = 10


def _running_step(server: LiveServer, token: str) -> str:
    with server.client(token) as client:
        run = client.post(
            "/api/v1/runs", json={"pipeline": "slow", "params": {"seconds": 120}}
        ).json()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            attempts = client.get(f"/api/v1/runs/{run['id']}/attempts").json()
            if attempts and attempts[-1]["state"] == "running":
                return str(run["id"])
            time.sleep(0.2)
    raise AssertionError(f"run {run['id']} never started its step")


def _open_follow(server: LiveServer, token: str, run_id: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        (
            f"GET /api/v1/runs/{run_id}/steps/sleepy/logs?follow=true HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head.split(b"\r\n", 1)[0]


def _timed_get(server: LiveServer, path: str, token: str | None = None) -> tuple[int, float]:
    with server.client(token, timeout=30) as client:
        start = time.monotonic()
        status = client.get(path).status_code
        return status, time.monotonic() - start


def test_hundred_follow_streams_leave_the_server_answering(tmp_path: Path) -> None:
    guards = GuardSettings(follow_per_token=STREAMS_PER_TOKEN, follow_poll=0.2)
    with live_server(tmp_path / "srv", guards) as server:
        editor = server.token("default", "editor")
        run_id = _running_step(server, editor)
        viewers = [server.token("default", "viewer", f"viewer{i}") for i in range(TOKENS)]
        socks: list[socket.socket] = []
        try:
            for token in viewers:
                for _ in range(STREAMS_PER_TOKEN):
                    sock, status = _open_follow(server, token, run_id)
                    socks.append(sock)
                    assert b" 200 " in status, status
            assert server.app.state.follow_slots.open_streams() == TOKENS * STREAMS_PER_TOKEN

            # The server still answers, probes and synchronous API routes alike.
            probes: list[tuple[str, str | None]] = [
                ("/healthz", None),
                ("/readyz", None),
                ("/api/v1/runs", editor),
            ]
            for path, caller in probes:
                code, took = _timed_get(server, path, caller)
                assert code == 200, path
                assert took < 1.0, f"{path} took {took:.2f} s with 100 follow streams open"

            # One more stream for a token at its bound is refused, and says why.
            extra, status = _open_follow(server, viewers[0], run_id)
            extra.close()
            assert b" 429 " in status, status
        finally:
            for sock in socks:
                sock.close()

        # Disconnected clients free their streams.
        deadline = time.monotonic() + 15
        while server.app.state.follow_slots.open_streams() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.app.state.follow_slots.open_streams() == 0
        sock, status = _open_follow(server, viewers[0], run_id)
        sock.close()
        assert b" 200 " in status, status
        with server.client(editor) as client:
            client.post(f"/api/v1/runs/{run_id}/cancel")


def test_follow_stream_sends_output_and_ends_with_the_attempt(tmp_path: Path) -> None:
    guards = GuardSettings(follow_poll=0.1)
    with live_server(tmp_path / "srv", guards) as server:
        editor = server.token("default", "editor")
        with server.client(editor) as client:
            run = client.post(
                "/api/v1/runs", json={"pipeline": "slow", "params": {"seconds": 2}}
            ).json()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                attempts = client.get(f"/api/v1/runs/{run['id']}/attempts").json()
                if attempts and attempts[-1]["state"] == "running":
                    break
                time.sleep(0.1)
            with client.stream(
                "GET", f"/api/v1/runs/{run['id']}/steps/sleepy/logs", params={"follow": "true"}
            ) as reply:
                body = b"".join(reply.iter_bytes())
        assert b"sleeping" in body
        deadline = time.monotonic() + 10
        while server.app.state.follow_slots.open_streams() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.app.state.follow_slots.open_streams() == 0
