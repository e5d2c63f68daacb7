"""``usina.Client``: read runs from Python (a notebook, a script), locally or from a server.

    client = usina.Client()                      # the store found like the CLI finds it
    client = usina.Client(server="http://...", token="...")
    run = client.latest_run("fraud")             # or client.run("fraud-2026...")
    run.step("evaluate").metrics                 # {"pr_auc": 0.91, ...}
    frame = client.load(run.id, "features")      # the step's output as its Python value
    print(client.logs(run.id, "train"))

It reads through the same runs source as ``usina runs`` (``usina.cli.source``): the local
store (``USINA_HOME`` or the nearest ``.usina`` above the working directory), or a usina
server's REST API. Outputs come back as what the step returned: a DataFrame (polars or pandas),
a numpy array, a dict or list, bytes; their bytes are checked against their sha256 first.
Importing ``usina`` does not import any of this; a Client imports what it needs when used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from usina.errors import NotFoundError, UsinaError

if TYPE_CHECKING:
    from usina.cli.source import RunsSource

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StepView:
    """One step of a run, as read: state, metrics, outputs (their digests and types)."""

    node: str
    state: str
    cached: bool
    attempts: int
    metrics: dict[str, float]
    outputs: tuple[Json, ...]
    error: str | None = None
    why: str | None = None  # why it ran instead of coming from the cache

    @classmethod
    def from_json(cls, data: Json) -> StepView:
        return cls(
            node=data["node"],
            state=data["state"],
            cached=bool(data.get("cached")),
            attempts=int(data.get("attempts") or 0),
            metrics={k: float(v) for k, v in (data.get("metrics") or {}).items()},
            outputs=tuple(data.get("outputs") or ()),
            error=data.get("error"),
            why=data.get("why"),
        )


@dataclass(frozen=True, slots=True)
class RunView:
    """A run, as read: its state, parameters and steps."""

    id: str
    pipeline: str
    state: str
    params: dict[str, Any]
    created_at: float
    finished_at: float | None
    error: str | None
    steps: tuple[StepView, ...] = field(default_factory=tuple)

    @classmethod
    def from_json(cls, data: Json) -> RunView:
        return cls(
            id=data["id"],
            pipeline=data["pipeline"],
            state=data["state"],
            params=dict(data.get("params") or {}),
            created_at=float(data["created_at"]),
            finished_at=data.get("finished_at"),
            error=data.get("error"),
            steps=tuple(StepView.from_json(s) for s in data.get("steps") or ()),
        )

    def step(self, name: str) -> StepView:
        for s in self.steps:
            if s.node == name:
                return s
        names = ", ".join(s.node for s in self.steps)
        raise NotFoundError(f"run {self.id} has no step {name!r}; its steps: {names}")

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Every step's metrics: ``{step: {name: value}}``."""
        return {s.node: dict(s.metrics) for s in self.steps if s.metrics}


class Client:
    """Runs, metrics, outputs and logs of a usina store or server.

    home: the state folder (default: ``USINA_HOME``, else the nearest ``.usina`` above the
        working directory, as the CLI finds it).
    server, token: read from a usina server instead (default: ``USINA_SERVER``,
        ``USINA_TOKEN`` when ``home`` is not given).
    """

    def __init__(
        self, home: str | None = None, *, server: str | None = None, token: str | None = None
    ) -> None:
        if server is None and home is None:
            server = os.environ.get("USINA_SERVER") or None
        if token is None:
            token = os.environ.get("USINA_TOKEN") or None
        self._server = server
        self._token = token
        self._home = home
        self._source: RunsSource | None = None

    # -- the source ------------------------------------------------------------------------

    @property
    def source(self) -> RunsSource:
        if self._source is None:
            from usina.cli.source import LocalRuns, RemoteRuns

            if self._server is not None:
                from usina.cli.remote import Remote

                self._source = RemoteRuns(Remote(self._server, self._token))
            else:
                from usina.compose.settings import Settings

                env = dict(os.environ)
                if self._home is not None:
                    env["USINA_HOME"] = os.path.abspath(self._home)
                self._source = LocalRuns(Settings.from_env(env))
        return self._source

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._server or self._home or "the local store"
        return f"<usina.Client {where}>"

    # -- runs ------------------------------------------------------------------------------

    def runs(
        self, *, pipeline: str | None = None, state: str | None = None, limit: int = 20
    ) -> list[RunView]:
        """Runs, newest first (without their steps: ``run(id)`` has them)."""
        items = self.source.list_runs(limit=limit, state=state, pipeline=pipeline)
        return [RunView.from_json(item) for item in items]

    def run(self, run_id: str) -> RunView:
        """A run with its steps."""
        return RunView.from_json(self.source.show(run_id))

    def latest_run(self, pipeline: str | None = None, *, state: str = "succeeded") -> RunView:
        """The newest run (of ``pipeline``) in ``state`` (default: succeeded)."""
        found = self.source.list_runs(limit=1, state=state, pipeline=pipeline)
        if not found:
            of = f" of pipeline {pipeline!r}" if pipeline else ""
            raise NotFoundError(f"no {state} run{of}; `usina runs ls` lists the runs")
        return self.run(found[0]["id"])

    def metrics(self, run_id: str, step: str) -> dict[str, float]:
        """The metrics a step logged (``usina.log_metric``)."""
        return dict(self.run(run_id).step(step).metrics)

    def logs(self, run_id: str, step: str, attempt: int | None = None) -> str:
        """A step attempt's output (the latest attempt unless ``attempt`` is given)."""
        return self.source.logs(run_id, step, attempt)

    # -- outputs ---------------------------------------------------------------------------

    def load(self, run_id: str, step: str, index: int = 0) -> Any:
        """Output ``index`` of a step of a run, as the Python value the step returned."""
        from usina.stores.serializers import load

        view = self.run(run_id).step(step)
        if index >= len(view.outputs) or index < 0:
            raise NotFoundError(
                f"step {step!r} of run {run_id} has {len(view.outputs)} outputs "
                f"({view.state}); there is no output {index}"
            )
        ref = view.outputs[index]
        data = self._bytes(run_id, step, index, ref["digest"])
        return load(data, ref["serializer"], ref["type_name"])

    def _bytes(self, run_id: str, step: str, index: int, digest: str) -> bytes:
        if self._server is None:
            from usina.cli.source import LocalRuns

            source = self.source
            assert isinstance(source, LocalRuns)
            data: bytes = source.comps.artifacts.get_bytes(digest)
            return data
        return _get_bytes(
            self._server,
            self._token,
            f"/api/v1/runs/{quote(run_id)}/steps/{quote(step)}/outputs/{index}",
        )


def _get_bytes(server: str, token: str | None, path: str) -> bytes:
    import hashlib
    import json
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    headers = {"Accept": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urlopen(Request(server.rstrip("/") + path, headers=headers), timeout=300) as reply:
            data: bytes = reply.read()
            digest = reply.headers.get("X-Usina-Digest")
    except HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except (ValueError, AttributeError):
            detail = ""
        if exc.code == 404:
            raise NotFoundError(str(detail) or f"not found: {path}") from exc
        raise UsinaError(f"the server at {server} answered {exc.code}: {detail}") from exc
    except URLError as exc:
        raise UsinaError(f"cannot reach the usina server at {server}: {exc.reason}") from exc
    if digest and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise UsinaError(f"the bytes of {path} from {server} do not match {digest}; try again")
    return data


__all__ = ["Client", "RunView", "StepView"]
