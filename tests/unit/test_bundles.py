"""Code bundles: selection, determinism, limits, dedupe, verification and safe extraction."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from usina.bundles import (
    MANIFEST_PATH,
    BundleError,
    BundleIntegrityError,
    BundleLimits,
    BundleTooLargeError,
    UnsafeBundleError,
    bootstrap,
    fetch_bundle,
    find_root,
    from_bundle_path,
    manifest_of,
    pack,
    put_bundle,
    to_bundle_path,
)
from usina.errors import ArtifactMissingError, DefinitionError
from usina.i18n import error_text
from usina.stores.artifacts import FsspecArtifactStore
from usina.testing.fakes import InMemoryArtifactStore


def write(path: Path, text: str = "x = 1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root / "pyproject.toml", "[project]\nname = 'p'\n")
    write(root / "pipelines" / "train.py", "from helpers import f\n")
    write(root / "helpers" / "__init__.py", "def f():\n    return 1\n")
    write(root / "README.md", "hello\n")
    return root


def paths(root: Path, **kw: object) -> list[str]:
    return [f.path for f in manifest_of(root, **kw).files]  # type: ignore[arg-type]


def test_root_is_found_by_walking_up_to_pyproject_or_git(project: Path, tmp_path: Path) -> None:
    assert find_root(project / "pipelines" / "train.py") == project.resolve()
    loose = write(tmp_path / "loose" / "deep" / "p.py")
    (tmp_path / "loose" / ".git").mkdir()
    assert find_root(loose) == (tmp_path / "loose").resolve()
    assert find_root(loose, root=tmp_path) == tmp_path.resolve()
    with pytest.raises(DefinitionError, match="not inside the bundle root"):
        find_root(loose, root=project)


def test_default_excludes_and_usina_copies(project: Path) -> None:
    write(project / ".venv" / "lib" / "site.py")
    write(project / "helpers" / "__pycache__" / "x.cpython-311.pyc")
    write(project / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(project / ".usina" / "artifacts" / "blob")
    write(project / "build" / "lib" / "x.py")
    write(project / "pkg.egg-info" / "PKG-INFO")
    write(project / "src" / "usina" / "__init__.py")
    write(project / "src" / "usina" / "engine" / "ports.py")
    write(project / "src" / "myapp" / "usina" / "__init__.py")  # a user subpackage named usina
    manifest = manifest_of(project)
    assert [f.path for f in manifest.files] == [
        "README.md",
        "helpers/__init__.py",
        "pipelines/train.py",
        "pyproject.toml",
        "src/myapp/usina/__init__.py",
    ]
    reasons = {s.path: s.reason for s in manifest.skipped}
    assert reasons["src/usina"] == "a copy of the usina package"
    assert reasons[".venv"] == "ignored"


def test_gitignore_and_usinaignore_nested_with_negation(project: Path) -> None:
    write(project / ".gitignore", "*.csv\ndata/\n!keep.csv\n")
    write(project / ".usinaignore", "notes/\n")
    write(project / "a.csv")
    write(project / "keep.csv")
    write(project / "data" / "big.bin")
    write(project / "notes" / "n.txt")
    write(project / "sub" / ".gitignore", "local.py\n!a.csv\n")
    write(project / "sub" / "local.py")
    write(project / "sub" / "a.csv")
    write(project / "sub" / "other.py")
    got = paths(project)
    assert "a.csv" not in got
    assert "keep.csv" in got
    assert not any(p.startswith(("data/", "notes/")) for p in got)
    assert "sub/local.py" not in got
    assert "sub/a.csv" in got  # the deeper ignore file re-includes it
    assert "sub/other.py" in got
    assert ".gitignore" in got
    assert "sub/.gitignore" in got
    assert "README.md" not in paths(project, extra_ignores=["*.md"])


def test_symlinks_are_followed_and_cycles_skipped(project: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared_lib"
    write(shared / "common.py", "C = 3\n")
    (project / "common").symlink_to(shared, target_is_directory=True)
    (project / "helpers" / "loop").symlink_to(project / "helpers", target_is_directory=True)
    (project / "alias.py").symlink_to(project / "helpers" / "__init__.py")
    (project / "dangling.py").symlink_to(tmp_path / "nowhere.py")
    manifest = manifest_of(project)
    got = [f.path for f in manifest.files]
    assert "common/common.py" in got
    assert "alias.py" in got
    reasons = {s.path: s.reason for s in manifest.skipped}
    assert reasons["helpers/loop"] == "symlink cycle"
    assert reasons["dangling.py"] == "broken symlink"


def test_packing_is_deterministic_across_mtimes_and_modes(project: Path, tmp_path: Path) -> None:
    first = pack(project)
    for path in project.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    (project / "README.md").chmod(0o600)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(project), str(copy)], check=True)
    second = pack(project)
    third = pack(copy)
    assert first.digest == second.digest == third.digest
    assert first.digest == "sha256:" + hashlib.sha256(first.data).hexdigest()
    write(project / "helpers" / "__init__.py", "def f():\n    return 2\n")
    assert pack(project).digest != first.digest
    (project / "pipelines" / "train.py").chmod(0o755)  # the executable bit is content
    assert pack(copy).digest != pack(project).digest


def test_archive_holds_normalised_members_and_a_manifest(project: Path) -> None:
    bundle = pack(project)
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [*sorted(names[:-1]), MANIFEST_PATH]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        assert {m.mode for m in members} == {0o644}
        listing = tar.extractfile(MANIFEST_PATH).read()  # type: ignore[union-attr]
    assert b'"helpers/__init__.py"' in listing


def test_size_limit_names_the_largest_files(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(project / "weights.bin", "w" * 3000)
    write(project / "table.parquet", "t" * 2000)
    with pytest.raises(BundleTooLargeError) as info:
        pack(project, limits=BundleLimits(max_bytes=4000, warn_bytes=1000))
    message = str(info.value)
    assert "would be 5.0 KiB, over the 3.9 KiB limit" in message
    assert message.index("weights.bin") < message.index("table.parquet")
    assert ".usinaignore" in message
    assert isinstance(info.value, DefinitionError)
    assert error_text(info.value, "pt-BR").startswith(
        f"o bundle de código de {project} teria 5.0 KiB, acima do limite de 3.9 KiB; maiores "
        "arquivos: weights.bin"
    )
    with caplog.at_level(logging.WARNING, logger="usina.bundles"):
        pack(project, limits=BundleLimits(max_bytes=10_000, warn_bytes=1000))
    assert "weights.bin" in caplog.text


def test_put_bundle_uploads_once_per_content(project: Path, tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path / "store"))
    first = put_bundle(store, project)
    again = put_bundle(store, project)
    assert first.uploaded
    assert not again.uploaded
    assert first.digest == again.digest
    assert store.exists(first.digest)
    assert first.files == 4
    assert first.uncompressed > 0
    assert first.size > 0
    blobs = list((tmp_path / "store" / "sha256").rglob("*"))
    assert len([b for b in blobs if b.is_file()]) == 1


def test_git_commit_and_dirty_flag(project: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
            cwd=project,
            check=True,
            capture_output=True,
        )

    assert manifest_of(project).git_commit is None
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    clean = manifest_of(project)
    assert clean.git_commit
    assert len(clean.git_commit) == 40
    assert clean.git_dirty is False
    write(project / "helpers" / "new.py")
    assert manifest_of(project).git_dirty is True
    assert ".git/HEAD" not in [f.path for f in clean.files]


def test_fetch_verifies_and_extracts_writable(project: Path, tmp_path: Path) -> None:
    store = InMemoryArtifactStore()
    ref = put_bundle(store, project)
    dest = fetch_bundle(store, ref.digest, tmp_path / "work" / "code")
    assert (dest / "helpers" / "__init__.py").read_text() == "def f():\n    return 1\n"
    (dest / "helpers" / "__init__.py").write_text("changed")  # writable
    assert fetch_bundle(store, ref.digest, dest) == dest  # reused, not fetched again
    with pytest.raises(BundleError, match="not empty"):
        fetch_bundle(store, ref.digest, project)


def test_tampered_bundle_is_refused(project: Path, tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path / "store"))
    ref = put_bundle(store, project)
    hex_ = ref.digest.removeprefix("sha256:")
    blob = tmp_path / "store" / "sha256" / hex_[:2] / hex_
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes() + b"evil")
    with pytest.raises(BundleIntegrityError, match=f"bundle {ref.digest} .* corrupt") as info:
        fetch_bundle(store, ref.digest, tmp_path / "dest")
    assert isinstance(info.value, ArtifactMissingError)
    assert not (tmp_path / "dest").exists()
    missing = "sha256:" + "0" * 64
    with pytest.raises(BundleIntegrityError, match="submit the run again") as gone:
        fetch_bundle(store, missing, tmp_path / "dest")
    assert error_text(gone.value, "pt-BR") == (
        f"o bundle {missing} não está em {store.url}; envie a execução de novo para que o "
        "cliente o envie"
    )


def _evil_tar(*members: tarfile.TarInfo) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return raw.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member",
    [
        _file("../escape.py"),
        _file("a/../../escape.py"),
        _file("/etc/escape.py"),
        _link("lib", "/etc"),
        _link("lib", "../../outside"),
        _link("hard", "/etc/passwd", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "abs-symlink", "rel-symlink", "hardlink"],
)
def test_unsafe_members_are_refused(member: tarfile.TarInfo, tmp_path: Path) -> None:
    store = InMemoryArtifactStore()
    digest = store.put_bytes(_evil_tar(_file("ok.py"), member))
    with pytest.raises(UnsafeBundleError, match=f"bundle {digest}"):
        fetch_bundle(store, digest, tmp_path / "dest")
    assert not (tmp_path / "escape.py").exists()
    assert not (tmp_path / "dest").exists()


def test_pythons_without_tar_filters_extract_and_refuse_the_same(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python before 3.11.4 (Debian 12's 3.11.2, the local image base) has no extraction
    filters: the bundle still extracts, and unsafe members are still refused."""
    original = tarfile.TarFile.extractall

    def extractall_of_old_pythons(  # no filter argument; extracts what it is given
        self: tarfile.TarFile,
        path: str = ".",
        members: object = None,
        *,
        numeric_owner: bool = False,
    ) -> None:
        original(self, path, members, numeric_owner=numeric_owner, filter="fully_trusted")  # type: ignore[arg-type]

    monkeypatch.delattr(tarfile, "data_filter")
    monkeypatch.delattr(tarfile, "FilterError")
    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_of_old_pythons)
    store = InMemoryArtifactStore()
    ref = put_bundle(store, project)
    dest = fetch_bundle(store, ref.digest, tmp_path / "code")
    assert (dest / "helpers" / "__init__.py").read_text() == "def f():\n    return 1\n"
    for n, member in enumerate([_file("../escape.py"), _link("lib", "/etc")]):
        digest = store.put_bytes(_evil_tar(_file("ok.py"), member))
        with pytest.raises(UnsafeBundleError, match=f"bundle {digest}"):
            fetch_bundle(store, digest, tmp_path / f"dest{n}")
    assert not (tmp_path / "escape.py").exists()


def test_bootstrap_puts_the_bundle_first_on_sys_path(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = InMemoryArtifactStore()
    ref = put_bundle(store, project)
    assert bootstrap({}, store) is None
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = bootstrap({"USINA_BUNDLE": ref.digest, "USINA_WORKDIR": str(tmp_path)}, store)
    assert folder is not None
    assert folder.parent == tmp_path.resolve()
    assert sys.path[0] == str(folder)
    assert (folder / "pipelines" / "train.py").is_file()
    with pytest.raises(BundleError, match="not a bundle id"):
        bootstrap({"USINA_BUNDLE": "latest"}, store)


def test_paths_move_from_the_project_into_the_bundle(project: Path, tmp_path: Path) -> None:
    pipeline = str(project / "pipelines" / "train.py")
    assert to_bundle_path(pipeline, project) == "bundle:pipelines/train.py"
    assert to_bundle_path(str(project), project) == "bundle:."
    assert to_bundle_path("/usr/lib/python3", project) == "/usr/lib/python3"
    folder = tmp_path / "code"
    assert from_bundle_path("bundle:pipelines/train.py", folder) == str(
        folder / "pipelines" / "train.py"
    )
    assert from_bundle_path("bundle:.", folder) == str(folder)
    assert from_bundle_path("/usr/lib/python3", None) == "/usr/lib/python3"
    with pytest.raises(BundleError, match="USINA_BUNDLE is not set"):
        from_bundle_path("bundle:pipelines/train.py", None)
    with pytest.raises(UnsafeBundleError):
        from_bundle_path("bundle:../etc/passwd", folder)


def test_content_digest_ignores_compression_but_not_content(project: Path) -> None:
    manifest = manifest_of(project)
    ref = put_bundle(InMemoryArtifactStore(), project)
    assert ref.content_digest == manifest.content_digest != ref.digest
    write(project / "README.md", "changed\n")
    assert manifest_of(project).content_digest != manifest.content_digest
