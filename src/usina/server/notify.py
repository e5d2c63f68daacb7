"""Notifications: a webhook call when a run fails, succeeds or is cancelled.

A ``Webhook`` names a URL, the states it is for and a body format: ``json`` (usina's own:
run, pipeline, project, state, error, the server's link to the run) or ``slack`` (an incoming
webhook's ``{"text": ...}``). A secret travels by reference: ``token_env`` names an environment
variable of the server whose value is sent as ``Authorization: Bearer …``; it is never stored
or logged.

The ``Notifier`` is level-triggered like the rest of the server: each pass looks at the runs that
finished recently and at their events, and calls each matching hook that has no
``notification_sent`` event for that run yet. A call that fails (no answer, or a status of 300
or more) is recorded as ``notification_retry`` and tried again after a backoff (1 s, 2 s, 4 s …,
up to ``max_tries``), then ``notification_failed``. Events are the record, so a restarted
server neither forgets a notification nor sends a delivered one again. Several replicas may
race on the same run: delivery is at least once (receivers get the run id to deduplicate).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usina.engine.records import Event, RunId, RunState
from usina.server.periodic import Periodic

if TYPE_CHECKING:
    from usina.engine.ports import MetadataStore
    from usina.engine.records import RunRecord

log = logging.getLogger(__name__)

SENT = "notification_sent"
RETRY = "notification_retry"
FAILED = "notification_failed"


@dataclass(frozen=True, slots=True)
class Webhook:
    """name: unique, in the run's events. on: run states that call it. fmt: json or slack.
    token_env: environment variable holding a bearer token (by reference, never stored)."""

    name: str
    url: str
    on: frozenset[str] = frozenset({RunState.FAILED.value})
    fmt: str = "json"
    token_env: str | None = None
    max_tries: int = 5

    @classmethod
    def parse(cls, text: str, index: int = 0) -> Webhook:
        """``URL`` or ``URL;on=failed,succeeded;format=slack;token-env=VAR;name=ops``."""
        url, *options = [p.strip() for p in text.split(";")]
        values = dict(o.split("=", 1) for o in options if "=" in o)
        unknown = set(values) - {"on", "format", "token-env", "name"}
        if unknown or not url.startswith(("http://", "https://")):
            raise ValueError(
                f"webhook {text!r}: expected URL[;on=failed,succeeded][;format=json|slack]"
                "[;token-env=VAR][;name=NAME]"
            )
        on = frozenset(s.strip() for s in values.get("on", "failed").split(","))
        bad = on - {s.value for s in RunState if s.finished}
        if bad:
            raise ValueError(f"webhook {text!r}: on= takes failed, succeeded, cancelled")
        fmt = values.get("format", "json")
        if fmt not in ("json", "slack"):
            raise ValueError(f"webhook {text!r}: format is json or slack")
        return cls(values.get("name", f"hook{index}"), url, on, fmt, values.get("token-env"))


def body(hook: Webhook, run: RunRecord, link: str | None) -> dict[str, Any]:
    if hook.fmt == "slack":
        icon = {"failed": ":red_circle:", "succeeded": ":large_green_circle:"}.get(
            run.state.value, ":white_circle:"
        )
        text = f"{icon} usina run `{run.id}` of *{run.pipeline}* ({run.project}): {run.state.value}"
        if run.error:
            text += f"\n> {run.error[:500]}"
        if link:
            text += f"\n<{link}|open the run>"
        return {"text": text}
    return {
        "run": run.id, "pipeline": run.pipeline, "project": run.project,
        "state": run.state.value, "error": run.error, "labels": dict(run.labels), "link": link,
    }  # fmt: skip


@dataclass
class Notifier:
    metadata: MetadataStore
    hooks: tuple[Webhook, ...]
    base_url: str | None = None  # the server's external URL, for links to the run page
    window: float = 86_400.0  # runs finished this long ago are still looked at
    backoff: float = 1.0
    timeout: float = 10.0
    interval: float = 2.0
    _loop: Periodic | None = None

    def run_once(self, now: float | None = None) -> int:
        """One pass; how many notifications were delivered."""
        if not self.hooks:
            return 0
        now = time.time() if now is None else now
        sent = 0
        for run in self.metadata.list_runs(limit=200):
            if not run.state.finished or (run.finished_at or now) < now - self.window:
                continue
            hooks = [h for h in self.hooks if run.state.value in h.on]
            if not hooks:
                continue
            events = self.metadata.list_events(run.id)
            for hook in hooks:
                sent += self._maybe_send(hook, run, events, now)
        return sent

    def _maybe_send(self, hook: Webhook, run: RunRecord, events: list[Event], now: float) -> int:
        mine = [e for e in events if e.node == f"webhook:{hook.name}"]
        if any(e.kind in (SENT, FAILED) for e in mine):
            return 0
        tries = [e for e in mine if e.kind == RETRY]
        if tries and now < tries[-1].at + self.backoff * 2 ** (len(tries) - 1):
            return 0
        link = f"{self.base_url.rstrip('/')}/ui/runs/{run.id}" if self.base_url else None
        error = self._post(hook, body(hook, run, link))
        node = f"webhook:{hook.name}"
        if error is None:
            self.metadata.add_event(Event(RunId(run.id), now, SENT, node=node, message=hook.url))
            return 1
        kind = FAILED if len(tries) + 1 >= hook.max_tries else RETRY
        self.metadata.add_event(Event(RunId(run.id), now, kind, node=node, message=error))
        log.warning("webhook %s for run %s: %s", hook.name, run.id, error)
        return 0

    def _post(self, hook: Webhook, payload: dict[str, Any]) -> str | None:
        headers = {"Content-Type": "application/json", "User-Agent": "usina"}
        if hook.token_env:
            token = os.environ.get(hook.token_env)
            if not token:
                return f"the environment variable {hook.token_env} (its token) is not set"
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            hook.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                reply.read()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return f"no answer: {getattr(exc, 'reason', exc)}"
        return None

    def start(self) -> None:
        if self.hooks and self._loop is None:
            self._loop = Periodic("usina-notify", self.run_once, self.interval)
            self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
