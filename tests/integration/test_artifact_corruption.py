"""A corrupted artifact is never used (issue #14, item 3), with the real CLI and processes.

The finding: a same-size corruption of an input under the artifact store was read silently by
the consuming step, and the wrong result was then served from the cache. Now every read checks
the bytes against their sha256: the consuming attempt fails as ``infra`` naming the artifact,
the bytes are moved aside, and the producer is computed again, so the result is right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_helpers import Usina
from usina.stores import serializers
from usina.stores.artifacts import FsspecArtifactStore
from usina.stores.sql import SqlMetadataStore

PIPE = """
from usina import pipeline, step

@step
def make(n: int) -> str:
    return "abc" * n

@step(cache=False)
def double(text: str) -> str:
    return text * 2

@pipeline
def p(n: int = 2):
    double(make(n))
"""


@pytest.fixture
def usina(tmp_path: Path) -> Usina:
    u = Usina(tmp_path)
    u.write("p.py", PIPE)
    return u


def _output(home: Path, run: dict[str, Any], node: str) -> Any:
    step = next(s for s in run["steps"] if s["node"] == node)
    ref = step["outputs"][0]
    store = FsspecArtifactStore(str(home / ".usina" / "artifacts"))
    return serializers.load(store.get_bytes(ref["digest"]), ref["serializer"], ref["type_name"])


def test_a_corrupt_input_is_never_used_and_its_producer_runs_again(
    usina: Usina, tmp_path: Path
) -> None:
    first = usina("run", "p.py", "-o", "json")
    assert first.code == 0, first.err
    digest = next(s for s in first.json()["steps"] if s["node"] == "make")["outputs"][0]["digest"]
    hex_ = digest.removeprefix("sha256:")
    blob = tmp_path / ".usina" / "artifacts" / "sha256" / hex_[:2] / hex_
    assert blob.read_bytes() == b'"abcabc"'
    blob.write_bytes(b'"abcabd"')  # same size, one byte changed

    runs = []
    for _ in range(2):  # the engine may recompute in the same run, or the next run does
        res = usina("run", "p.py", "-o", "json")
        runs.append(res.json())
        if res.code == 0:
            break
    assert runs[-1]["state"] == "succeeded", runs
    assert _output(tmp_path, runs[-1], "double") == "abcabcabcabc"  # never "abcabdabcabd"
    assert blob.read_bytes() == b'"abcabc"'  # stored afresh by the producer

    # The attempt that met the corruption failed as infra, naming the artifact.
    with SqlMetadataStore(f"sqlite:///{tmp_path / '.usina' / 'usina.db'}") as store:
        attempts = store.get_attempts(runs[0]["id"], "double")
    first_try = attempts[0]
    assert first_try.failure_class == "infra"  # FailureClass.INFRA, a str enum
    assert "ArtifactCorruptError" in (first_try.message or "")
    assert digest in (first_try.message or "")
    (kept,) = (tmp_path / ".usina" / "artifacts" / "quarantine").iterdir()
    assert kept.read_bytes() == b'"abcabd"'
