"""What an installed distribution's files do to cache keys, as docs/concepts/caching.md says:
installed packages count by name and version (the environment hash), not by their files. A
throwaway distribution is installed into a temporary venv (which reaches the project's packages
through a ``.pth``): editing one of its files in place changes no key; a new version of it
re-runs every step and says why."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.integration.cli_helpers import Usina

PIPE = """
from usina import pipeline, step

import tinypkg.core

@step
def uses(x: int) -> int:
    return tinypkg.core.value(x)

@step
def plain(x: int) -> int:
    return x + 1

@step
def total(a: int, b: int) -> int:
    return a + b

@pipeline
def p(x: int = 2):
    total(uses(x), plain(x))
"""


class VenvUsina(Usina):
    """The CLI run by another interpreter (a venv's)."""

    def __init__(self, home: Path, python: Path) -> None:
        super().__init__(home)
        self.python = python

    def cmd(self, *args: str) -> list[str]:
        return [str(self.python), "-m", "usina.cli.main", *args]


def make_venv(root: Path) -> tuple[Path, Path]:
    """A venv whose own site-packages is empty but for a ``.pth`` that adds this interpreter's
    site-packages (usina and its dependencies); returns its python and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = sysconfig.get_paths()["purelib"]
    (site / "zz_shared.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python, site


def install_tinypkg(site: Path, version: str) -> None:
    """A minimal installed distribution: the package and its ``.dist-info``."""
    pkg = site / "tinypkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("def value(x):\n    return x * 10\n")
    (pkg / "unrelated.py").write_text("LIMIT = 1\n")
    for old in site.glob("tinypkg-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"tinypkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n")
    (info / "RECORD").write_text("")


def ran(usina: Usina) -> tuple[set[str], dict[str, str]]:
    res = usina("run", "p.py", "-o", "json")
    assert res.code == 0, res.out[-3000:] + res.err[-3000:]
    run = res.json()
    done = {s["node"] for s in run["steps"] if s["state"] == "succeeded" and not s["cached"]}
    shown = usina("runs", "show", run["id"], "-o", "json")
    assert shown.code == 0, shown.err
    return done, {s["node"]: s["why"] for s in shown.json()["steps"] if s["why"]}


def test_installed_packages_count_by_name_and_version(tmp_path):
    python, site = make_venv(tmp_path / "venv")
    install_tinypkg(site, "1.0")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    usina = VenvUsina(project, python)
    usina.write("p.py", PIPE)

    done, why = ran(usina)
    assert done == {"uses", "plain", "total"}
    assert why["uses"] == "first run"

    # An unrelated file of the installed package, edited in place: nothing runs.
    (site / "tinypkg" / "unrelated.py").write_text("LIMIT = 2\n")
    done, _ = ran(usina)
    assert done == set()
    # Nor does an in-place edit of the file the step calls: the version did not change (the
    # documented limit; a new version, or cache_version, is how such a change is seen).
    (site / "tinypkg" / "core.py").write_text("def value(x):\n    return x * 11\n")
    done, _ = ran(usina)
    assert done == set()

    # A new version of the distribution: every step runs again, and says why.
    install_tinypkg(site, "1.1")
    done, why = ran(usina)
    assert done == {"uses", "plain", "total"}
    assert why["uses"] == "the Python environment (installed packages) changed"
    assert why["plain"] == "the Python environment (installed packages) changed"


EDITABLE_PIPE = PIPE.replace("tinypkg", "tinyedit")


def install_editable(site: Path, source: Path) -> None:
    """What ``pip install -e`` leaves for a path-based editable install: a ``.pth`` naming the
    source folder and a ``.dist-info`` whose ``direct_url.json`` says editable (PEP 610)."""
    pkg = source / "tinyedit"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text("def value(x):\n    return x * 10\n")
    (pkg / "unrelated.py").write_text("LIMIT = 1\n")
    (site / "__editable__.tinyedit-1.0.pth").write_text(f"{source}\n")
    info = site / "tinyedit-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyedit\nVersion: 1.0\n")
    (info / "RECORD").write_text("")
    (info / "direct_url.json").write_text(
        json.dumps({"url": source.as_uri(), "dir_info": {"editable": True}})
    )


def test_an_editable_install_outside_the_project_counts_by_its_code(tmp_path):
    """A library installed with ``pip install -e`` from outside the project is followed like
    the project's own code: its version never moves while someone edits it."""
    python, site = make_venv(tmp_path / "venv")
    source = tmp_path / "libs" / "tinyedit-src"
    install_editable(site, source)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    usina = VenvUsina(project, python)
    usina.write("p.py", EDITABLE_PIPE)

    done, _ = ran(usina)
    assert done == {"uses", "plain", "total"}
    (source / "tinyedit" / "unrelated.py").write_text("LIMIT = 2\n")
    done, _ = ran(usina)
    assert done == set()
    # The function the step calls, edited in place: that step and what depends on it re-run.
    (source / "tinyedit" / "core.py").write_text("def value(x):\n    return x * 11\n")
    done, why = ran(usina)
    assert done == {"uses", "total"}
    assert "tinyedit/core.py:value" in why["uses"], why
