"""The local backend's /proc walk (``usina.backends.local_procs``) finds what psutil's whole-table
search finds, on real processes: a tree's members, and an attempt's leftovers by session and by
the environment mark."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from usina.backends import local_procs

pytestmark = pytest.mark.skipif(
    not local_procs.walkable(os.getpid()), reason="needs Linux /proc/<pid>/task/<tid>/children"
)

# A parent that starts one child (in its own session when argv[2] is "setsid") and sleeps.
PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)"],
    start_new_session=sys.argv[2] == "setsid",
)
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(str(child.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


@pytest.fixture
def tree(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """(parent pid, child pid), the parent a session leader, both marked with attempt "a-1"."""
    how = getattr(request, "param", "same")
    pid_file = tmp_path / "child.pid"
    env = dict(os.environ, USINA_ATTEMPT_ID="a-1")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(pid_file), how], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the parent never started its child"
        time.sleep(0.02)
    child = int(pid_file.read_text())
    try:
        yield parent.pid, child
    finally:
        for pid in (child, parent.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        parent.wait()


def test_descendants_match_psutil(tree: tuple[int, int]) -> None:
    parent, child = tree
    me = os.getpid()
    walked = local_procs.descendants(me)
    assert {parent, child} <= set(walked)
    assert set(walked) == {p.pid for p in psutil.Process(me).children(recursive=True)}
    assert walked.index(parent) < walked.index(child)  # parents first


def test_tree_rss_sums_the_tree(tree: tuple[int, int]) -> None:
    parent, child = tree
    summed = sum(psutil.Process(p).memory_info().rss for p in (parent, child))
    assert local_procs.tree_rss(parent) == pytest.approx(summed, rel=0.2)
    assert local_procs.tree_rss(parent) > psutil.Process(parent).memory_info().rss


@pytest.mark.parametrize("tree", ["same", "setsid"], indirect=True)
def test_leftovers_by_session_and_by_mark(tree: tuple[int, int]) -> None:
    parent, child = tree
    me = os.getpid()
    # By the session (the parent leads one) or, for a child that left it, by the mark.
    assert set(local_procs.leftovers_under(me, parent, "a-1") or []) == {parent, child}
    # Another attempt's mark and no session: none of these.
    assert local_procs.leftovers_under(me, None, "a-2") == []
    # Only the session, no matching mark: the child that made its own session is not in it.
    in_session = set(local_procs.leftovers_under(me, parent, "a-2") or [])
    assert parent in in_session
    assert (child in in_session) is (os.getsid(child) == parent)
