"""A corrupted artifact is never used (issue #14, item 3), with the real CLI and processes.

The finding: a same-size corruption of an input under the artifact store was read silently by
``usina runs resume``, and the wrong result was then served from the cache to a fresh run. Now
every read checks the bytes against their sha256. A step that meets a corrupt input fails as
``infra`` naming the artifact, the bytes are moved aside, and the producer is computed again in
the same run, the consumer's failed attempt not charged to its retries; a cache hit whose bytes
are corrupt is not a hit.
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
import os
from usina import pipeline, step

@step
def make(n: int) -> str:
    return "abc" * n

@step(cache=False)
def double(text: str) -> str:
    if os.path.exists("fail.flag"):
        raise RuntimeError("asked to fail")
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


def _corrupt(tmp_path: Path, run: dict[str, Any]) -> tuple[str, Path]:
    digest = next(s for s in run["steps"] if s["node"] == "make")["outputs"][0]["digest"]
    hex_ = digest.removeprefix("sha256:")
    blob = tmp_path / ".usina" / "artifacts" / "sha256" / hex_[:2] / hex_
    assert blob.read_bytes() == b'"abcabc"'
    blob.write_bytes(b'"abcabd"')  # same size, one byte changed
    return digest, blob


def _quarantined(tmp_path: Path) -> bytes:
    (kept,) = (tmp_path / ".usina" / "artifacts" / "quarantine").iterdir()
    return kept.read_bytes()


def test_resume_meets_a_corrupt_input_and_recomputes_its_producer_in_the_same_run(
    usina: Usina, tmp_path: Path
) -> None:
    (tmp_path / "fail.flag").write_text("")
    first = usina("run", "p.py", "-o", "json")
    assert first.code == 1, first.err
    run = first.json()
    digest, blob = _corrupt(tmp_path, run)
    (tmp_path / "fail.flag").unlink()

    res = usina("runs", "resume", run["id"], "-o", "json")
    assert res.code == 0, res.out + res.err
    resumed = res.json()
    assert resumed["state"] == "succeeded"
    assert _output(tmp_path, resumed, "double") == "abcabcabcabc"  # never "abcabdabcabd"
    assert blob.read_bytes() == b'"abcabc"'  # stored afresh by the producer
    assert _quarantined(tmp_path) == b'"abcabd"'

    with SqlMetadataStore(f"sqlite:///{tmp_path / '.usina' / 'usina.db'}") as store:
        doubles = store.get_attempts(run["id"], "double")
        makes = store.get_attempts(run["id"], "make")
        steps = {s.node: s for s in store.get_steps(run["id"])}
    # attempt 1 failed on purpose; attempt 2 met the corruption; attempt 3 succeeded
    assert [a.state.value for a in doubles] == ["failed", "failed", "succeeded"]
    met = doubles[1]
    assert met.failure_class == "infra"  # FailureClass.INFRA, a str enum
    assert "ArtifactCorruptError" in (met.message or "")
    assert digest in (met.message or "")
    assert len(makes) == 2  # the producer ran again in the same run
    assert steps["double"].retry_base == 2  # the attempt that met the corruption is not charged


def test_a_cache_hit_with_corrupt_bytes_is_recomputed_not_served(
    usina: Usina, tmp_path: Path
) -> None:
    first = usina("run", "p.py", "-o", "json")
    assert first.code == 0, first.err
    _digest, blob = _corrupt(tmp_path, first.json())

    res = usina("run", "p.py", "-o", "json")
    assert res.code == 0, res.out + res.err
    run = res.json()
    steps = {s["node"]: s for s in run["steps"]}
    assert steps["make"]["cached"] is False  # verified on the hit: recomputed
    assert _output(tmp_path, run, "double") == "abcabcabcabc"
    assert blob.read_bytes() == b'"abcabc"'
    assert _quarantined(tmp_path) == b'"abcabd"'
    shown = usina("runs", "show", run["id"], "-o", "json").json()
    assert {s["node"]: s["why"] for s in shown["steps"]}["make"] == "artifact missing or corrupt"
