"""Forking a child that runs one function and ends, for the zygote's attempts and a gang's
ranks."""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def fork_and_run(run: Callable[[], int], *, failed: int) -> int:
    """Fork; the child runs ``run`` and ends with its exit code (``failed``, the traceback
    printed, if it raised) without the interpreter's teardown. Returns the child's pid.

    Output buffered so far is flushed first, so that it is not written twice."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = failed
    try:
        code = run()
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    raise AssertionError("unreachable: the child exited")  # pragma: no cover
