"""Request size limits (issue #14, finding 2): an oversized body is refused with 413 before it
is read, oversized parameters and labels with 422 naming the limit, and neither the database
nor the server's memory grows from the attempt."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import httpx
import psutil

from tests.server.live import live_server
from usina.server.guards import GuardSettings

MiB = 1 << 20


def _server_pid(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            assert conn.pid is not None
            return int(conn.pid)
    raise AssertionError(f"no process listens on port {port}")


def _raw_post(port: int, token: str, headers: str, body_chunks: list[bytes]) -> bytes:
    """Send a request piece by piece; return the status line the server answered with."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{headers}\r\n"
            ).encode()
        )
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        reply = b""
        while b"\r\n" not in reply:
            try:
                got = sock.recv(4096)
            except ConnectionResetError:
                break
            if not got:
                break
            reply += got
        return reply.split(b"\r\n", 1)[0]


def test_oversized_requests_are_refused_without_growing_the_server(
    http_server: tuple[str, str, httpx.Client, Path],
) -> None:
    url, token, client, home = http_server
    port = int(url.rsplit(":", 1)[1])
    database = home / ".usina" / "usina.db"
    server = psutil.Process(_server_pid(url))
    assert client.post("/api/v1/runs", json={"pipeline": "demo", "params": {"n": 3}}).is_success
    rss_before = server.memory_info().rss
    db_before = os.path.getsize(database)

    # A 50 MB body declared up front: refused before it is read (only 1 MiB is even sent).
    big = 50 * MiB
    status = _raw_post(port, token, f"Content-Length: {big}\r\n", [b"x" * MiB])
    assert b" 413 " in status, status

    # The same without a length (chunked): refused once it passes the limit.
    chunk = b"x" * (256 << 10)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    status = _raw_post(port, token, "Transfer-Encoding: chunked\r\n", [framed] * 40)
    assert b" 413 " in status, status

    # Under the body limit, over the parameters' and labels' limits: 422 naming the limit.
    reply = client.post(
        "/api/v1/runs", json={"pipeline": "demo", "params": {"n": 3, "x": "y" * 900_000}}
    )
    assert reply.status_code == 422
    assert "max_params_bytes" in reply.json()["detail"]
    many = {f"k{i}": "v" for i in range(33)}
    reply = client.post("/api/v1/runs", json={"pipeline": "demo", "labels": many})
    assert reply.status_code == 422
    assert "max_labels" in reply.json()["detail"]
    reply = client.post("/api/v1/runs", json={"pipeline": "demo", "labels": {"team": "t" * 300}})
    assert reply.status_code == 422
    assert "max_label_value" in reply.json()["detail"]
    reply = client.post("/api/v1/runs", json={"pipeline": "demo", "labels": {"k" * 64: "v"}})
    assert reply.status_code == 422
    assert "max_label_key" in reply.json()["detail"]

    # Nothing of it was stored or kept: the database and the process stayed about the same.
    assert os.path.getsize(database) - db_before < MiB
    assert server.memory_info().rss - rss_before < 64 * MiB
    runs = client.get("/api/v1/runs").json()["items"]
    assert len(runs) == 1
    assert len(json.dumps(runs)) < 10_000
    assert client.get("/healthz").status_code == 200


def test_every_route_has_the_body_limit(tmp_path: Path) -> None:
    with live_server(tmp_path / "srv", GuardSettings(max_body_bytes=1000)) as server:
        admin = server.token("*", "admin")
        with server.client(admin) as client:
            body = {"project": "default", "url": "http://models.example:8080/" + "a" * 2000}
            reply = client.put("/api/v1/endpoints/e1", json=body)
            assert reply.status_code == 413
            assert "max_body_bytes" in reply.json()["detail"]
            form = {"token": "x" * 2000, "next": "/ui/runs"}
            assert client.post("/ui/login", data=form).status_code == 413
            small = {"pipeline": "demo", "params": {"n": 3}}
            assert client.post("/api/v1/runs", json=small).status_code == 201
