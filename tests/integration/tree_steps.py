"""Steps that leave processes behind (imported by name in worker processes) for the process
tree tests: each starts a grandchild that ignores SIGTERM and writes its pid to a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from usina import step

GRANDCHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[2] == "setsid":
    os.setsid()
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""


def _start_grandchild(pid_file: str, how: str) -> None:
    subprocess.Popen(
        [sys.executable, "-c", GRANDCHILD, pid_file, how],
        stdin=subprocess.DEVNULL,
        start_new_session=False,
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(pid_file) and time.monotonic() < deadline:
        time.sleep(0.02)


@step
def leaky(pid_file: str, how: str, then: str) -> int:
    _start_grandchild(pid_file, how)
    print(f"left a grandchild behind ({how}); now {then}", flush=True)
    if then == "sleep":
        time.sleep(120)
    return 1
