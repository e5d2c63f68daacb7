"""The platform API as the MCP tools see it: async JSON calls with one caller's token.

Errors become :class:`ApiError` carrying the API's status and its ``detail`` text, which the
tools hand to the agent unchanged (a 403 says which role the action needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from usina.errors import UsinaError


class ApiError(UsinaError):
    """The platform API refused or failed a call."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def _detail(reply: httpx.Response) -> str:
    try:
        detail = reply.json().get("detail", "")
    except (ValueError, AttributeError):
        detail = reply.text[:500]
    return detail if isinstance(detail, str) else str(detail)


_HINTS = {
    401: "the usina server refused the token ({detail}); pass a token from 'usina token create'",
    403: "not allowed: {detail}",
    404: "not found: {detail}",
    409: "conflict: {detail}",
}


@dataclass(frozen=True, slots=True)
class PlatformAPI:
    """``base_url`` of usina server (``http://usina:8000``); ``transport`` lets the server
    call its own app in-process (``httpx.ASGITransport``) instead of over the network."""

    base_url: str
    transport: httpx.AsyncBaseTransport | None = None
    timeout_s: float = 30.0

    async def call(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        text: bool = False,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        async with httpx.AsyncClient(
            base_url=self.base_url, transport=self.transport, timeout=self.timeout_s
        ) as client:
            try:
                reply = await client.request(
                    method, f"/api/v1{path}", params=query, json=body, headers=headers
                )
            except httpx.TransportError as exc:
                raise ApiError(
                    503, f"cannot reach the usina server at {self.base_url}: {exc}"
                ) from exc
        if reply.status_code >= 400:
            detail = _detail(reply)
            hint = _HINTS.get(reply.status_code, "the usina server answered {status}: {detail}")
            raise ApiError(reply.status_code, hint.format(detail=detail, status=reply.status_code))
        if text:
            return reply.text
        return reply.json() if reply.content else None
