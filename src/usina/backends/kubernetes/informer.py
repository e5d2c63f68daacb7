"""The informer: one list+watch of one resource kind in one namespace, kept alive forever.

It lists (paged), then watches from the list's ``resourceVersion`` with bookmarks; a watch that
ends is re-opened from the last version seen; ``410 Gone`` re-lists; 429, 5xx and dropped
connections back off exponentially with full jitter (and honour ``Retry-After``). Every object
goes to a sink as raw JSON; nothing is deserialised into client models (CPU at scale).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from typing import TYPE_CHECKING, Any, Protocol

import urllib3
from kubernetes.client.exceptions import ApiException

from usina.backends.kubernetes.settings import SELECTOR, KubernetesSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Sink(Protocol):
    def replace(self, kind: str, objects: list[Obj]) -> None:
        """A fresh list: these are all the objects of ``kind`` that exist now."""

    def apply(self, kind: str, event: str, obj: Obj) -> None:
        """One watch event: ``ADDED``, ``MODIFIED`` or ``DELETED``."""


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**n))``."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self, at_least: float = 0.0) -> float:
        delay = self._rng.uniform(0, min(self.cap, self.base * 2**self.failures))
        self.failures += 1
        return max(delay, min(at_least, self.cap))

    def reset(self) -> None:
        self.failures = 0


def retry_after(exc: ApiException) -> float:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    """Keeps ``sink`` in step with every usina-labelled object of one kind in one namespace."""

    def __init__(
        self,
        kind: str,
        list_call: Callable[..., Any],
        settings: KubernetesSettings,
        sink: Sink,
        stop: threading.Event,
        on_sync: Callable[[], None] = lambda: None,
    ) -> None:
        self.kind = kind
        self._list = list_call
        self._settings = settings
        self._sink = sink
        self._stop = stop
        self._on_sync = on_sync
        self._backoff = Backoff(settings.backoff_base, settings.backoff_max)
        self._resp: Any = None
        self._resp_lock = threading.Lock()
        self.resource_version: str | None = None
        self.relists = 0
        self.watches = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name=f"usina-k8s-{kind}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Stop: the caller has set ``stop``; cut the open watch so the thread sees it."""
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                    self._on_sync()
                self._watch()
                self._backoff.reset()
            except Gone:
                log.info("watch of %s expired (410 Gone); listing again", self.kind)
                self.resource_version = None
            except ApiException as exc:
                if exc.status == 410:
                    self.resource_version = None
                    continue
                self.errors += 1
                delay = self._backoff.next(retry_after(exc))
                log.warning(
                    "%s %s from the API server; retrying in %.2f s", self.kind, exc.status, delay
                )
                self._stop.wait(delay)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.errors += 1
                delay = self._backoff.next()
                log.warning(
                    "watch of %s dropped (%s); retrying in %.2f s",
                    self.kind,
                    type(exc).__name__,
                    delay,
                )
                self._stop.wait(delay)

    def _timeout(self) -> tuple[float, float]:
        return (self._settings.request_timeout, self._settings.request_timeout)

    def _relist(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "label_selector": SELECTOR,
                "limit": self._settings.list_page_size,
            }
            if token:
                kwargs["_continue"] = token
            resp = self._list(
                self._settings.namespace,
                _preload_content=False,
                _request_timeout=self._timeout(),
                **kwargs,
            )
            body = json.loads(resp.data)
            items += body.get("items") or []
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self.relists += 1
        self._sink.replace(self.kind, items)
        self.resource_version = str(meta.get("resourceVersion") or "") or None

    def _watch(self) -> None:
        timeout = self._settings.watch_timeout
        resp = self._list(
            self._settings.namespace,
            label_selector=SELECTOR,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(self._settings.request_timeout, timeout + 30),
        )
        self.watches += 1
        with self._resp_lock:
            self._resp = resp
        try:
            if self._stop.is_set():
                return
            for line in _lines(resp):
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ApiException(
                        status=int(obj.get("code") or 500), reason=str(obj.get("message"))
                    )
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind != "BOOKMARK":
                    self._sink.apply(self.kind, kind, obj)
                if version:
                    self.resource_version = str(version)
                self._backoff.reset()
        finally:
            with self._resp_lock:
                self._resp = None
            resp.release_conn()


def _lines(resp: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer
