"""A server plans a run of an uploaded code bundle without running its code in the server.

``compile_bundle`` fetches the bundle from the artifact store (hash verified, extracted safely
by ``usina.bundles.fetch_bundle``) into a fresh temporary folder, and loads and compiles the
pipeline in a child process (``python -m usina.compose.bundle_compile``): importing a pipeline
file executes the user's module-level code, which must not run with the server's memory,
credentials or database connections. The child gets a minimal environment (no credentials),
the bundle's folder as its working directory, a time limit, and answers with the plan's JSON in
a file (the user's code may print anything on stdout). Every path of the plan must lie inside
the bundle.

Known limit: the child runs the user's code with the server's view of the file system (on a
cluster, the server pod's), and the plan it answers, code hashes included, is as trustworthy as
the editor who submitted it: the cache keys of a run of a bundle are the user's word.

The plan comes back with its paths *pinned* to the bundle (``bundle:sha256:<hex>:<path>``, see
``usina.bundles.to_bundle_path``): any worker of any backend fetches that bundle at its start.
Every extraction is a new folder; nothing in the plan depends on where: the code hashes name
files relative to the project root (``usina.sdk.codedeps``), which a bundle marks with its
``.usina-bundle`` folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usina.bundles import fetch_bundle, pinned_bundle, to_bundle_path
from usina.errors import DefinitionError, UsinaError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.engine.ports import ArtifactStore
    from usina.sdk.pipeline import Plan

#: What the child keeps of the server's environment: enough to start Python and import usina.
KEPT_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV")


@dataclasses.dataclass(frozen=True, slots=True)
class CompileLimits:
    """Bounds on planning a run from a bundle in a child process."""

    timeout: float = 120.0  # seconds to import the pipeline file and compile it


def check_target(file: str) -> str:
    """``file`` (the pipeline file, relative to the bundle's root, ``[:PIPELINE]`` allowed)
    when it is a safe relative ``.py`` path; ``DefinitionError`` otherwise."""
    path = file.partition(":")[0]
    parts = path.split("/")
    if not path.endswith(".py") or path.startswith("/") or ".." in parts or "\\" in path:
        raise DefinitionError(
            f"the bundle's pipeline file {file!r} must be a relative path to a .py file inside "
            "the bundle (FILE.py[:PIPELINE])"
        )
    return file


def pin_plan(plan: Plan, root: Path, digest: str) -> Plan:
    """``plan`` with its paths under ``root`` pinned to bundle ``digest``."""

    def moved(path: str | None) -> str | None:
        return to_bundle_path(path, root, digest) if path else path

    nodes = tuple(dataclasses.replace(n, file=moved(n.file)) for n in plan.nodes)
    return dataclasses.replace(
        plan,
        nodes=nodes,
        source=moved(plan.source),
        sys_path=tuple(to_bundle_path(p, root, digest) for p in plan.sys_path),
    )


def compile_bundle(
    store: ArtifactStore,
    digest: str,
    target: str,
    params: Mapping[str, Any],
    *,
    limits: CompileLimits = CompileLimits(),
    python: str = sys.executable,
) -> Plan:
    """The plan of ``target`` (``FILE.py[:PIPELINE]`` inside bundle ``digest``) with
    ``params``, compiled in a child process; ``DefinitionError`` with the child's message when
    the file does not load or the parameters do not fit."""
    from usina.sdk.pipeline import Plan

    check_target(target)
    with tempfile.TemporaryDirectory(prefix="usina-plan-") as tmp:
        root = fetch_bundle(store, digest, Path(tmp) / "bundle")
        file, _, name = target.partition(":")
        if not (root / file).is_file():
            raise DefinitionError(f"bundle {digest} has no file {file!r}")
        answer = Path(tmp) / "plan.json"
        env = {k: v for k in KEPT_ENV if (v := os.environ.get(k)) is not None}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        local = str(root / file) + (f":{name}" if name else "")
        try:
            done = subprocess.run(
                [python, "-m", "usina.compose.bundle_compile", local, str(answer)],
                input=json.dumps(dict(params)),
                capture_output=True,
                text=True,
                cwd=root,
                env=env,
                timeout=limits.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DefinitionError(
                f"loading {target} from bundle {digest} took over {limits.timeout:.0f}s; a "
                "pipeline file should only define steps and pipelines"
            ) from exc
        try:
            result = json.loads(answer.read_text())
        except (OSError, ValueError):
            tail = (done.stderr or done.stdout)[-2000:]
            raise UsinaError(
                f"planning {target} from bundle {digest} failed (exit {done.returncode}): {tail}"
            ) from None
        if "error" in result:
            raise DefinitionError(str(result["error"]))
        plan = pin_plan(Plan.from_json(result["plan"]), root, digest)
        check_inside(plan, digest)
        return plan


def check_inside(plan: Plan, digest: str) -> None:
    """``DefinitionError`` unless every path of ``plan`` (steps' files, source, import path)
    lies inside bundle ``digest``, or, for a step's file, in an installed distribution (a
    library of steps in the image): a run of a bundle runs no other file of the server's."""

    def installed(path: str) -> bool:
        parts = Path(path).parts
        return "site-packages" in parts or "dist-packages" in parts

    files = [n.file for n in plan.nodes if n.file and not installed(n.file)]
    paths = [plan.source, *plan.sys_path, *files]
    outside = sorted({p or "" for p in paths if pinned_bundle(p or "") != digest})
    if outside:
        raise DefinitionError(
            f"the pipeline of bundle {digest} uses code outside the bundle: "
            f"{', '.join(outside[:3])}; keep the steps' modules inside the project"
        )


def main(argv: list[str] | None = None) -> int:
    """The child: load ``FILE.py[:PIPELINE]``, compile it with the JSON parameters read from
    stdin, write ``{"plan": ...}`` or ``{"error": ...}`` to the answer file."""
    args = sys.argv[1:] if argv is None else argv
    target, answer = args[0], args[1]
    try:
        from usina.runtime.loader import load_pipeline

        params = json.loads(sys.stdin.read() or "{}")
        pipe = load_pipeline(target)
        plan = pipe.compile(params)
        folder = os.path.dirname(os.path.realpath(target.partition(":")[0]))
        plan = dataclasses.replace(plan, sys_path=(folder,))
        result: dict[str, Any] = {"plan": plan.to_json()}
    except UsinaError as exc:
        result = {"error": str(exc)}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__} while planning {target}: {exc}"}
    Path(answer).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
