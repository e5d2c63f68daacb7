"""Content-addressed artifacts over fsspec: bytes stored under their sha256, plus small records.

``FsspecArtifactStore(url)`` implements ``usina.engine.ports.ArtifactStore``. Layout under the
root::

    sha256/<hex[:2]>/<hex>     the bytes whose sha256 is <hex> (digest "sha256:<hex>")
    records/<key>              named records, e.g. records/attempts/<id>/result.json
    tmp/                       files being written (local and non-object-store file systems)
    quarantine/<hex>.<n>       bytes found not to hash to their name, moved aside when read

Every read checks the bytes against their digest (``get_bytes``, and ``local_path`` before it
hands out the file): a mismatch raises ``ArtifactCorruptError`` naming the artifact, after the
bytes are moved to ``quarantine/``, so the artifact is missing from then on (a cache lookup
sees it gone) and the step that produced it stores it again when it re-runs.

Writes are atomic: a reader never sees a partial blob or record under its final name. On the
local file system a write goes to a temporary file that is flushed, fsynced and then
``os.replace``-d onto the final name; on object stores (s3, gs, az) the bytes stream as a
multipart upload of 8 MiB parts and the object only appears once the upload completes (a
failed one is aborted); on other fsspec file systems the bytes go to ``tmp/`` first and are
then moved. A crash leaves at most a stray file under ``tmp/`` or a ``.tmp-*`` file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usina.errors import ArtifactCorruptError, ArtifactMissingError, StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_CHUNK = 8 << 20  # bytes read and hashed at a time: big files are never held in memory
_MIN_PART = 5 << 20  # S3's smallest multipart part
# Where an object only becomes visible once fully uploaded: write it directly.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


# Folders this process made or found (a bounded memo): a write into one of them skips the
# ``mkdir`` that would only fail with EEXIST, which costs as much as a file's creation on some
# file systems (~0.3 ms here, five times per step). A folder removed meanwhile is made again.
_KNOWN_DIRS: set[str] = set()
_KNOWN_DIRS_MAX = 4096


def _temp_in(folder: str) -> tuple[int, str]:
    """A new temporary file in ``folder`` (made when missing): its descriptor and path."""
    if folder in _KNOWN_DIRS:
        try:
            return tempfile.mkstemp(dir=folder, prefix=".tmp-")
        except FileNotFoundError:
            _KNOWN_DIRS.discard(folder)
    os.makedirs(folder, exist_ok=True)
    made = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    if len(_KNOWN_DIRS) >= _KNOWN_DIRS_MAX:
        _KNOWN_DIRS.clear()
    _KNOWN_DIRS.add(folder)
    return made


def digest_of(data: bytes) -> str:
    """The artifact digest of ``data``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _chunks(src: Any) -> Iterator[bytes]:
    while chunk := src.read(_CHUNK):
        yield chunk


class FsspecArtifactStore:
    """Artifacts under ``url``: ``file:///abs/path`` or a plain path (the local file system),
    ``memory://bucket``, ``s3://bucket/prefix``, or any other fsspec URL."""

    def __init__(self, url: str) -> None:
        if "://" not in url:
            url = Path(url).expanduser().resolve().as_uri()
        self._fs: Any = None
        self._root: str
        if url.startswith("file://"):
            # The local file system needs no fsspec (a CLI start is ~0.2 s faster without it).
            from urllib.parse import unquote, urlparse

            self._local = True
            self._root = unquote(urlparse(url).path).rstrip("/") or "/"
            self._direct = False
            self._url = Path(self._root).as_uri()
            return
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise StoreError(
                f"cannot open the artifact store {url!r}: {exc}; install the fsspec "
                "implementation for its protocol (e.g. pip install s3fs)"
            ) from exc
        self._fs = fs
        self._local = isinstance(fs, LocalFileSystem)
        self._root = root.rstrip("/") or "/"
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        self._direct = bool(_OBJECT_STORES.intersection(protocols))
        self._url = Path(self._root).as_uri() if self._local else url.rstrip("/")

    @property
    def url(self) -> str:
        """The URL this store was opened with (``file://`` for local paths); another process
        opens the same store with ``FsspecArtifactStore(store.url)``."""
        return self._url

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self._url!r})"

    # -- paths -----------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> str:
        match = _DIGEST.match(digest)
        if match is None:
            raise StoreError(
                f"{digest!r} is not an artifact digest; expected 'sha256:' and 64 hex digits"
            )
        hex_ = match.group(1)
        return f"{self._root}/sha256/{hex_[:2]}/{hex_}"

    def _record_path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(
                f"record key {key!r} is not a relative path like 'attempts/<id>/result.json'"
            )
        return f"{self._root}/records/{key}"

    # -- writing ---------------------------------------------------------------------------

    def _write(self, final: str, chunks: Iterable[bytes], *, durable: bool = True) -> None:
        """Write ``chunks`` to ``final`` so that it appears whole or not at all.

        durable: fsync before the rename, so the content survives a machine crash too.
        Records skip it: a record lost with the machine only makes an attempt run again,
        while an fsync costs milliseconds on every step."""
        if self._local:
            self._write_local(final, chunks, durable=durable)
        elif self._direct:
            self._write_object(final, chunks)
        else:
            tmp = f"{self._root}/tmp/{uuid.uuid4().hex}"
            try:
                with self._fs.open(tmp, "wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                self._fs.mv(tmp, final)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._fs.rm_file(tmp)
                raise

    def _write_object(self, final: str, chunks: Iterable[bytes]) -> None:
        """Stream ``chunks`` into an object: a multipart upload of ``_CHUNK``-sized parts
        (at most a part or two in memory), which the store makes visible only when it
        completes; on any failure the upload is aborted, so no partial object appears."""
        out = self._fs.open(final, "wb", block_size=max(_CHUNK, _MIN_PART))
        try:
            for chunk in chunks:
                out.write(chunk)
        except BaseException:
            with contextlib.suppress(Exception):
                discard = getattr(out, "discard", None)
                if discard is not None:
                    discard()  # aborts the multipart upload (s3fs)
                    out.closed = True  # never committed, not even when collected
            raise
        out.close()

    @staticmethod
    def _write_local(final: str, chunks: Iterable[bytes], *, durable: bool = True) -> None:
        fd, tmp = _temp_in(os.path.dirname(final))
        try:
            with open(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put_bytes(self, data: bytes) -> str:
        digest = digest_of(data)
        final = self._blob_path(digest)
        try:
            if not self._exists(final):
                self._write(final, [data])
        except OSError as exc:
            raise StoreError(f"cannot write artifact {digest} to {self._url}: {exc}") from exc
        return digest

    def put_file(self, path: str) -> str:
        """Store the file at ``path``, hashing it while it streams (never whole in memory)."""
        try:
            if self._direct:  # hash first: the object's name must be known before its upload
                digest = self._hash_file(path)
                final = self._blob_path(digest)
                if not self._exists(final):
                    with open(path, "rb") as src:
                        self._write_object(final, _chunks(src))
                return digest
            return self._stream_file(path)
        except OSError as exc:
            raise StoreError(f"cannot store {path!r} as an artifact in {self._url}: {exc}") from exc

    def _hash_file(self, path: str) -> str:
        hasher = hashlib.sha256()
        with open(path, "rb") as src:
            for chunk in _chunks(src):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()

    def _stream_file(self, path: str) -> str:
        hasher = hashlib.sha256()

        def hashed(src: Any) -> Iterator[bytes]:
            for chunk in _chunks(src):
                hasher.update(chunk)
                yield chunk

        tmp_final = f"{self._root}/tmp/{uuid.uuid4().hex}.part"
        with open(path, "rb") as src:
            self._write(tmp_final, hashed(src))
        digest = "sha256:" + hasher.hexdigest()
        final = self._blob_path(digest)
        try:
            if self._exists(final):
                self._remove(tmp_final)
            elif self._local:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(tmp_final, final)
            else:
                self._fs.mv(tmp_final, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self._remove(tmp_final)
            raise
        return digest

    # -- reading ---------------------------------------------------------------------------

    def _exists(self, path: str) -> bool:
        return os.path.exists(path) if self._local else bool(self._fs.exists(path))

    def _remove(self, path: str) -> None:
        if self._local:
            os.unlink(path)
        else:
            self._fs.rm_file(path)

    def _open(self, path: str) -> Any:
        if self._local:
            return open(path, "rb")
        # Ranged reads of exactly what is asked (no read-ahead cache): a streamed read holds
        # one chunk, a whole read fetches the object once.
        return self._fs.open(path, "rb", block_size=_CHUNK, cache_type="none")

    def get_bytes(self, digest: str) -> bytes:
        """The bytes of ``digest``, checked against it: ``ArtifactCorruptError`` when they
        do not hash to it (the file is moved aside first), ``ArtifactMissingError`` when gone."""
        path = self._blob_path(digest)
        try:
            with self._open(path) as src:
                data: bytes = src.read()
        except FileNotFoundError as exc:
            raise self._missing(digest) from exc
        except OSError as exc:
            raise StoreError(f"cannot read artifact {digest} from {self._url}: {exc}") from exc
        actual = digest_of(data)
        if actual != digest:
            raise self._corrupt(path, digest, actual)
        return data

    def get_file(self, digest: str, dest: str) -> None:
        """Copy the bytes of ``digest`` to the local file ``dest``, streaming (never whole in
        memory) and checked against the digest before ``dest`` appears: a mismatch raises
        ``ArtifactCorruptError`` as ``get_bytes`` does, and ``dest`` is not written."""
        path = self._blob_path(digest)
        hasher = hashlib.sha256()

        def hashed(src: Any) -> Iterator[bytes]:
            for chunk in _chunks(src):
                hasher.update(chunk)
                yield chunk

        folder = os.path.dirname(os.path.abspath(dest))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with open(fd, "wb") as out, self._open(path) as src:
                for chunk in hashed(src):
                    out.write(chunk)
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise self._corrupt(path, digest, actual)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            raise self._missing(digest) from exc
        except OSError as exc:
            raise StoreError(f"cannot read artifact {digest} from {self._url}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def local_path(self, digest: str) -> str | None:
        """The file holding ``digest`` on the local file system, its content checked against
        the digest first (as ``get_bytes``); None on any other file system."""
        path = self._blob_path(digest)
        if not self._local:
            return None
        actual = self._hash_stored(path, digest)
        if actual is None:
            raise self._missing(digest)
        if actual != digest:
            raise self._corrupt(path, digest, actual)
        return path

    def exists(self, digest: str) -> bool:
        path = self._blob_path(digest)
        try:
            return self._exists(path)
        except OSError as exc:
            raise StoreError(f"cannot look for artifact {digest} in {self._url}: {exc}") from exc

    def verify(self, digest: str) -> bool:
        """Whether the stored bytes of ``digest`` exist and still hash to it (nothing moves)."""
        actual = self._hash_stored(self._blob_path(digest), digest)
        if actual is not None and actual != digest:
            log.warning("artifact %s in %s does not match its hash", digest, self._url)
        return actual == digest

    def _hash_stored(self, path: str, digest: str) -> str | None:
        """The digest of the bytes stored at ``path``; None when there are none."""
        hasher = hashlib.sha256()
        try:
            with self._open(path) as src:
                for chunk in _chunks(src):
                    hasher.update(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read artifact {digest} from {self._url}: {exc}") from exc
        return "sha256:" + hasher.hexdigest()

    def _missing(self, digest: str) -> ArtifactMissingError:
        return ArtifactMissingError(
            f"artifact {digest} is not in {self._url}; re-run the step that produced it "
            "(`usina runs resume RUN`)"
        )

    def _corrupt(self, path: str, digest: str, actual: str) -> ArtifactCorruptError:
        """Move the corrupt bytes to ``quarantine/`` (so that the artifact reads as missing
        and its producer's next write stores it afresh) and return the error to raise."""
        hex_ = digest.removeprefix("sha256:")
        aside = f"{self._root}/quarantine/{hex_}.{uuid.uuid4().hex[:8]}"
        try:
            if self._local:
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                os.replace(path, aside)
            else:
                self._fs.mv(path, aside)
            where = f"moved to {aside}"
        except FileNotFoundError:
            where = "already moved aside by another reader"
        except OSError as exc:  # still never used: the error is raised either way
            log.warning("cannot move corrupt artifact %s aside: %s", digest, exc)
            where = f"left in place ({exc})"
        log.error("artifact %s in %s is corrupt (its bytes hash to %s)", digest, self._url, actual)
        return ArtifactCorruptError(
            f"artifact {digest} in {self._url} is corrupt: its bytes hash to {actual}; they "
            f"were {where} and are not used. The artifact now reads as missing: running the "
            "pipeline again recomputes it",
            digest,
        )

    def delete(self, digest: str) -> None:
        path = self._blob_path(digest)
        try:
            self._remove(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot delete artifact {digest} in {self._url}: {exc}") from exc

    # -- records ---------------------------------------------------------------------------

    def write_record(self, key: str, data: bytes) -> None:
        path = self._record_path(key)
        try:
            self._write(path, [data], durable=False)
        except OSError as exc:
            raise StoreError(f"cannot write record {key!r} to {self._url}: {exc}") from exc

    def read_record(self, key: str) -> bytes | None:
        path = self._record_path(key)
        try:
            with self._open(path) as src:
                data: bytes = src.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read record {key!r} from {self._url}: {exc}") from exc
        return data
