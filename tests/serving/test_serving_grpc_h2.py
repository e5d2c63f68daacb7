"""usina's gRPC transport (``usina.serving.grpc_h2``) against grpcio's own client, on loopback.

The handlers here are small functions, so each test pins one part of the transport: HTTP/2 flow
control both ways (answers and requests far larger than the 64 KiB default windows), many
streams in flight on one connection, status codes and percent-encoded messages, deadlines and
cancellation reaching the handler, the size limits, and draining.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from usina.serving.grpc_h2 import GrpcServer, Status
from usina.serving.worker import bind_socket

MAX_RECEIVE = 4 * 1024 * 1024
MAX_SEND = 8 * 1024 * 1024
# grpcio's client refuses messages over 4 MiB of its own accord: no limit on this side.
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


class Refused(Exception):
    pass


@dataclass
class Harness:
    target: str
    loop: asyncio.AbstractEventLoop
    server: GrpcServer
    cancelled: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def call(self, method: str, payload: bytes, timeout: float = 10, **kwargs: Any) -> bytes:
        with grpc.insecure_channel(self.target, options=UNLIMITED) as channel:
            call = channel.unary_unary(f"/test.Service/{method}")
            return call(payload, timeout=timeout, **kwargs)  # type: ignore[no-any-return]


def _status(exc: BaseException) -> tuple[Status, str]:
    if isinstance(exc, Refused):
        return Status.INVALID_ARGUMENT, str(exc)
    return Status.UNKNOWN, "unexpected"


@pytest.fixture
def harness() -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}

    async def echo(request: bytes) -> bytes:
        return request

    async def big(request: bytes) -> bytes:
        return bytes(range(256)) * (int(request.decode()) // 256)

    async def refuse(request: bytes) -> bytes:
        raise Refused(request.decode())

    async def crash(request: bytes) -> bytes:
        raise RuntimeError("boom")

    async def slow(request: bytes) -> bytes:
        holder["harness"].started.set()
        try:
            await asyncio.sleep(float(request.decode()))
        except asyncio.CancelledError:
            holder["harness"].cancelled.append("slow")
            raise
        return b"done"

    handlers = {f"/test.Service/{fn.__name__}": fn for fn in (echo, big, refuse, crash, slow)}
    server = GrpcServer(handlers, _status, max_receive=MAX_RECEIVE, max_send=MAX_SEND)
    sock = bind_socket("127.0.0.1", 0, reuse_port=False)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(sock, 128), loop).result(10)
    h = Harness(f"127.0.0.1:{port}", loop, server)
    holder["harness"] = h
    try:
        yield h
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(1), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_small_and_empty_messages_round_trip(harness: Harness) -> None:
    assert harness.call("echo", b"hello") == b"hello"
    assert harness.call("echo", b"") == b""


def test_answers_larger_than_the_clients_window_arrive_whole(harness: Harness) -> None:
    # 5 MiB: far past HTTP/2's 65,535-byte initial windows, so the server must wait for the
    # client's WINDOW_UPDATEs and send the rest in frames no larger than 16 KiB.
    size = 5 * 1024 * 1024
    answer = harness.call("big", str(size).encode())
    assert answer == bytes(range(256)) * (size // 256)


def test_requests_larger_than_the_default_window_arrive_whole(harness: Harness) -> None:
    payload = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    assert harness.call("echo", payload) == payload


def test_many_calls_in_flight_on_one_connection_get_their_own_answers(harness: Harness) -> None:
    with grpc.insecure_channel(harness.target) as channel:
        echo = channel.unary_unary("/test.Service/echo")
        futures = [echo.future(f"call {i}".encode() * (i % 50 + 1), timeout=30) for i in range(300)]
        answers = [f.result() for f in futures]
    assert answers == [f"call {i}".encode() * (i % 50 + 1) for i in range(300)]


def test_a_handlers_error_is_its_status_and_percent_encoded_message(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.call("refuse", "não é válido: 100% errado\nlinha 2".encode())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "não é válido: 100% errado\nlinha 2"


def test_an_unexpected_error_is_unknown_and_the_connection_stays_usable(harness: Harness) -> None:
    with grpc.insecure_channel(harness.target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/test.Service/crash")(b"", timeout=10)
        assert info.value.code() is grpc.StatusCode.UNKNOWN
        assert channel.unary_unary("/test.Service/echo")(b"after", timeout=10) == b"after"


def test_an_unknown_method_is_unimplemented(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.call("nope", b"")
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "/test.Service/nope" in str(info.value.details())


def test_a_request_over_the_receive_limit_is_resource_exhausted(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.call("echo", b"x" * (MAX_RECEIVE + 1))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert harness.call("echo", b"x" * MAX_RECEIVE) == b"x" * MAX_RECEIVE


def test_a_compressed_request_is_unimplemented(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.call("echo", b"z" * 1000, compression=grpc.Compression.Gzip)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "gzip" in str(info.value.details())


def test_an_answer_over_the_send_limit_is_resource_exhausted(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.call("big", str(MAX_SEND + 256).encode())
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_deadline_ends_the_call_and_cancels_the_handler(harness: Harness) -> None:
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        harness.call("slow", b"30", timeout=0.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 10
    deadline = time.monotonic() + 10
    while not harness.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert harness.cancelled == ["slow"]


def test_a_client_cancelling_cancels_the_handler(harness: Harness) -> None:
    with grpc.insecure_channel(harness.target) as channel:
        future = channel.unary_unary("/test.Service/slow").future(b"30")
        assert harness.started.wait(10)
        future.cancel()
        deadline = time.monotonic() + 10
        while not harness.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
    assert harness.cancelled == ["slow"]


def test_draining_answers_the_calls_in_flight_and_then_refuses(harness: Harness) -> None:
    with grpc.insecure_channel(harness.target) as channel:
        future = channel.unary_unary("/test.Service/slow").future(b"0.5", timeout=30)
        assert harness.started.wait(10)
        stopped = asyncio.run_coroutine_threadsafe(harness.server.stop(10), harness.loop)
        assert future.result() == b"done"
        stopped.result(15)
    with pytest.raises(grpc.RpcError) as info:
        harness.call("echo", b"late", timeout=2)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_a_client_that_does_not_speak_http2_is_disconnected(harness: Harness) -> None:
    host, port = harness.target.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = conn.recv(4096)
        while data:  # our SETTINGS and the GOAWAY, then the close
            data = conn.recv(4096)


def _read_frames(
    sock: socket.socket, until: Any, timeout: float = 5
) -> list[tuple[int, int, bytes]]:
    """(type, stream, payload) of each frame the server sends, until ``until(frames)``."""
    sock.settimeout(timeout)
    buffer, frames = b"", []
    while not until(frames):
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, stream = buffer[3], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            frames.append((kind, stream, buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
    return frames


def test_calls_past_the_concurrent_stream_limit_are_refused(harness: Harness) -> None:
    """A peer that ignores SETTINGS_MAX_CONCURRENT_STREAMS gets the extra streams refused
    (RST_STREAM REFUSED_STREAM), so one connection cannot hold unbounded open calls."""
    import hpack

    from usina.serving.grpc_h2 import MAX_CONCURRENT_STREAMS, PREFACE

    host, port = harness.target.rsplit(":", 1)
    block = hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/test.Service/echo"),
            (":authority", harness.target),
            ("content-type", "application/grpc"),
        ]
    )

    def headers(stream: int) -> bytes:  # END_HEADERS, no END_STREAM: the call stays open
        return len(block).to_bytes(3, "big") + bytes((1, 0x4)) + stream.to_bytes(4, "big") + block

    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
        opened = [1 + 2 * i for i in range(MAX_CONCURRENT_STREAMS + 1)]
        sock.sendall(b"".join(headers(s) for s in opened))
        frames = _read_frames(sock, lambda fs: any(f[0] == 3 for f in fs))
    settings = next(f[2] for f in frames if f[0] == 4 and f[2])
    advertised = {
        int.from_bytes(settings[i : i + 2], "big"): int.from_bytes(settings[i + 2 : i + 6], "big")
        for i in range(0, len(settings), 6)
    }
    assert advertised[0x3] == MAX_CONCURRENT_STREAMS
    refused = [(f[1], int.from_bytes(f[2], "big")) for f in frames if f[0] == 3]
    assert refused == [(opened[-1], 7)]  # only the one past the limit, REFUSED_STREAM
