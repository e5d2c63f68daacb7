"""Following a running attempt's output (``/logs?follow=true``) without ever holding a worker
thread, and at most a few streams per token.

The stream is an async generator: it waits with ``asyncio.sleep`` and reads the log through the
``Backend`` port in short calls run off the event loop on a small limiter of its own, so a
hundred silent streams cost a hundred sleeping coroutines, not a hundred of the thread pool's
workers (which the synchronous routes and ``/healthz`` need). ``FollowSlots`` bounds open
streams per token and per replica; a slot is taken before the response starts and given back
when it ends however it ends (the attempt finished, the time limit, the client went away).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread
from fastapi import HTTPException
from starlette.responses import StreamingResponse

from usina.engine.ports import log_key
from usina.engine.records import AttemptRecord, AttemptState
from usina.logtext import terminal_safe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from starlette.types import Receive, Scope, Send

    from usina.server.context import ServerContext

T = TypeVar("T")

# Reads of followed logs share these threads only: a slow store cannot starve the routes.
_READERS = 4


class FollowSlots:
    """Open log streams, per token and in all, with their bounds."""

    def __init__(self, per_token: int, total: int) -> None:
        self.per_token = per_token
        self.total = total
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self.readers = anyio.CapacityLimiter(_READERS)

    def take(self, token_id: str) -> None:
        """Take a slot for ``token_id``, or 429 naming the bound that is reached."""
        with self._lock:
            held = self._open.get(token_id, 0)
            if held >= self.per_token:
                raise HTTPException(
                    429,
                    f"this token already follows {held} logs, the server's limit "
                    f"(GuardSettings.follow_per_token={self.per_token}); close one, or read "
                    "the log without follow=true",
                    headers={"Retry-After": "5"},
                )
            if sum(self._open.values()) >= self.total:
                raise HTTPException(
                    429,
                    f"this server already streams {self.total} logs "
                    "(GuardSettings.follow_total); try again shortly",
                    headers={"Retry-After": "5"},
                )
            self._open[token_id] = held + 1

    def give_back(self, token_id: str) -> None:
        with self._lock:
            held = self._open.get(token_id, 0) - 1
            if held > 0:
                self._open[token_id] = held
            else:
                self._open.pop(token_id, None)

    def open_streams(self, token_id: str | None = None) -> int:
        """Streams open now, of one token or of all."""
        with self._lock:
            if token_id is not None:
                return self._open.get(token_id, 0)
            return sum(self._open.values())


class FollowResponse(StreamingResponse):
    """A streaming response that gives its slot back when it ends, even if it never started
    streaming (the client left before the first byte)."""

    def __init__(self, content: AsyncIterator[bytes], slots: FollowSlots, token_id: str) -> None:
        super().__init__(content, media_type="text/plain")
        self._slots = slots
        self._token_id = token_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back(self._token_id)
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def _attempt_running(ctx: ServerContext, attempt: AttemptRecord) -> bool:
    current = next(
        (a for a in ctx.metadata.get_attempts(attempt.run_id, attempt.node) if a.id == attempt.id),
        attempt,
    )
    return current.state is AttemptState.RUNNING


async def follow_log(
    ctx: ServerContext,
    attempt: AttemptRecord,
    slots: FollowSlots,
    *,
    seconds: float,
    poll: float,
) -> AsyncIterator[bytes]:
    """The attempt's output as it grows, until it ends (then the stored copy's rest) or
    ``seconds`` pass."""
    backend = ctx.engine.backend

    async def off_loop(fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=slots.readers)

    sent = 0
    deadline = time.monotonic() + seconds
    last_check = time.monotonic()
    while time.monotonic() < deadline:
        text: bytes = (await off_loop(backend.logs, attempt.id)).encode()
        if len(text) > sent:
            yield _safe(text[sent:])
            sent = len(text)
        if time.monotonic() - last_check > 1.0:
            last_check = time.monotonic()
            if not await off_loop(_attempt_running, ctx, attempt):
                break
        await asyncio.sleep(poll)
    raw: bytes | None = await off_loop(ctx.artifacts.read_record, log_key(attempt.id))
    if raw is not None and len(raw) > sent:
        yield _safe(raw[sent:])


def _safe(chunk: bytes) -> bytes:
    return terminal_safe(chunk.decode(errors="replace")).encode()
