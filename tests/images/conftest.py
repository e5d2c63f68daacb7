"""Fixtures of the image tests: podman set up by the project's own script, the three images
built by it (``make images``), and the names of those images.

These tests need root and podman with runc (``scripts/podman-setup.sh`` installs and configures
them); when the script cannot make containers run, the tests fail, saying why. They never skip.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("server", "runtime", "serving")
PREFIX = os.environ.get("IMAGE_PREFIX", "ghcr.io/usina-ml/")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Not part of ``make test``: these tests build and run images (minutes, root, podman).
    ``make test-images`` runs them, as does naming them: ``pytest tests/images``."""
    here = Path(__file__).resolve().parent
    if not collection_path.resolve().is_relative_to(here):
        return None
    if os.environ.get("USINA_IMAGE_TESTS") == "1":
        return None
    named = [Path(str(arg).split("::")[0]).resolve() for arg in config.args]
    return None if any(p.is_relative_to(here) for p in named) else True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A first run builds the images inside the ``images`` fixture: minutes, not seconds."""
    here = Path(__file__).resolve().parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.timeout(3600))


def image_name(target: str) -> str:
    return f"{PREFIX}usina-{target}:{VERSION}"


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def podman_ready() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/podman-setup.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            "containers cannot run here (scripts/podman-setup.sh failed; it needs root, apt and "
            f"a kernel with cgroups):\n{proc.stdout}{proc.stderr}"
        )


class Images(Mapping[str, str]):
    """``{target: image}``; an image missing on first use is built (scripts/build-images.sh,
    as ``make images`` does), so a test waits only for the images it uses."""

    def __init__(self) -> None:
        self._ready: set[str] = set()

    def __getitem__(self, target: str) -> str:
        if target not in TARGETS:
            raise KeyError(target)
        name = image_name(target)
        if target not in self._ready:
            if podman("image", "exists", name).returncode != 0:
                proc = subprocess.run(
                    ["bash", str(REPO / "scripts/build-images.sh"), target],
                    capture_output=True,
                    text=True,
                    timeout=3600,
                    check=False,
                    env={**os.environ, "IMAGE_PREFIX": PREFIX, "VERSION": VERSION},
                )
                if proc.returncode != 0:
                    pytest.fail(f"building {name} failed:\n{proc.stdout}{proc.stderr[-4000:]}")
            self._ready.add(target)
        return name

    def __iter__(self) -> Iterator[str]:
        return iter(TARGETS)

    def __len__(self) -> int:
        return len(TARGETS)


@pytest.fixture(scope="session")
def images(podman_ready: None) -> Images:
    return Images()
