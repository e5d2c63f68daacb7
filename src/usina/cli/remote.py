"""The CLI against a platform server (``--server URL`` or ``USINA_SERVER``, with ``USINA_TOKEN``):
the same commands and output as locally, through the server's REST API.

Only the Python standard library is used (urllib), so the CLI needs no extra to talk to a
server.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from usina.cli.display import run_summary, step_line
from usina.errors import DefinitionError, NotFoundError, StateError, UsinaError
from usina.i18n import N_, _, error, from_message_json

if TYPE_CHECKING:
    from urllib.error import HTTPError

    from rich.console import Console

_FINISHED = {"succeeded", "failed", "cancelled"}


@dataclass(frozen=True, slots=True)
class Remote:
    url: str
    token: str | None

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        raw: bool = False,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        target = self.url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        # urllib.request pulls in http.client, ssl and email: a seventh of every CLI start,
        # for the --server commands alone.
        from urllib.error import HTTPError, URLError
        from urllib.request import Request, urlopen

        request = Request(target, data=data, method=method, headers=headers)
        try:
            with urlopen(request, timeout=60) as reply:
                payload = reply.read()
        except HTTPError as exc:
            raise _error(exc, self.url) from exc
        except URLError as exc:
            raise error(
                UsinaError,
                N_(
                    "cannot reach the usina server at {url}: {reason}; check --server or "
                    "USINA_SERVER"
                ),
                url=self.url,
                reason=str(exc.reason),
            ) from exc
        if raw:
            return payload.decode(errors="replace")
        return json.loads(payload) if payload else None


def _error(exc: HTTPError, url: str) -> UsinaError:
    try:
        body = json.loads(exc.read())
        detail = body.get("detail", "")
    except (ValueError, AttributeError):
        body, detail = {}, ""
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    said = from_message_json(UsinaError(detail), body)  # the server's words, translatable
    if exc.code == 401:
        return error(
            UsinaError,
            N_(
                "the server at {url} refused the token ({detail}); set USINA_TOKEN to a token "
                "from 'usina token create'"
            ),
            url=url,
            detail=said,
        )
    if exc.code == 403:
        return error(UsinaError, N_("not allowed: {detail}"), detail=said)
    if exc.code == 404:
        return from_message_json(NotFoundError(detail or "not found"), body)
    if exc.code == 409:
        return from_message_json(StateError(detail), body)
    if exc.code == 400:
        return from_message_json(DefinitionError(detail), body)
    return error(UsinaError, N_("the server answered {code}: {detail}"), code=exc.code, detail=said)


def follow(remote: Remote, run: dict[str, Any], out: Console, *, as_json: bool) -> int:
    """Show a run's steps as the server drives it; 0 when it succeeds, 1 otherwise."""
    seen: dict[str, tuple[str, int]] = {}
    if not as_json:
        out.print(
            _("run {run} of pipeline {pipeline} on {url}").format(
                run=f"[bold]{run['id']}[/]", pipeline=f"[bold]{run['pipeline']}[/]", url=remote.url
            )
        )
    while True:
        for s in run["steps"]:
            key = (s["state"], s["attempts"])
            if seen.get(s["node"]) != key and s["state"] != "pending":
                seen[s["node"]] = key
                if not as_json:
                    out.print(step_line(s), highlight=False)
        if run["state"] in _FINISHED:
            break
        time.sleep(0.5)
        run = remote.call("GET", f"/api/v1/runs/{quote(run['id'])}")
    if as_json:
        out.print_json(json.dumps(run))
    else:
        colour = "green" if run["state"] == "succeeded" else "red"
        out.print(f"[{colour}]{run_summary(run)}[/]")
        if run["state"] == "failed":
            out.print(
                _("see why: usina runs why {run}   then: usina runs resume {run}").format(
                    run=run["id"]
                )
            )
    return 0 if run["state"] == "succeeded" else 1


def submit(remote: Remote, pipeline: str, params: dict[str, str], project: str) -> dict[str, Any]:
    body = {"pipeline": pipeline, "params": params, "project": project}
    result: dict[str, Any] = remote.call("POST", "/api/v1/runs", body=body)
    return result


def resume(remote: Remote, run_id: str, rerun: list[str]) -> dict[str, Any]:
    body = {"rerun": rerun} if rerun else None
    result: dict[str, Any] = remote.call("POST", f"/api/v1/runs/{quote(run_id)}/resume", body=body)
    return result


def list_runs(
    remote: Remote, *, limit: int, state: str | None, pipeline: str | None
) -> list[dict[str, Any]]:
    page = remote.call(
        "GET", "/api/v1/runs", params={"limit": limit, "state": state, "pipeline": pipeline}
    )
    items: list[dict[str, Any]] = page["items"]
    return items


def show(remote: Remote, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = remote.call("GET", f"/api/v1/runs/{quote(run_id)}")
    run["attempts"] = remote.call("GET", f"/api/v1/runs/{quote(run_id)}/attempts")
    return run


def logs(remote: Remote, run_id: str, step: str, attempt: int | None) -> str:
    text: str = remote.call(
        "GET",
        f"/api/v1/runs/{quote(run_id)}/steps/{quote(step)}/logs",
        params={"attempt": attempt},
        raw=True,
    )
    return text


# -- code bundles (``usina run --server URL FILE.py``) ---------------------------------------


def upload_bundle(remote: Remote, digest: str, data: bytes, project: str) -> bool:
    """Store the code bundle ``digest`` (its bytes ``data``) on the server unless it has it;
    True when this call uploaded it."""
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    path = f"/api/v1/bundles/{quote(digest)}"
    try:
        remote.call("GET", path, params={"project": project})
        return False
    except NotFoundError:
        pass
    target = remote.url.rstrip("/") + path + "?" + urlencode({"project": project})
    headers = {"Accept": "application/json", "Content-Type": "application/octet-stream"}
    if remote.token:
        headers["Authorization"] = f"Bearer {remote.token}"
    request = Request(target, data=data, method="PUT", headers=headers)
    try:
        with urlopen(request, timeout=300) as reply:
            answer = json.loads(reply.read() or b"{}")
    except HTTPError as exc:
        raise _error(exc, remote.url) from exc
    except URLError as exc:
        raise error(
            UsinaError,
            N_("cannot reach the usina server at {url}: {reason}; check --server or USINA_SERVER"),
            url=remote.url,
            reason=str(exc.reason),
        ) from exc
    return bool(answer.get("uploaded"))


def submit_bundle(
    remote: Remote,
    pipeline: str,
    *,
    bundle: str,
    file: str,
    params: dict[str, str],
    project: str,
    labels: dict[str, str],
) -> dict[str, Any]:
    """Submit a run of ``pipeline``, defined in ``file`` (relative to the bundle's root) of the
    uploaded code bundle ``bundle``."""
    body = {
        "pipeline": pipeline,
        "params": params,
        "project": project,
        "labels": labels,
        "bundle": bundle,
        "file": file,
    }
    result: dict[str, Any] = remote.call("POST", "/api/v1/runs", body=body)
    return result
