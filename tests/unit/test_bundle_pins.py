"""Pinned bundle paths (a plan that names its own bundle), the server's check of an uploaded
archive, and what of a container image enters the cache keys."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from usina.bundles import (
    MANIFEST_PATH,
    BundleError,
    BundleIntegrityError,
    BundleLimits,
    BundleTooLargeError,
    bootstrap_task,
    check_archive,
    from_bundle_path,
    pack,
    pinned_bundle,
    put_bundle,
    task_bundle,
    to_bundle_path,
)
from usina.compose.components import image_environment
from usina.engine.cache import image_identity
from usina.engine.ports import Task
from usina.sdk.resources import Resources
from usina.stores.artifacts import FsspecArtifactStore

DIGEST = "sha256:" + "ab" * 32


def task(file: str, sys_path: tuple[str, ...] = ()) -> Task:
    return Task(
        attempt_id="r-a-1",
        run_id="r",
        pipeline="p",
        node={"id": "a", "file": file},
        number=1,
        resources=Resources(),
        inputs={},
        artifacts_url="memory://",
        params={},
        sys_path=sys_path,
        source=file,
    )


def test_a_pinned_path_names_its_bundle_and_resolves_inside_it(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "flow.py").write_text("")
    pinned = to_bundle_path(str(tmp_path / "src" / "flow.py"), tmp_path, DIGEST)
    assert pinned == f"bundle:{DIGEST}:src/flow.py"
    assert pinned_bundle(pinned) == DIGEST
    assert pinned_bundle("bundle:src/flow.py") is None  # unpinned (USINA_BUNDLE names it)
    assert pinned_bundle(f"bundle:{DIGEST.upper()}:x.py") is None
    assert from_bundle_path(pinned, "/w/b") == "/w/b/src/flow.py"
    assert from_bundle_path(to_bundle_path(str(tmp_path), tmp_path, DIGEST), "/w/b") == "/w/b"
    with pytest.raises(BundleError, match="outside"):
        from_bundle_path(f"bundle:{DIGEST}:../x.py", "/w/b")
    assert task_bundle(task(pinned, (f"bundle:{DIGEST}:src",))) == DIGEST
    other = "sha256:" + "cd" * 32
    with pytest.raises(BundleError, match="two code bundles"):
        task_bundle(task(pinned, (f"bundle:{other}:src",)))


def test_a_worker_fetches_the_bundle_a_task_pins_without_usina_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))  # bootstrap puts the bundle on it
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flow.py").write_text("X = 1\n")
    store = FsspecArtifactStore(str(tmp_path / "store"))
    ref = put_bundle(store, project)
    pinned = task(f"bundle:{ref.digest}:flow.py", (f"bundle:{ref.digest}:.",))
    local = bootstrap_task({"USINA_WORKDIR": str(tmp_path / "work")}, store, pinned)
    assert Path(local.node["file"]).read_text() == "X = 1\n"
    assert local.sys_path[0] == str(Path(local.node["file"]).parent)
    assert str(tmp_path / "work") in local.node["file"]


def archive(members: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_check_archive_accepts_usina_bundles_and_refuses_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print(1)\n")
    made = pack(tmp_path)
    unpacked = check_archive(made.data, made.digest)
    assert made.manifest.size < unpacked < made.manifest.size + 4096  # + the manifest
    with pytest.raises(BundleIntegrityError, match="hash to"):
        check_archive(made.data, "sha256:" + "0" * 64)
    no_manifest, digest = archive({"a.py": b"x"})
    with pytest.raises(BundleError, match="manifest"):
        check_archive(no_manifest, digest)
    # A small upload that inflates past the limit: refused while reading, by headers' sizes.
    zeros = b"\0" * (2 << 20)
    bomb, digest = archive({"big.bin": zeros, MANIFEST_PATH: b"{}"})
    assert len(bomb) < 64 << 10
    with pytest.raises(BundleTooLargeError, match="unpacks to over"):
        check_archive(bomb, digest, BundleLimits(max_bytes=1 << 20))
    garbage = gzip.compress(b"not a tar")
    with pytest.raises(BundleError, match="not a readable"):
        check_archive(garbage, "sha256:" + hashlib.sha256(garbage).hexdigest())


def test_an_image_pinned_by_digest_is_keyed_by_its_digest() -> None:
    digest = "sha256:" + "12" * 32
    assert image_identity(f"ghcr.io/acme/train:1.2@{digest}") == digest
    assert image_identity(f"ghcr.io/acme/train@{digest}") == digest
    assert image_identity("ghcr.io/acme/train:1.2") == "ghcr.io/acme/train:1.2"
    assert image_identity("localhost:5000/train") == "localhost:5000/train"
    # The same bytes under another name or tag: the same keys; another digest: other keys.
    assert image_environment(f"a/x:1@{digest}") == image_environment(f"b/y@{digest}")
    assert image_environment(f"a/x:1@{digest}") != image_environment("a/x:1@sha256:" + "34" * 32)
    assert image_environment("a/x:1") != image_environment("a/x:2")
    assert image_environment(None) is None


def test_modules_a_bundle_provides_are_not_taken_from_a_preloaded_namesake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local worker forks from a process that imported the server's own ``helpers``: the
    bundle's ``helpers`` must be the one the step imports."""
    import sys
    import types

    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "helpers.py").write_text("VALUE = 'bundle'\n")
    (project / "src" / "flow.py").write_text("import helpers\n")
    store = FsspecArtifactStore(str(tmp_path / "store"))
    ref = put_bundle(store, project)
    stale = types.ModuleType("helpers")
    stale.__file__ = str(tmp_path / "server" / "helpers.py")
    unrelated = types.ModuleType("elsewhere_mod")
    monkeypatch.setitem(sys.modules, "helpers", stale)
    monkeypatch.setitem(sys.modules, "elsewhere_mod", unrelated)
    monkeypatch.setattr(sys, "path", list(sys.path))
    pinned = task(f"bundle:{ref.digest}:src/flow.py", (f"bundle:{ref.digest}:src",))
    local = bootstrap_task({"USINA_WORKDIR": str(tmp_path / "work")}, store, pinned)
    assert "helpers" not in sys.modules  # the preloaded namesake is gone
    assert sys.modules["elsewhere_mod"] is unrelated
    sys.path.insert(0, local.sys_path[0])
    import helpers  # type: ignore[import-not-found]

    assert helpers.VALUE == "bundle"
    del sys.modules["helpers"]


def test_a_bundle_plan_may_not_point_outside_its_bundle(tmp_path: Path) -> None:
    from usina.compose.bundle_compile import check_inside, check_target, pin_plan
    from usina.errors import DefinitionError
    from usina.sdk.pipeline import Plan, PlanNode

    def node(file: str | None) -> PlanNode:
        return PlanNode(
            id="a", step="a", module="m", qualname="a", file=file, inputs={}, upstream=(),
            outputs=1, resources={}, retry={}, timeout=None, cache=True, cache_version=None,
            pickle=False, env=(), code_hash="0",
        )  # fmt: skip

    root = tmp_path / "bundle"
    inside = str(root / "src" / "flow.py")
    plan = Plan("p", {}, (node(inside),), inside, (str(root / "src"),))
    check_inside(pin_plan(plan, root, DIGEST), DIGEST)
    library = "/usr/lib/python3/site-packages/steps/lib.py"
    check_inside(pin_plan(Plan("p", {}, (node(library),), inside, ()), root, DIGEST), DIGEST)
    for bad in (
        Plan("p", {}, (node("/srv/usina/pipelines.py"),), inside, ()),
        Plan("p", {}, (node(inside),), inside, ("/srv/usina",)),
        Plan("p", {}, (node(inside),), None, ()),
    ):
        with pytest.raises(DefinitionError, match="outside the bundle"):
            check_inside(pin_plan(bad, root, DIGEST), DIGEST)
    assert check_target("src/flow.py:flow") == "src/flow.py:flow"
    for target in ("../flow.py", "/abs/flow.py", "flow.txt", "a\\b.py"):
        with pytest.raises(DefinitionError, match="relative path"):
            check_target(target)
