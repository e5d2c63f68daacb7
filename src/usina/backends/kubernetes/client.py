"""The one way usina reaches the Kubernetes API: a kubeconfig loader and a retrying caller.

``api_client`` builds a configured ``kubernetes.client.ApiClient`` from the in-cluster service
account or a kubeconfig (``--context``/``--kubeconfig`` pick one); the Kubernetes backend and
``usina deploy`` both use it. ``KubeApi`` makes one call (a generated API method, or a raw
request such as a server-side apply ``PATCH``) and retries it with exponential backoff and
full jitter on 429, 5xx and dropped connections, honouring ``Retry-After``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from usina.errors import BackendError, MissingExtraError

try:
    import urllib3
    from kubernetes.client.exceptions import ApiException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("kubernetes", "k8s") from exc

from usina.backends.kubernetes.informer import Backoff, retry_after

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

log = logging.getLogger(__name__)
T = TypeVar("T")


def api_client(context: str | None = None, kubeconfig: str | Path | None = None) -> Any:
    """A ``kubernetes.client.ApiClient``: the in-cluster service account when neither
    ``context`` nor ``kubeconfig`` is given and one is mounted, else the kubeconfig
    (``$KUBECONFIG`` or ``~/.kube/config``) at ``context`` (default: its current context)."""
    from kubernetes import client, config

    if context is None and kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            pass
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, context=context
        )
    except (config.ConfigException, OSError) as exc:
        where = f"context {context!r} of " if context else ""
        raise BackendError(
            f"cannot load {where}the kubeconfig ({kubeconfig or '$KUBECONFIG or ~/.kube/config'})"
            f": {exc}; pass --context NAME or --kubeconfig FILE, or run inside a cluster"
        ) from exc
    return client.ApiClient()


@dataclass(frozen=True, slots=True)
class Response:
    """A raw response: status, reason and body (for callers that read error statuses)."""

    status: int
    reason: str
    data: bytes


class KubeApi:
    """Calls the API through ``api_client``, retrying what a retry can fix.

    backoff_base, backoff_max: seconds of the exponential backoff (full jitter).
    attempts: tries per call before the error is raised.
    request_timeout: seconds one request may take.
    stop: when set, no more retries (the backend is closing).
    """

    def __init__(
        self,
        api_client: Any,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        attempts: int = 8,
        request_timeout: float = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.api_client = api_client
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.attempts = attempts
        self.request_timeout = request_timeout
        self.stop = stop or threading.Event()

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        """One generated API method call; its body. ``ApiException`` for a final error status."""
        kwargs.setdefault("_preload_content", False)
        kwargs.setdefault("_request_timeout", self.request_timeout)
        name = getattr(fn, "__name__", repr(fn))

        def once() -> bytes:
            resp = fn(*args, **kwargs)
            try:
                return bytes(resp.data)
            finally:
                resp.release_conn()  # back to the pool: one keep-alive connection

        return self._retrying(name, once)

    def request(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """A raw request to ``path`` (with its query) with the client's credentials; retried
        on 429/5xx like ``call``; any final status is returned, not raised."""
        client = self.api_client
        all_headers = {**client.default_headers, **headers}
        for auth in client.configuration.auth_settings().values():  # bearer, refreshed
            if auth.get("in") == "header" and auth.get("value"):
                all_headers[auth["key"]] = auth["value"]
        url = f"{self.host.rstrip('/')}{path}"

        def once() -> Response:
            resp = client.rest_client.pool_manager.request(
                method, url, body=body, headers=all_headers, timeout=self.request_timeout
            )
            if resp.status == 429 or resp.status >= 500:
                raise ApiException(http_resp=resp)
            return Response(int(resp.status), str(resp.reason), bytes(resp.data))

        try:
            return self._retrying(f"{method} {path}", once)
        except ApiException as exc:
            body = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
            return Response(int(exc.status), str(exc.reason), body)

    def _retrying(self, name: str, once: Callable[[], T]) -> T:
        backoff = Backoff(self.backoff_base, self.backoff_max)
        for attempt in range(self.attempts):
            last = attempt == self.attempts - 1 or self.stop.is_set()
            try:
                return once()
            except ApiException as exc:
                retriable = exc.status == 429 or exc.status >= 500 or exc.status == 0
                if not retriable or last:
                    raise
                delay = backoff.next(retry_after(exc))
            except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                if last:
                    raise BackendError(
                        f"the Kubernetes API at {self.host} is unreachable: {exc}"
                    ) from exc
                delay = backoff.next()
            log.debug("retrying %s in %.2f s", name, delay)
            self.stop.wait(delay)
        raise AssertionError("unreachable")  # pragma: no cover
