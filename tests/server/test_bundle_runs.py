"""Runs of uploaded code bundles: ``PUT /bundles/{digest}`` stores a project's code
(content-addressed, verified, size-limited, editor only), ``POST /runs`` with ``bundle`` plans
the bundle's pipeline in a child process (never in the server) and its steps fetch the bundle
at their start. A one-line change of a helper module re-runs only the steps that use it, and
keys never depend on where a bundle was extracted."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import CLI, cli_env
from usina.bundles import MANIFEST_PATH, find_root, pack
from usina.errors import DefinitionError
from usina.i18n import error_text, from_message_json

FLOW = """
import os
from helpers import double, triple
from usina import pipeline, step

with open(os.environ.get("FLOW_IMPORTS", os.devnull), "a") as fh:
    fh.write(f"{os.getpid()}\\n")  # who imported the pipeline file

@step
def first(n: int) -> int:
    return double(n)

@step
def second(x: int) -> int:
    return triple(x)

@step
def third(n: int) -> int:
    return n + 1

@pipeline
def flow(n: int = 2):
    second(first(n))
    third(n)
"""

HELPERS = """
def double(x):
    return 2 * x

def triple(x):
    return 3 * x
"""


def make_project(root: Path) -> Path:
    """A git-style project (``.git`` marks its root) with the pipeline in ``src/``."""
    (root / ".git").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "flow.py").write_text(textwrap.dedent(FLOW))
    (root / "src" / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (root / "data.csv").write_text("a,b\n1,2\n")
    return root / "src" / "flow.py"


def upload(server: Any, token: str, root: Path) -> str:
    made = pack(root)
    reply = server.client.put(
        f"/api/v1/bundles/{made.digest}",
        params={"project": "default"},
        content=made.data,
        headers={**server.as_(token), "Content-Type": "application/octet-stream"},
    )
    assert reply.status_code in (200, 201), reply.text
    return made.digest


def submit(server: Any, token: str, digest: str, **extra: Any) -> dict[str, Any]:
    body = {"pipeline": "flow", "bundle": digest, "file": "src/flow.py", "params": {"n": 5}}
    reply = server.client.post("/api/v1/runs", json=body | extra, headers=server.as_(token))
    assert reply.status_code == 201, reply.text
    return server.wait_finished(token, reply.json()["id"])


def steps(run: dict[str, Any]) -> dict[str, bool]:
    return {s["node"]: s["cached"] for s in run["steps"]}


@pytest.fixture
def marked_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary folders (the server's bundle extractions) inside a folder that has a
    ``pyproject.toml``: a project root above every extraction, named differently each time."""
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "pyproject.toml").write_text("[project]\nname = 'not-the-bundle'\n")
    monkeypatch.setattr(tempfile, "tempdir", str(outer))
    return outer


def test_a_bundle_runs_and_a_helper_change_reruns_only_its_steps(
    make_server, tmp_path: Path, marked_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imports = tmp_path / "imports.txt"
    monkeypatch.setenv("FLOW_IMPORTS", str(imports))
    server = make_server()
    token = server.token("default", "editor")
    project = tmp_path / "laptop" / "proj"
    make_project(project)
    digest = upload(server, token, project)

    run = submit(server, token, digest)
    assert run["state"] == "succeeded", run
    assert steps(run) == {"first": False, "second": False, "third": False}
    plan = server.ctx.metadata.get_run(run["id"]).plan
    assert plan["source"] == f"bundle:{digest}:src/flow.py"  # pinned to its bundle
    assert str(marked_tmp) not in json.dumps(plan)  # nothing of the server's extraction
    out = server.ctx.metadata.get_steps(run["id"])
    second = next(s for s in out if s.node == "second").outputs[0]
    assert server.ctx.artifacts.get_bytes(second.digest)  # stored by the step
    # The pipeline file was imported by the server's child process, never by the server.
    pids = {int(p) for p in imports.read_text().split()} if imports.exists() else set()
    assert pids
    assert os.getpid() not in pids

    # The same bundle again: a new extraction, every step from the cache.
    again = submit(server, token, digest)
    assert steps(again) == {"first": True, "second": True, "third": True}, again

    # One line of a helper changes: only the step that calls it runs.
    helpers = project / "src" / "helpers.py"
    helpers.write_text(helpers.read_text().replace("3 * x", "3 * x + 1"))
    changed = upload(server, token, project)
    assert changed != digest
    rerun = submit(server, token, changed)
    assert rerun["state"] == "succeeded", rerun
    assert steps(rerun) == {"first": True, "second": False, "third": True}, rerun
    why = next(s["why"] for s in rerun["steps"] if s["node"] == "second")
    assert "src/helpers.py:triple" in why
    value = next(s for s in server.ctx.metadata.get_steps(rerun["id"]) if s.node == "second")
    assert value.outputs[0].digest != second.digest  # 31, not 30

    # A data file change changes the bundle but not the steps' code: all cached.
    (project / "data.csv").write_text("a,b\n3,4\n")
    data_only = upload(server, token, project)
    assert data_only != changed
    assert set(steps(submit(server, token, data_only)).values()) == {True}


def test_the_server_refuses_bad_uploads_and_submissions(make_server, tmp_path: Path) -> None:
    server = make_server()
    editor = server.token("default", "editor")
    viewer = server.token("default", "viewer")
    make_project(tmp_path / "proj")
    made = pack(tmp_path / "proj")
    url = f"/api/v1/bundles/{made.digest}"
    gz = {"Content-Type": "application/octet-stream"}

    def put(path: str, data: bytes, token: str) -> Any:
        return server.client.put(
            path, params={"project": "default"}, content=data, headers={**server.as_(token), **gz}
        )

    stored = server.client.get(url, params={"project": "default"}, headers=server.as_(editor))
    assert stored.status_code == 404
    assert put(url, made.data, viewer).status_code == 403
    assert not server.ctx.artifacts.exists(made.digest)
    # Bytes that do not hash to the id: refused, nothing stored.
    cut = put(url, made.data[:-10], editor)
    assert cut.status_code == 400
    assert "hash to" in cut.json()["detail"]
    # A tar.gz with a path outside its folder, under its true hash.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
        info = tarfile.TarInfo(MANIFEST_PATH)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    evil = raw.getvalue()
    import hashlib

    evil_id = "sha256:" + hashlib.sha256(evil).hexdigest()
    refused = put(f"/api/v1/bundles/{evil_id}", evil, editor)
    assert refused.status_code == 400
    assert "unsafe path" in refused.json()["detail"]
    # The refusal's message id travels, so the CLI says it in its reader's language.
    said = from_message_json(DefinitionError(refused.json()["detail"]), refused.json())
    assert error_text(said, "pt-BR") == (
        f"o bundle {evil_id} contém um caminho inseguro '../escape.py'; recusado"
    )
    # Over 1 MiB (the other routes' body limit) is fine here: the bundle's own limit applies.
    (tmp_path / "proj" / "weights.bin").write_bytes(os.urandom(3 << 20))
    big = pack(tmp_path / "proj")
    assert put(f"/api/v1/bundles/{big.digest}", big.data, editor).status_code == 201
    # Stored once: the second upload answers 200 and stores nothing new.
    assert put(url, made.data, editor).status_code == 201
    again = put(url, made.data, editor)
    assert again.status_code == 200
    assert again.json()["uploaded"] is False

    def post(body: dict[str, Any], token: str = editor) -> Any:
        return server.client.post("/api/v1/runs", json=body, headers=server.as_(token))

    base = {"pipeline": "flow", "bundle": made.digest, "file": "src/flow.py"}
    assert post(base, viewer).status_code == 403
    missing = post(base | {"bundle": "sha256:" + "0" * 64})
    assert missing.status_code == 404
    assert "upload it first" in missing.json()["detail"]
    assert post(base | {"file": "../flow.py"}).status_code == 400
    wrong = post(base | {"pipeline": "other"})
    assert wrong.status_code == 400
    assert "defines pipeline 'flow'" in wrong.json()["detail"]
    bad_param = post(base | {"params": {"nope": 1}})
    assert bad_param.status_code == 400
    # The registered pipelines still run by name.
    assert post({"pipeline": "demo", "params": {"n": 3}}).status_code == 201


@pytest.mark.slow
def test_usina_run_server_ships_the_project(http_server, tmp_path_factory) -> None:
    """``usina run --server URL FILE.py`` packs, uploads once and runs the file's pipeline; a
    helper edit re-runs only its step; a pipeline registered on the server runs by name."""
    url, token, _client, _home = http_server
    laptop = tmp_path_factory.mktemp("laptop")
    flow = make_project(laptop / "proj")
    env = {**cli_env(laptop), "USINA_SERVER": url, "USINA_TOKEN": token}

    def usina(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CLI, *args], env=env, cwd=laptop, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == code, done.stdout + done.stderr
        return done

    first = usina("run", str(flow), "-p", "n=5", "-l", "team=risk", "--output", "json")
    run = json.loads(first.stdout)
    assert run["state"] == "succeeded"
    assert run["labels"] == {"team": "risk"}
    assert "uploaded" in first.stderr
    assert steps(run) == {"first": False, "second": False, "third": False}
    same = usina("run", str(flow), "-p", "n=5", "--output", "json")
    assert "already on the server" in same.stderr
    assert set(steps(json.loads(same.stdout)).values()) == {True}

    helpers = flow.parent / "helpers.py"
    helpers.write_text(helpers.read_text().replace("2 * x", "2 * x + 1"))
    edited = json.loads(usina("run", str(flow), "-p", "n=5", "--output", "json").stdout)
    assert steps(edited) == {"first": False, "second": False, "third": True}

    by_name = json.loads(usina("run", "demo", "-p", "n=3", "--output", "json").stdout)
    assert by_name["state"] == "succeeded"
    refused = usina("run", str(flow), "--image", "x:1", code=2)
    assert "--image" in refused.stderr
    assert find_root(flow) == laptop / "proj"


def test_the_servers_image_enters_its_cache_keys_by_digest(tmp_path: Path) -> None:
    """The default backend's ``image`` is the steps' environment: another image, other keys;
    the same digest under another name or tag, the same keys."""
    from usina.server.context import ServerContext
    from usina.server.settings import ReconcilerSettings, ServerSettings

    def environment(image: str | None) -> str:
        home = Path(tempfile.mkdtemp(dir=tmp_path))
        settings = ServerSettings(
            database_url=f"sqlite:///{home}/usina.db",
            artifacts_url=str(home / "artifacts"),
            attempts_dir=str(home / "attempts"),
            backend_options={"image": image} if image else {},
            reconciler=ReconcilerSettings(enabled=False),
        )
        ctx = ServerContext.open(settings)
        try:
            return ctx.engine.environment
        finally:
            ctx.close()

    pinned = "@sha256:" + "1" * 64
    assert environment(f"ghcr.io/acme/train:1{pinned}") == environment(f"acme/train{pinned}")
    assert environment(f"acme/train{pinned}") != environment("acme/train@sha256:" + "2" * 64)
    assert environment("acme/train:1") != environment("acme/train:2")
    assert environment("acme/train:1") != environment(None)
