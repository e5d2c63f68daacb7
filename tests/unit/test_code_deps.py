"""``usina.sdk.codedeps``: what a step can run, followed through the project's modules; and the
fraud example's finding (a change to ``features.build`` must change the ``features`` key)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from usina.engine.cache import miss_reason
from usina.sdk.codedeps import Resolver, module_index

REPO = Path(__file__).resolve().parents[2]


def write(root: Path, name: str, source: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n")
    write(
        tmp_path,
        "helpers.py",
        """
        import json
        from pkg.deep import inner
        FACTOR = 3

        def scale(x):
            return inner(x) * FACTOR

        def unused():
            return 1
        """,
    )
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/deep.py", "def inner(x):\n    return x + 1\n")
    write(
        tmp_path,
        "steps.py",
        """
        import helpers
        import pkg.deep

        def uses_module_attr(x):
            return helpers.scale(x)

        def uses_dotted(x):
            return pkg.deep.inner(x)

        def uses_module_whole(name):
            return getattr(helpers, name)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("helpers", "steps", "pkg", "pkg.deep"):
        sys.modules.pop(name, None)
    __import__("steps")
    yield tmp_path
    for name in ("helpers", "steps", "pkg", "pkg.deep"):
        sys.modules.pop(name, None)


def test_a_step_depends_on_what_it_reaches_transitively(project: Path) -> None:
    deps = Resolver(str(project)).deps("steps", "uses_module_attr")
    assert set(deps) == {
        "steps.py:uses_module_attr",
        "helpers.py:scale",
        "helpers.py:FACTOR",
        "pkg/deep.py:inner",
    }
    assert set(Resolver(str(project)).deps("steps", "uses_dotted")) == {
        "steps.py:uses_dotted",
        "pkg/deep.py:inner",
    }


def test_a_module_used_as_a_value_counts_whole(project: Path) -> None:
    deps = Resolver(str(project)).deps("steps", "uses_module_whole")
    assert "helpers.py:*" in deps
    assert "helpers.py:unused" in deps


def test_comments_do_not_count_and_code_does(project: Path) -> None:
    before = Resolver(str(project)).deps("steps", "uses_module_attr")
    helpers = project / "helpers.py"
    text = helpers.read_text()
    helpers.write_text(text.replace("def scale(x):", "def scale(x):  # a comment"))
    os.utime(helpers, ns=(1, 1))  # a new (mtime, size) key
    assert Resolver(str(project)).deps("steps", "uses_module_attr") == before
    helpers.write_text(text.replace("FACTOR = 3", "FACTOR = 4"))
    after = Resolver(str(project)).deps("steps", "uses_module_attr")
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"helpers.py:FACTOR"}
    old = {"code": "a", "code_deps": before}
    new = {"code": "b", "code_deps": after}
    assert miss_reason(old, new) == "code of helpers.py:FACTOR changed"
    assert miss_reason(None, new) == "first run"


def test_installed_packages_are_not_followed(project: Path) -> None:
    deps = Resolver(str(project)).deps("helpers", "scale")
    assert not any("json" in k for k in deps)


def test_each_module_is_parsed_once_per_mtime_and_size(project: Path) -> None:
    path = str(project / "helpers.py")
    assert module_index("helpers", path) is module_index("helpers", path)


def test_the_fraud_features_change_changes_the_features_key(tmp_path: Path) -> None:
    """Adding ``raise RuntimeError()`` to ``examples/fraud/features.py::build`` once left
    ``features`` cached; now its key (and only the keys of steps that reach it) change."""
    shutil.copytree(REPO / "examples" / "fraud", tmp_path / "examples" / "fraud")
    (tmp_path / "examples" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'copy'\n")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from usina.runtime.loader import load_pipeline;"
        "plan = load_pipeline(sys.argv[1] + '/examples/fraud/pipeline.py:fraud').compile();"
        "print(json.dumps({n.id: n.code_hash for n in plan.nodes}))"
    )

    def hashes() -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src")])}
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        import json

        result: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    before = hashes()
    features = tmp_path / "examples" / "fraud" / "features.py"
    text = features.read_text()
    marker = '    """One row of features per transaction, same order as the input."""\n'
    assert marker in text
    features.write_text(text.replace(marker, marker + "    raise RuntimeError()\n"))
    after = hashes()
    changed = {node for node in before if before[node] != after[node]}
    assert "features" in changed
    assert not changed & {"ingest", "validate", "split", "train", "evaluate"}
