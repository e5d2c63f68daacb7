"""gRPC's transport, unary calls over cleartext HTTP/2, written for the serving event loop.

grpcio's server spent most of a one-row ``ModelInfer`` in its own machinery: a poller thread
handing each event to the loop, a completion-queue round trip and a ``sendmsg`` per call, about
250 µs of CPU a request on the benchmark machine against the ~60 µs that REST costs with
httptools. This server reads HTTP/2 frames straight off a uvloop transport, decodes headers with
``hpack``, calls the same bytes-in, bytes-out handlers and writes every answer that is ready in
one loop pass to a connection with one ``write``.

What it implements, and what it does not: the client's connection preface and SETTINGS (ours
cap a connection at ``MAX_CONCURRENT_STREAMS`` calls at once), PING,
flow control both ways (the peer's windows are honoured when sending; ours are kept wide open
and topped up, since a request's size is bounded by ``max_receive`` anyway), RST_STREAM (the
call is cancelled), CONTINUATION, padding, GOAWAY when draining, ``grpc-timeout`` deadlines
and the 5-byte gRPC message prefix. Unary calls only (one message each way), no compression (a
compressed message gets ``UNIMPLEMENTED``; clients send identity unless told otherwise), no TLS
and no HTTP/1.1 upgrade: gRPC clients talk HTTP/2 with prior knowledge on an insecure channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hpack

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)


class Status(enum.IntEnum):
    """gRPC status codes (the ones this server answers with)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT = range(10)
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_MAX_WINDOW = (1 << 31) - 1
_DEFAULT_WINDOW = 65535
_OUR_MAX_FRAME = 16384  # the default: clients need no SETTINGS from us to use it
_MAX_HEADER_BLOCK = 64 * 1024
_PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR, _COMPRESSION_ERROR = 1, 3, 6, 9
_REFUSED_STREAM = 7
# SETTINGS_MAX_CONCURRENT_STREAMS: calls one connection may have open at once. Clients queue
# beyond it; a peer that ignores it has the extra streams refused, so one connection cannot
# hold unbounded calls (and their request bodies) in memory.
MAX_CONCURRENT_STREAMS = 128
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + stream.to_bytes(4) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as an HPACK literal without indexing (new name, no Huffman): it leaves the
    client's dynamic table alone, so every connection can share the same encoded bytes."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


# ":status: 200" is entry 8 of HPACK's static table.
_RESPONSE_HEADERS = b"\x88" + _literal(b"content-type", b"application/grpc")
_OK_TRAILER_BLOCK = _literal(b"grpc-status", b"0")


def _percent_encode(message: str) -> bytes:
    """``grpc-message`` is percent-encoded UTF-8 (gRPC's HTTP/2 spec)."""
    out = bytearray()
    for byte in message.encode()[:4096]:
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def _error_block(status: Status, message: str) -> bytes:
    block = _literal(b"grpc-status", str(int(status)).encode())
    if message:
        block += _literal(b"grpc-message", _percent_encode(message))
    return block


def _parse_timeout(value: bytes) -> float | None:
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


@dataclass(slots=True)
class _Stream:
    id: int
    send_window: int
    path: bytes = b""
    content_type: bytes = b""
    encoding: bytes = b""
    timeout: float | None = None
    body: bytearray = field(default_factory=bytearray)
    too_large: bool = False
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    pending: bytes = b""  # DATA waiting for window, then the trailers
    trailers: bytes = b""
    done: bool = False  # the answer is written (or queued behind the window)


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class GrpcServer:
    """Serves ``handlers`` (``/package.Service/Method`` to an async bytes-to-bytes function) on
    sockets it is given; ``status_of`` turns what a handler raised into a status and message."""

    def __init__(
        self,
        handlers: Mapping[str, Callable[[bytes], Awaitable[bytes]]],
        status_of: Callable[[BaseException], tuple[Status, str]],
        *,
        max_receive: int,
        max_send: int,
    ) -> None:
        self.handlers = {path.encode(): fn for path, fn in handlers.items()}
        self.status_of = status_of
        self.max_receive = max_receive
        self.max_send = max_send
        self.connections: set[_Connection] = set()
        self.draining = False
        self._servers: list[asyncio.Server] = []

    async def start(self, sock: socket.socket, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=backlog)
        self._servers.append(server)

    @property
    def in_flight(self) -> int:
        return sum(len(c.streams) for c in self.connections)

    async def stop(self, grace: float) -> None:
        """Stop accepting, tell every client to go away (answering the calls already started),
        wait up to ``grace`` seconds for them, then close what is left."""
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1)


class _Connection(asyncio.Protocol):
    """One client connection: frames in, answers out."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.buffer = bytearray()
        self.preface = False
        self.decoder = hpack.Decoder()
        self.streams: dict[int, _Stream] = {}
        self.last_stream = 0
        self.send_window = _DEFAULT_WINDOW
        self.peer_initial_window = _DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.received = 0  # DATA bytes taken since our last connection WINDOW_UPDATE
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.headers_for: int | None = None  # a header block continues on this stream
        self.header_block = bytearray()
        self.header_flags = 0
        self.closing = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)
        if self.server.draining:
            transport.close()
            return
        # Our windows wide open: 2^31-1 for every stream (SETTINGS_INITIAL_WINDOW_SIZE) and the
        # connection; requests are bounded by max_receive, not by flow control.
        settings = struct.pack(">HIHI", 0x3, MAX_CONCURRENT_STREAMS, 0x4, _MAX_WINDOW)
        self.write(_frame(_SETTINGS, 0, 0, settings))
        self.write(_frame(_WINDOW, 0, 0, struct.pack(">I", _MAX_WINDOW - _DEFAULT_WINDOW)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        for stream in self.streams.values():
            self._cancel(stream)
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        try:
            if not self.preface:
                if len(buffer) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buffer)):
                        raise _ConnectionError(_PROTOCOL_ERROR, "not an HTTP/2 client preface")
                    return
                if buffer[: len(PREFACE)] != PREFACE:
                    raise _ConnectionError(_PROTOCOL_ERROR, "not an HTTP/2 client preface")
                del buffer[: len(PREFACE)]
                self.preface = True
            offset = 0
            end = len(buffer)
            while end - offset >= 9:
                length = int.from_bytes(buffer[offset : offset + 3])
                if length > _OUR_MAX_FRAME:
                    raise _ConnectionError(_FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if end - offset < 9 + length:
                    break
                kind = buffer[offset + 3]
                flags = buffer[offset + 4]
                stream_id = int.from_bytes(buffer[offset + 5 : offset + 9]) & _MAX_WINDOW
                payload = bytes(buffer[offset + 9 : offset + 9 + length])
                offset += 9 + length
                self._frame(kind, flags, stream_id, payload)
                if self.closing:
                    return
            del buffer[:offset]
        except _ConnectionError as exc:
            log.debug("gRPC connection error: %s", exc)
            self._abort_connection(exc.code, str(exc))
        except hpack.HPACKError as exc:
            self._abort_connection(_COMPRESSION_ERROR, f"bad header block: {exc}")

    # ------------------------------------------------------------------ frames

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.headers_for is not None and kind != _CONT:
            raise _ConnectionError(_PROTOCOL_ERROR, "a header block was interrupted")
        if kind == _DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == _HEADERS:
            if stream_id == 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "HEADERS on stream 0")
            payload = self._unpad(flags, payload)
            if flags & _PRIORITY_FLAG:
                payload = payload[5:]
            self.header_block = bytearray(payload)
            self.header_flags = flags
            self.headers_for = stream_id
            if flags & _END_HEADERS:
                self._on_headers()
        elif kind == _CONT:
            if self.headers_for != stream_id:
                raise _ConnectionError(_PROTOCOL_ERROR, "an unexpected CONTINUATION")
            self.header_block += payload
            if len(self.header_block) > _MAX_HEADER_BLOCK:
                raise _ConnectionError(_PROTOCOL_ERROR, "a header block is too large")
            if flags & _END_HEADERS:
                self._on_headers()
        elif kind == _SETTINGS:
            if not flags & _ACK:
                self._on_settings(payload)
        elif kind == _WINDOW:
            self._on_window(stream_id, int.from_bytes(payload[:4]) & _MAX_WINDOW)
        elif kind == _PING:
            if not flags & _ACK:
                self.write(_frame(_PING, _ACK, 0, payload))
        elif kind == _RST:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self._cancel(stream)
        elif kind == _GOAWAY:
            pass  # the client opens no new streams; the ones open are answered
        elif kind == _PUSH:
            raise _ConnectionError(_PROTOCOL_ERROR, "a client sent PUSH_PROMISE")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 asks.

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & _PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _ConnectionError(_PROTOCOL_ERROR, "bad padding")
        return payload[1 : len(payload) - payload[0]]

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "a SETTINGS frame of a bad size")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == 0x4:  # INITIAL_WINDOW_SIZE
                if value > _MAX_WINDOW:
                    raise _ConnectionError(_FLOW_CONTROL_ERROR, "window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == 0x5:  # MAX_FRAME_SIZE
                self.peer_max_frame = max(16384, min(value, 1 << 24))
        self.write(_frame(_SETTINGS, _ACK, 0))
        self._send_pending()

    def _on_window(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self.send_window += increment
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
        self._send_pending()

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self.received += len(payload)
        if self.received > 1 << 30:
            self.write(_frame(_WINDOW, 0, 0, struct.pack(">I", self.received)))
            self.received = 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.task is not None or stream.done:
            return  # a stream already answered or reset: its data counted for the window only
        payload = self._unpad(flags, payload)
        if not stream.too_large:
            stream.body += payload
            if len(stream.body) > self.server.max_receive + 5:
                stream.too_large = True
                stream.body = bytearray()
        if flags & _END_STREAM:
            self._dispatch(stream)

    def _on_headers(self) -> None:
        stream_id = self.headers_for
        assert stream_id is not None
        self.headers_for = None
        flags = self.header_flags
        headers = self.decoder.decode(bytes(self.header_block), raw=True)
        self.header_block = bytearray()
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: the end of its request
            if flags & _END_STREAM and stream.task is None and not stream.done:
                self._dispatch(stream)
            return
        if stream_id <= self.last_stream or not stream_id & 1:
            return  # a stream that is closed already (or not the client's to open)
        self.last_stream = stream_id
        if self.server.draining or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self.write(_frame(_RST, 0, stream_id, struct.pack(">I", _REFUSED_STREAM)))
            return
        stream = _Stream(stream_id, self.peer_initial_window)
        for name, value in headers:
            if name == b":path":
                stream.path = value
            elif name == b"content-type":
                stream.content_type = value
            elif name == b"grpc-timeout":
                stream.timeout = _parse_timeout(value)
            elif name == b"grpc-encoding":
                stream.encoding = value
        self.streams[stream_id] = stream
        if flags & _END_STREAM:
            self._dispatch(stream)

    # ------------------------------------------------------------------ calls

    def _dispatch(self, stream: _Stream) -> None:
        if not stream.content_type.startswith(b"application/grpc"):
            self._finish(stream, None, Status.UNKNOWN, "content-type is not application/grpc")
            return
        handler = self.server.handlers.get(stream.path)
        if handler is None:
            self._finish(
                stream, None, Status.UNIMPLEMENTED, f"Method not found: {stream.path.decode()}"
            )
            return
        if stream.too_large:
            self._finish(
                stream,
                None,
                Status.RESOURCE_EXHAUSTED,
                f"the request is larger than {self.server.max_receive} bytes",
            )
            return
        body = stream.body
        if len(body) < 5 or int.from_bytes(body[1:5]) != len(body) - 5:
            self._finish(stream, None, Status.INTERNAL, "the request is not one gRPC message")
            return
        if body[0]:
            self._finish(
                stream,
                None,
                Status.UNIMPLEMENTED,
                f"compressed messages ({stream.encoding.decode() or '?'}) are not supported; "
                "send them uncompressed",
            )
            return
        message = bytes(body[5:])
        stream.body = bytearray()
        stream.task = self.loop.create_task(self._call(stream, handler, message))
        if stream.timeout is not None:
            stream.timer = self.loop.call_later(stream.timeout, self._expire, stream)

    async def _call(
        self, stream: _Stream, handler: Callable[[bytes], Awaitable[bytes]], message: bytes
    ) -> None:
        try:
            answer = await handler(message)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            status, text = self.server.status_of(exc)
            self._finish(stream, None, status, text)
            return
        if len(answer) > self.server.max_send:
            self._finish(
                stream,
                None,
                Status.RESOURCE_EXHAUSTED,
                f"the answer is larger than {self.server.max_send} bytes",
            )
            return
        self._finish(stream, answer, Status.OK, "")

    def _expire(self, stream: _Stream) -> None:
        stream.timer = None
        if not stream.done:
            if stream.task is not None:
                stream.task.cancel()
            self._finish(stream, None, Status.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _cancel(self, stream: _Stream) -> None:
        stream.done = True
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None

    def _finish(self, stream: _Stream, answer: bytes | None, status: Status, text: str) -> None:
        if stream.done or self.closing:
            return
        stream.done = True
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        sid = stream.id
        if answer is None:  # trailers-only: one HEADERS frame ends the call
            block = _RESPONSE_HEADERS + _error_block(status, text)
            self.write(_frame(_HEADERS, _END_STREAM | _END_HEADERS, sid, block))
            self.streams.pop(sid, None)
            return
        self.write(_frame(_HEADERS, _END_HEADERS, sid, _RESPONSE_HEADERS))
        stream.pending = b"\x00" + struct.pack(">I", len(answer)) + answer
        stream.trailers = _frame(_HEADERS, _END_STREAM | _END_HEADERS, sid, _OK_TRAILER_BLOCK)
        self._send_stream(stream)

    def _send_stream(self, stream: _Stream) -> None:
        """Write as much of the stream's answer as the windows allow; the trailers once all is
        out."""
        data = stream.pending
        while data:
            size = min(len(data), self.send_window, stream.send_window, self.peer_max_frame)
            if size <= 0:
                break
            self.write(_frame(_DATA, 0, stream.id, data[:size]))
            data = data[size:]
            self.send_window -= size
            stream.send_window -= size
        stream.pending = data
        if not data:
            self.write(stream.trailers)
            self.streams.pop(stream.id, None)

    def _send_pending(self) -> None:
        for stream in list(self.streams.values()):
            if stream.done and stream.pending:
                self._send_stream(stream)

    # ------------------------------------------------------------------ output

    def write(self, data: bytes) -> None:
        """Queue ``data``; everything queued in one loop pass goes out in one write."""
        self.out.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def go_away(self) -> None:
        payload = struct.pack(">II", self.last_stream, 0)
        self.write(_frame(_GOAWAY, 0, 0, payload))

    def close(self) -> None:
        self._flush()
        self.transport.close()

    def _abort_connection(self, code: int, message: str) -> None:
        payload = struct.pack(">II", self.last_stream, code) + message.encode()[:256]
        self.out.append(_frame(_GOAWAY, 0, 0, payload))
        self._flush()
        self.closing = True
        for stream in self.streams.values():
            self._cancel(stream)
        self.streams.clear()
        self.transport.close()
