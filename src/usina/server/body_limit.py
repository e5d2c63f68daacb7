"""The request body limit of every server route: an ASGI middleware answering 413 before a
body larger than ``GuardSettings.max_body_bytes`` is read into memory.

A declared ``Content-Length`` over the limit is refused at once; a body sent without one
(chunked) is counted as it arrives and refused when it passes the limit, before the route
sees any of it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` inside the application when the body passes the limit (an
    ``HTTPException``, so the route's body parsing passes it on as a 413)."""


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413 and a message naming the limit."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})  # path prefix -> its own limit (code bundle uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = next((n for p, n in self.larger.items() if path.startswith(p)), self.max_bytes)
        if limit != self.max_bytes:
            await BodyLimit(self.app, limit)(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, "the Content-Length header is not a number", 400)
                    return
                if declared > self.max_bytes:
                    await self._refuse(send, self._message(declared))
                    return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(413, self._message(None))
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:
            if not started:
                await self._refuse(send, str(exc.detail))

    def _message(self, declared: int | None) -> str:
        size = f" ({declared} bytes)" if declared is not None else ""
        return (
            f"the request body{size} is over the server's limit of {self.max_bytes} bytes "
            "(GuardSettings.max_body_bytes); send less, e.g. pass large inputs as artifacts"
        )

    @staticmethod
    async def _refuse(send: Send, detail: str, status: int = 413) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
