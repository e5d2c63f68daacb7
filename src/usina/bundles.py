# Over 600 lines: selecting, packing and fetching share one manifest format; split when it grows.
"""Code bundles: a pipeline's project packed into a deterministic, content-addressed tar.gz.

A run on a cluster needs the user's code without an image rebuild. ``pack(root)`` selects the
project's files (``.gitignore`` and ``.usinaignore`` honoured, tooling folders and any copy of
usina itself left out, symlinks followed with cycle detection), and writes them as a tar.gz
whose bytes depend only on the files' paths, contents and executable bits: sorted paths,
mtime 0, uid/gid 0, modes 0644/0755, a gzip header without name or time. The sha256 of those
bytes is the bundle's id, so ``put_bundle`` uploads a bundle once and every run with the same
code shares it. ``fetch_bundle`` (in the pod) downloads it, verifies the hash, and extracts it
safely into a writable directory; ``bootstrap`` does that from the environment a Job sets
(``USINA_BUNDLE``, ``USINA_WORKDIR``).

The archive holds one extra member, ``.usina-bundle/manifest.json``: every file's path, size,
mode and sha256. The git commit and dirty flag are on the ``Manifest``/``BundleRef`` only, so
two commits with the same files give the same bundle.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usina.errors import ArtifactCorruptError, ArtifactMissingError, DefinitionError, UsinaError
from usina.i18n import N_, error

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from usina.engine.ports import ArtifactStore, Task

log = logging.getLogger(__name__)

MiB = 1 << 20
MANIFEST_PATH = ".usina-bundle/manifest.json"
IGNORE_FILES = (".gitignore", ".usinaignore")
#: Left out of every bundle (gitignore syntax, relative to the project root or any folder).
DEFAULT_IGNORES = (
    ".git/",
    ".hg/",
    ".svn/",
    ".usina/",
    ".usina-bundle/",
    ".venv/",
    "venv/",
    "__pycache__/",
    "*.py[cod]",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".tox/",
    ".nox/",
    ".ipynb_checkpoints/",
    "node_modules/",
    "build/",
    "dist/",
    "*.egg-info/",
    ".DS_Store",
)
ROOT_MARKERS = ("pyproject.toml", ".git")
ENV_BUNDLE = "USINA_BUNDLE"
ENV_WORKDIR = "USINA_WORKDIR"


class BundleError(UsinaError):
    """A code bundle could not be made, stored, fetched or extracted."""


class BundleTooLargeError(BundleError, DefinitionError):
    """The project's files exceed the bundle size limit (the message names the largest)."""


class BundleIntegrityError(BundleError, ArtifactMissingError):
    """A fetched bundle is missing or its bytes do not hash to its id."""


class UnsafeBundleError(BundleError):
    """A bundle holds a member that would land outside its directory (absolute, ``..``, link)."""


@dataclass(frozen=True, slots=True)
class BundleLimits:
    """How big a bundle may be, in bytes of the files before compression."""

    max_bytes: int = 50 * MiB  # refuse above: a venv or a data set slipped in
    warn_bytes: int = 10 * MiB  # log a warning above: uploads and pod starts get slow


@dataclass(frozen=True, slots=True)
class BundleFile:
    """One file of a bundle: its path inside the bundle (POSIX, relative) and content."""

    path: str
    size: int
    mode: int  # 0o644 or 0o755
    sha256: str  # hex
    source: str = field(default="", compare=False)  # where it was read from (not stored)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mode": self.mode, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A path left out, and why (``ignored``, ``usina package``, ``symlink cycle``...)."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a bundle holds, and the git state of the project it came from."""

    root: str
    files: tuple[BundleFile, ...]
    skipped: tuple[Skipped, ...] = ()
    git_commit: str | None = None
    git_dirty: bool | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def content_digest(self) -> str:
        """``sha256:`` over the sorted (path, mode, file sha256): the code's identity for cache
        keys, independent of how the archive is compressed (zlib versions differ)."""
        hasher = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.path):
            hasher.update(f"{f.path}\0{f.mode:o}\0{f.sha256}\n".encode())
        return "sha256:" + hasher.hexdigest()

    def largest(self, n: int = 5) -> list[BundleFile]:
        return sorted(self.files, key=lambda f: (-f.size, f.path))[:n]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "files": [f.to_json() for f in self.files],
            "size": self.size,
            "content_digest": self.content_digest,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
        }


@dataclass(frozen=True, slots=True)
class Bundle:
    """A packed bundle: its bytes, id (``sha256:<hex>`` of the bytes) and manifest."""

    data: bytes
    digest: str
    manifest: Manifest


@dataclass(frozen=True, slots=True)
class BundleRef:
    """A bundle in an artifact store: what a run records and a Job's pod is given."""

    digest: str
    content_digest: str  # Manifest.content_digest: for cache keys
    size: int  # compressed bytes
    files: int
    uncompressed: int
    git_commit: str | None
    git_dirty: bool | None
    uploaded: bool  # False when the store had it already (another run, same code)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "content_digest": self.content_digest,
            "size": self.size,
            "files": self.files,
            "uncompressed": self.uncompressed,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
        }


# ---- the project root ------------------------------------------------------------------------


def find_root(
    pipeline_file: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> Path:
    """The project root of ``pipeline_file``: ``root`` if given, else the nearest folder above
    it holding ``pyproject.toml`` or ``.git``, else the file's own folder."""
    path = Path(pipeline_file).resolve()
    if root is not None:
        found = Path(root).resolve()
        if not found.is_dir():
            raise error(
                DefinitionError, N_("bundle root {root!r} is not a directory"), root=str(root)
            )
        if found not in path.parents:
            raise error(
                DefinitionError,
                N_(
                    "the pipeline file {path} is not inside the bundle root {root}; "
                    "pass a root that contains it"
                ),
                path=path,
                root=found,
            )
        return found
    start = path.parent
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return start


# ---- selecting files -------------------------------------------------------------------------


def _spec(lines: Sequence[str]) -> Any:
    try:
        import pathspec
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise error(BundleError, N_("pathspec is missing: pip install 'pathspec>=0.12.1'")) from exc
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _read_ignores(folder: Path) -> list[str]:
    lines: list[str] = []
    for name in IGNORE_FILES:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            lines += (folder / name).read_text(encoding="utf-8", errors="replace").splitlines()
    return lines


def _is_usina_copy(folder: Path) -> bool:
    """A copy of the usina package (it would shadow the image's usina in the pod)."""
    return (
        folder.name == "usina"
        and (folder / "__init__.py").is_file()
        and (folder / "engine" / "ports.py").is_file()
    )


def _ignored(specs: list[tuple[str, Any]], rel: str, is_dir: bool) -> bool:
    """Git's rule: the deepest ignore file with a matching pattern decides."""
    decision = False
    candidate = rel + "/" if is_dir else rel
    for base, spec in specs:
        if base and not rel.startswith(base + "/"):
            continue
        local = candidate[len(base) + 1 :] if base else candidate
        result = spec.check_file(local)
        if result.include is not None:
            decision = bool(result.include)
    return decision


def _file_entry(path: Path, rel: str) -> BundleFile:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
    executable = bool(path.stat().st_mode & stat.S_IXUSR)
    return BundleFile(rel, size, 0o755 if executable else 0o644, hasher.hexdigest(), str(path))


def select_files(
    root: str | os.PathLike[str], *, extra_ignores: Sequence[str] = ()
) -> tuple[list[BundleFile], list[Skipped]]:
    """The files a bundle of ``root`` holds (sorted by path) and what was left out."""
    top = Path(root).resolve()
    files: list[BundleFile] = []
    skipped: list[Skipped] = []
    base_spec = _spec([*DEFAULT_IGNORES, *extra_ignores])

    def walk(folder: Path, rel: str, specs: list[tuple[str, Any]], seen: tuple[Any, ...]) -> None:
        own = _read_ignores(folder)
        if own:
            specs = [*specs, (rel, _spec(own))]
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(Skipped(rel or ".", f"unreadable: {exc.strerror}"))
            return
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            path = Path(entry.path)
            try:
                st = path.stat()  # follows symlinks
            except OSError:
                skipped.append(Skipped(child, "broken symlink"))
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if _ignored(specs, child, is_dir):
                skipped.append(Skipped(child, "ignored"))
                continue
            if is_dir:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    skipped.append(Skipped(child, "symlink cycle"))
                    continue
                if _is_usina_copy(path):
                    skipped.append(Skipped(child, "a copy of the usina package"))
                    continue
                walk(path, child, specs, (*seen, key))
            elif stat.S_ISREG(st.st_mode):
                files.append(_file_entry(path, child))
            else:
                skipped.append(Skipped(child, "not a regular file"))

    top_stat = top.stat()
    walk(top, "", [("", base_spec)], ((top_stat.st_dev, top_stat.st_ino),))
    files.sort(key=lambda f: f.path)
    return files, skipped


def _git_state(root: Path) -> tuple[str | None, bool | None]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--", ".")
    return commit, (bool(status) if status is not None else None)


def manifest_of(root: str | os.PathLike[str], *, extra_ignores: Sequence[str] = ()) -> Manifest:
    """What a bundle of ``root`` would hold (``usina bundle ls``), without packing it."""
    top = Path(root).resolve()
    files, skipped = select_files(top, extra_ignores=extra_ignores)
    commit, dirty = _git_state(top)
    return Manifest(str(top), tuple(files), tuple(skipped), commit, dirty)


# ---- packing ---------------------------------------------------------------------------------


def human_size(n: int) -> str:
    """``n`` bytes for people: ``512 B``, ``3.2 KiB``, ``48.0 MiB``."""
    if n < 1024:
        return f"{n} B"
    if n < MiB:
        return f"{n / 1024:.1f} KiB"
    return f"{n / MiB:.1f} MiB"


def _check_size(manifest: Manifest, limits: BundleLimits) -> None:
    size = manifest.size
    if size > limits.max_bytes:
        largest = ", ".join(f"{f.path} ({human_size(f.size)})" for f in manifest.largest())
        raise error(
            BundleTooLargeError,
            N_(
                "the code bundle of {root} would be {size}, over the {limit} limit; largest "
                "files: {largest}. Keep data out of the project (use artifacts), add them to "
                ".usinaignore, or raise the limit"
            ),
            root=manifest.root,
            size=human_size(size),
            limit=human_size(limits.max_bytes),
            largest=largest,
        )
    if size > limits.warn_bytes:
        log.warning(
            "the code bundle of %s is %s (warning above %s); largest files: %s",
            manifest.root,
            human_size(size),
            human_size(limits.warn_bytes),
            ", ".join(f.path for f in manifest.largest(3)),
        )


def _tar_info(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def archive(manifest: Manifest) -> bytes:
    """The deterministic tar.gz of ``manifest``'s files (read from their sources)."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in manifest.files:
            with open(entry.source, "rb") as src:
                data = src.read()
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise error(
                    BundleError,
                    N_("{path} changed while the bundle was being made; run again"),
                    path=entry.source,
                )
            tar.addfile(_tar_info(entry.path, len(data), entry.mode), io.BytesIO(data))
        listing = json.dumps(
            {"files": [f.to_json() for f in manifest.files]}, sort_keys=True, indent=1
        ).encode()
        tar.addfile(_tar_info(MANIFEST_PATH, len(listing), 0o644), io.BytesIO(listing))
    return raw.getvalue()


def pack(
    root: str | os.PathLike[str],
    *,
    limits: BundleLimits = BundleLimits(),
    extra_ignores: Sequence[str] = (),
) -> Bundle:
    """Pack the project at ``root``. Raises ``BundleTooLargeError`` above ``limits.max_bytes``."""
    return pack_manifest(manifest_of(root, extra_ignores=extra_ignores), limits)


def pack_manifest(manifest: Manifest, limits: BundleLimits = BundleLimits()) -> Bundle:
    """Pack the files ``manifest`` lists, after checking its size against ``limits``."""
    _check_size(manifest, limits)
    data = archive(manifest)
    return Bundle(data, "sha256:" + hashlib.sha256(data).hexdigest(), manifest)


def put_bundle(
    store: ArtifactStore,
    root: str | os.PathLike[str],
    *,
    limits: BundleLimits = BundleLimits(),
    extra_ignores: Sequence[str] = (),
) -> BundleRef:
    """Pack ``root`` and store the bundle in ``store`` unless a bundle with its digest is
    there already. Returns what a run records (digest, sizes, git state)."""
    bundle = pack(root, limits=limits, extra_ignores=extra_ignores)
    uploaded = not store.exists(bundle.digest)
    if uploaded:
        stored = store.put_bytes(bundle.data)
        if stored != bundle.digest:  # pragma: no cover - a store that hashes differently
            raise error(
                BundleError,
                N_("the store saved bundle {digest} as {stored}"),
                digest=bundle.digest,
                stored=stored,
            )
    manifest = bundle.manifest
    return BundleRef(
        digest=bundle.digest,
        content_digest=manifest.content_digest,
        size=len(bundle.data),
        files=len(manifest.files),
        uncompressed=manifest.size,
        git_commit=manifest.git_commit,
        git_dirty=manifest.git_dirty,
        uploaded=uploaded,
    )


# ---- paths inside a bundle -------------------------------------------------------------------

BUNDLE_PATH_PREFIX = "bundle:"
_DIGEST_LEN = len("sha256:") + 64


def is_bundle_id(text: str) -> bool:
    """``sha256:`` and 64 lowercase hex digits: the form of every bundle id."""
    hexpart = text[7:]
    return (
        len(text) == _DIGEST_LEN
        and text.startswith("sha256:")
        and all(c in "0123456789abcdef" for c in hexpart)
    )


def to_bundle_path(path: str, root: str | os.PathLike[str], digest: str | None = None) -> str:
    """``path`` as the pod will find it: ``bundle:<relative path>`` when it lies under the
    project ``root`` (a pipeline file, a ``sys.path`` entry), else unchanged.

    With ``digest`` the path is *pinned*: ``bundle:sha256:<hex>:<relative path>`` names its
    bundle itself, so a worker needs no ``USINA_BUNDLE`` (runs a server compiled from an
    uploaded bundle: one backend serves runs of many bundles)."""
    top = Path(root).resolve()
    real = Path(path).resolve()
    head = BUNDLE_PATH_PREFIX + (f"{digest}:" if digest else "")
    if real == top:
        return head + "."
    if top in real.parents:
        return head + real.relative_to(top).as_posix()
    return path


def pinned_bundle(path: str) -> str | None:
    """The bundle id a pinned bundle path names (``to_bundle_path(..., digest=...)``)."""
    if not path.startswith(BUNDLE_PATH_PREFIX):
        return None
    rest = path[len(BUNDLE_PATH_PREFIX) :]
    head = rest[:_DIGEST_LEN]
    if rest[_DIGEST_LEN : _DIGEST_LEN + 1] == ":" and is_bundle_id(head):
        return head
    return None


def from_bundle_path(path: str, folder: str | os.PathLike[str] | None) -> str:
    """The local path of ``path`` in a pod whose bundle was extracted into ``folder``
    (``bootstrap``'s result); other paths are returned unchanged."""
    if not path.startswith(BUNDLE_PATH_PREFIX):
        return path
    if folder is None:
        raise error(
            BundleError,
            N_(
                "{path!r} is inside the run's code bundle, but no bundle was fetched: the "
                "pod's {env} is not set"
            ),
            path=path,
            env=ENV_BUNDLE,
        )
    rel = path[len(BUNDLE_PATH_PREFIX) :]
    if pinned_bundle(path) is not None:
        rel = rel[_DIGEST_LEN + 1 :]
    if rel.startswith("/") or ".." in rel.split("/"):
        raise error(UnsafeBundleError, N_("{path!r} points outside the bundle"), path=path)
    return str(Path(folder) / rel) if rel != "." else str(Path(folder))


def task_bundle(task: Task) -> str | None:
    """The bundle a task's pinned paths name (its step's file, ``sys_path``, source); None
    when they name none. Raises ``BundleError`` when they name two."""
    paths = [task.node.get("file"), task.source, *task.sys_path]
    found = {d for p in paths if isinstance(p, str) and (d := pinned_bundle(p)) is not None}
    if len(found) > 1:
        raise error(
            BundleError,
            N_("attempt {attempt} names two code bundles: {bundles}"),
            attempt=task.attempt_id,
            bundles=sorted(found),
        )
    return found.pop() if found else None


# ---- checking an uploaded bundle (the server) ------------------------------------------------


def check_archive(data: bytes, digest: str, limits: BundleLimits = BundleLimits()) -> int:
    """Check bytes uploaded as bundle ``digest`` before storing them: they hash to ``digest``,
    are a tar.gz of regular files at safe relative paths with a usina manifest, and unpack to
    at most ``limits.max_bytes`` (a small archive that inflates to gigabytes is refused
    without inflating it all). Returns the unpacked size."""
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise error(
            BundleIntegrityError,
            N_(
                "the uploaded bytes hash to {actual}, not {digest}; the upload was cut or "
                "changed on the way: upload again"
            ),
            actual=actual,
            digest=digest,
        )
    total = 0
    manifest = False
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                list(_members_of([member], digest))
                total += member.size
                manifest = manifest or member.name == MANIFEST_PATH
                if total > limits.max_bytes:
                    raise error(
                        BundleTooLargeError,
                        N_(
                            "bundle {digest} unpacks to over {limit}, the server's limit; keep "
                            "data out of the project (.usinaignore)"
                        ),
                        digest=digest,
                        limit=human_size(limits.max_bytes),
                    )
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise error(
            BundleError,
            N_("bundle {digest} is not a readable tar.gz: {error}"),
            digest=digest,
            error=str(exc),
        ) from exc
    if not manifest:
        raise error(
            BundleError,
            N_("bundle {digest} has no {manifest}; make bundles with usina (usina run)"),
            digest=digest,
            manifest=MANIFEST_PATH,
        )
    return total


# ---- fetching (in the pod) -------------------------------------------------------------------

_MARKER = ".usina-bundle/digest"


def _members(tar: tarfile.TarFile, digest: str) -> Iterator[tarfile.TarInfo]:
    return _members_of(tar.getmembers(), digest)


def _members_of(members: Iterable[tarfile.TarInfo], digest: str) -> Iterator[tarfile.TarInfo]:
    for member in members:
        name = member.name
        parts = name.split("/")
        if name.startswith("/") or os.path.isabs(name) or ".." in parts:
            raise error(
                UnsafeBundleError,
                N_("bundle {digest} holds an unsafe path {name!r}; refused"),
                digest=digest,
                name=name,
            )
        if member.islnk() or member.issym():
            raise error(
                UnsafeBundleError,
                N_(
                    "bundle {digest} holds a link {name!r} -> {target!r}; usina bundles hold "
                    "regular files only, refused"
                ),
                digest=digest,
                name=name,
                target=member.linkname,
            )
        if not (member.isfile() or member.isdir()):
            raise error(
                UnsafeBundleError,
                N_("bundle {digest} holds a special file {name!r}; refused"),
                digest=digest,
                name=name,
            )
        yield member


def fetch_bundle(store: ArtifactStore, digest: str, dest: str | os.PathLike[str]) -> Path:
    """Download bundle ``digest`` from ``store``, verify its sha256 and extract it into
    ``dest`` (created; reused as is when it already holds this bundle). Returns ``dest``, the
    folder to put first on ``sys.path``."""
    target = Path(dest).resolve()
    marker = target / _MARKER
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == digest:
            return target
    if target.exists() and any(target.iterdir()):
        raise error(
            BundleError,
            N_(
                "cannot extract bundle {digest} into {folder}: the folder is not empty; give "
                "an empty or new folder"
            ),
            digest=digest,
            folder=target,
        )
    try:
        data = store.get_bytes(digest)
    except ArtifactCorruptError as exc:  # the store checked the hash on read, and moved it aside
        raise error(
            BundleIntegrityError,
            N_(
                "bundle {digest} in {store} is corrupt ({error}); submit the run again so the "
                "client uploads it again"
            ),
            digest=digest,
            store=store.url,
            error=exc,
        ) from exc
    except ArtifactMissingError as exc:
        raise error(
            BundleIntegrityError,
            N_("bundle {digest} is not in {store}; submit the run again so the client uploads it"),
            digest=digest,
            store=store.url,
        ) from exc
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise error(
            BundleIntegrityError,
            N_(
                "bundle {digest} in {store} is corrupt: its bytes hash to {actual}; delete it "
                "from the store and submit the run again"
            ),
            digest=digest,
            store=store.url,
            actual=actual,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=target.parent))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                members = list(_members(tar, digest))
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.11.4 (Debian 12's 3.11.2): _members refused what it would
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, getattr(tarfile, "FilterError", ())):
                raise error(
                    UnsafeBundleError,
                    N_("bundle {digest}: {error}; refused"),
                    digest=digest,
                    error=str(exc),
                ) from exc
            raise error(
                BundleError,
                N_("cannot extract bundle {digest}: {error}"),
                digest=digest,
                error=str(exc),
            ) from exc
        (tmp / _MARKER).parent.mkdir(exist_ok=True)
        (tmp / _MARKER).write_text(digest + "\n")
        try:
            if target.exists():
                target.rmdir()
            os.replace(tmp, target)
        except OSError:
            # Another process extracted the same bundle here first: use theirs.
            with contextlib.suppress(OSError):
                if marker.read_text().strip() == digest:
                    shutil.rmtree(tmp, ignore_errors=True)
                    return target
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def bootstrap(
    env: Mapping[str, str], store: ArtifactStore, digest: str | None = None
) -> Path | None:
    """Make the bundle named by ``USINA_BUNDLE`` importable in this process (a pod's start).

    ``digest`` (a task's pinned bundle) comes first, else ``USINA_BUNDLE``; without either it
    does nothing and returns None. Otherwise it fetches, verifies and extracts the bundle from
    ``store`` (the run's artifact store) into ``$USINA_WORKDIR/bundle-<hex12>`` (a new
    temporary folder without ``USINA_WORKDIR``), puts that folder first on ``sys.path`` and
    returns it.
    """
    digest = digest or env.get(ENV_BUNDLE, "").strip()
    if not digest:
        return None
    if not is_bundle_id(digest):
        raise error(
            BundleError,
            N_("{env}={digest!r} is not a bundle id ('sha256:' + 64 hex)"),
            env=ENV_BUNDLE,
            digest=digest,
        )
    workdir = env.get(ENV_WORKDIR) or tempfile.mkdtemp(prefix="usina-")
    folder = fetch_bundle(store, digest, Path(workdir) / f"bundle-{digest[7:19]}")
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    return folder


def localize_task(task: Task, folder: Path | None) -> Task:
    """``task`` with its ``bundle:`` paths (the step's file, ``sys_path``) made local to the
    bundle extracted into ``folder`` (``bootstrap``'s result)."""
    import dataclasses

    node = dict(task.node)
    if isinstance(node.get("file"), str):
        node["file"] = from_bundle_path(node["file"], folder)
    sys_path = tuple(from_bundle_path(p, folder) for p in task.sys_path)
    return dataclasses.replace(task, node=node, sys_path=sys_path)


def forget_shadowed(folders: Sequence[str], keep: str | os.PathLike[str]) -> list[str]:
    """Drop from ``sys.modules`` the modules a bundle's import folders (``folders``) provide
    that were imported from elsewhere (a local worker forks from a process that preloaded the
    server's own pipelines: their ``helpers`` must not stand in for the bundle's). Modules
    loaded from inside ``keep`` (the bundle) stay. Returns the names dropped."""
    inside = str(Path(keep).resolve()) + os.sep
    provided: set[str] = set()
    for folder in folders:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.endswith(".py") and entry.is_file():
                    provided.add(entry.name[:-3])
                elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                    provided.add(entry.name)
    dropped: list[str] = []
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] not in provided:
            continue
        origin = getattr(module, "__file__", None)
        if origin and str(Path(origin).resolve()).startswith(inside):
            continue
        del sys.modules[name]
        dropped.append(name)
    return dropped


def bootstrap_task(env: Mapping[str, str], store: ArtifactStore, task: Task) -> Task:
    """A pod's (or a local worker's) start: fetch and verify the run's bundle (the one the
    task's pinned paths name, else ``USINA_BUNDLE``), then point the task's paths into it.
    Without a bundle the task is returned as it is."""
    folder = bootstrap(env, store, task_bundle(task))
    if folder is None:
        return task
    local = localize_task(task, folder)
    forget_shadowed([str(folder), *local.sys_path], folder)
    return local
