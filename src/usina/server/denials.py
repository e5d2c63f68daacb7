"""Refused requests in the audit log: unknown, revoked, expired or malformed tokens (401),
reads of another project's run (answered 404 as if it did not exist), cookie-only writes and
failed UI logins — each with the token's id (never the token) and the client's address.

Denials are rate-limited per client address and kind (``GuardSettings.
audit_denials_per_minute``), so a client hammering the server cannot fill the audit table; the
denials left out are counted and the count is written with the next entry that is recorded
(``detail.suppressed``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usina.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

    from usina.server.context import ServerContext

log = logging.getLogger(__name__)

ACTION = "access.denied"
_MAX_KEYS = 10_000


class HiddenRunError(NotFoundError):
    """A run that exists in a project the token cannot read: answered exactly like a missing
    run, and recorded as a denial by the server's handler."""

    def __init__(self, message: str, *, token_id: str, project: str, run_id: str) -> None:
        super().__init__(message)
        self.token_id = token_id
        self.project = project
        self.run_id = run_id


@dataclass
class _Window:
    start: float
    count: int = 0
    suppressed: int = 0


class DenialLog:
    """Writes denials to the platform's audit log, at most ``per_minute`` per client and kind."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}

    def _admit(self, client: str, kind: str) -> int | None:
        """None when this denial is over the rate; else how many were left out before it."""
        now = self.clock()
        with self._lock:
            if len(self._windows) > _MAX_KEYS:
                self._windows.clear()
            window = self._windows.get((client, kind))
            if window is None or now - window.start >= 60.0:
                carried = window.suppressed if window is not None else 0
                window = _Window(start=now, suppressed=carried)
                self._windows[(client, kind)] = window
            if window.count >= self.per_minute:
                window.suppressed += 1
                return None
            window.count += 1
            suppressed, window.suppressed = window.suppressed, 0
            return suppressed

    def record(
        self,
        ctx: ServerContext,
        kind: str,
        *,
        client: str,
        token_id: str | None,
        project: str | None = None,
        target: str | None = None,
        **detail: Any,
    ) -> bool:
        """Write one denial (unless over the rate); True when it was written."""
        suppressed = self._admit(client, kind)
        if suppressed is None:
            return False
        entry: dict[str, Any] = {"kind": kind, "client": client, "token_id": token_id, **detail}
        if suppressed:
            entry["suppressed"] = suppressed
        actor = f"token {token_id}" if token_id else f"anonymous ({client})"
        try:
            ctx.platform.audit(
                actor, ACTION, project=project, target=target, outcome="denied", detail=entry
            )
        except Exception as exc:  # the refusal stands even when the audit write fails
            log.warning("could not write the audit entry of a %s denial: %s", kind, exc)
            return False
        return True


def client_of(request: Request) -> str:
    """The address the request came from (the proxy's, behind one)."""
    return request.client.host if request.client is not None else "unknown"


def token_id_of(token: str) -> str | None:
    """The id part of a token shaped like ``usn_<id>_<secret>``; never the secret."""
    if not token.startswith("usn_"):
        return None
    token_id, sep, _secret = token[4:].partition("_")
    return token_id[:32] if sep and token_id else None
