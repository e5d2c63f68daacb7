"""The local backend's view of a process tree: walked through ``/proc``, not the whole table.

psutil answers "the children of P" by reading ``/proc/<pid>/stat`` of every process on the
machine (``ppid_map``), and "who carries this environment mark" by reading every process's
environment: ~15 ms of CPU per question with ~120 processes, asked once per attempt and every
watchdog tick, which was most of an attempt's cost on the engine's side. Linux lists each
task's direct children in ``/proc/<pid>/task/<tid>/children`` (``CONFIG_PROC_CHILDREN``): a walk
from one root reads a few small files per process *in the tree*. Where that file is missing
(another OS, an older kernel) every function here falls back to psutil.

The local backend can ask the cheap question because its zygote is a child subreaper
(``usina.runtime.zygote``): whatever an attempt leaves behind — its session, a child that made a
session of its own, an orphan of a double fork — stays a descendant of the zygote, so the
zygote's tree is the whole search space for an attempt's leftovers.
"""

from __future__ import annotations

import contextlib
import os

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_WALKABLE: list[bool] = []  # computed once: whether this kernel lists children in /proc


def walkable(pid: int) -> bool:
    """Whether ``/proc`` lists the children of processes (Linux with ``CONFIG_PROC_CHILDREN``).

    Asked of this process, once: asked of ``pid``, a process that had just ended looked like a
    kernel without the file, and sent the caller to psutil's whole-table fallback (and its
    import). A gone ``pid`` walks as having no children and no memory."""
    if not _WALKABLE:
        me = os.getpid()
        _WALKABLE.append(os.path.exists(f"/proc/{me}/task/{me}/children"))
    return _WALKABLE[0]


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (not ``pid`` itself), parents before their children."""
    if not walkable(pid):
        import psutil  # the fallback only: a start on Linux need not load it

        try:
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # ended meanwhile
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in bytes (0 when it is gone)."""
    if not walkable(pid):
        import psutil

        try:
            proc = psutil.Process(pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return int(total)
        except psutil.Error:
            return 0
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{member}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def _state_and_session(pid: int) -> tuple[bytes, int] | None:
    """(state letter, session id) from ``/proc/<pid>/stat``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        # after the command: state is field 3, session field 6 (1-based, man 5 proc)
        return fields[0], int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


def _marked(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return mark in fh.read().split(b"\0")
    except OSError:  # gone, or another user's
        return False


def leftovers_under(root: int, session: int | None, attempt_id: str) -> list[int] | None:
    """Live (not zombie) descendants of ``root`` that are in ``session`` (when given) or carry
    ``USINA_ATTEMPT_ID=<attempt_id>`` in their environment. None where ``/proc`` cannot be
    walked: the caller then searches the whole process table."""
    if not walkable(root) or not os.path.exists(f"/proc/{root}"):
        return None  # no /proc to walk, or the root is gone (its orphans moved elsewhere)
    mark = f"USINA_ATTEMPT_ID={attempt_id}".encode()
    found: list[int] = []
    for pid in descendants(root):
        seen = _state_and_session(pid)
        if seen is None or seen[0] in (b"Z", b"X"):
            continue
        if (session is not None and seen[1] == session) or _marked(pid, mark):
            found.append(pid)
    return found
