"""What one local attempt leaves on disk. Creating a file costs a step ~0.3-1 ms on this kind of
machine, so an attempt writes only what someone reads: the pid is the lock file's content (no
``pid`` file), a short step's final profile rides in its result record (no ``profile.json``), an
attempt that printed nothing keeps no log copy; and each of those still reads as before."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.cli_helpers import Usina
from usina.backends.local import _read_pid
from usina.engine.profiles import load_profile
from usina.stores.artifacts import FsspecArtifactStore

PIPELINE = """
from usina import pipeline, step

@step
def quiet(x: int) -> int:
    return x + 1

@step
def chatty(x: int) -> int:
    print("hello from chatty")
    return x * 2

@pipeline
def p(x: int = 1) -> None:
    chatty(quiet(x))
"""


def test_a_short_attempt_writes_only_what_is_read(tmp_path: Path) -> None:
    usina = Usina(tmp_path)
    usina.write("p.py", PIPELINE)
    assert usina("run", "p.py").code == 0
    run = usina.last_run()["id"]
    home = tmp_path / ".usina"
    store = FsspecArtifactStore((home / "artifacts").as_uri())
    shown = usina("runs", "show", run, "-o", "json").json()
    attempts = {a["node"]: a["id"] for a in shown["attempts"]}
    assert set(attempts) == {"quiet", "chatty"}

    for node, aid in attempts.items():
        work = home / "attempts" / aid
        assert not (work / "pid").exists()
        # the lock file names the process that held it
        assert (work / "lock").read_text().strip().isdigit()
        assert _read_pid(str(work)) == int((work / "lock").read_text())
        records = home / "artifacts" / "records" / "attempts" / aid
        assert sorted(os.listdir(records)) == sorted(
            ["task.json", "result.json", *(["log.txt"] if node == "chatty" else [])]
        )
        result = json.loads((records / "result.json").read_text())
        assert result["profile"]["final"] is True
        profile = load_profile(store, aid)
        assert profile.whole is not None
        assert profile.whole.attempt_id == aid
        assert profile.whole.summary is not None

    assert usina("runs", "logs", run, "quiet").out == ""
    assert "hello from chatty" in usina("runs", "logs", run, "chatty").out
    assert {p["node"] for p in shown["profiles"] if p["final"]} == {"quiet", "chatty"}


def test_a_pid_file_of_an_earlier_usina_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text("")
    (tmp_path / "pid").write_text("4242\n")
    assert _read_pid(str(tmp_path)) == 4242
    (tmp_path / "lock").write_text("77")
    assert _read_pid(str(tmp_path)) == 77
