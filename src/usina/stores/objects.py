"""The objects under a prefix and their versions, over fsspec: what an ``objects`` trigger polls.

An object's version is what changes when it is written again: the S3 version id (a bucket with
versioning), else its ETag (S3, GCS's ``generation`` likewise), else its modification time and
size (a local or in-memory file system). A rewrite with the same bytes keeps an ETag and so is
not new; on a local disk it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usina.errors import StoreError
from usina.scheduling.triggers import ObjectVersion

_VERSION_FIELDS = ("VersionId", "version_id", "generation", "ETag", "etag")
_TIME_FIELDS = ("mtime", "LastModified", "last_modified", "updated", "created")


def _version(info: dict[str, Any]) -> str:
    for name in _VERSION_FIELDS:
        value = info.get(name)
        if value not in (None, "", "null"):
            return str(value).strip('"')
    for name in _TIME_FIELDS:
        value = info.get(name)
        if value is not None:
            stamp = value.timestamp() if hasattr(value, "timestamp") else value
            return f"{stamp}:{info.get('size')}"
    return f"size:{info.get('size')}"


def open_prefix(prefix: str) -> tuple[Any, str, bool]:
    """(file system, root path, local?) of ``prefix``: a local folder or an fsspec URL."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    url = prefix if "://" in prefix else str(Path(prefix).expanduser().resolve())
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise StoreError(
            f"cannot open {prefix!r}: {exc}; install the fsspec implementation for its "
            "protocol (e.g. pip install s3fs)"
        ) from exc
    return fs, root, isinstance(fs, LocalFileSystem)


def list_objects(prefix: str, *, limit: int = 100_000) -> list[ObjectVersion]:
    """Every object under ``prefix`` (recursively) with its version, by path; none when the
    prefix does not exist yet. More than ``limit`` objects is an error (narrow the prefix)."""
    fs, root, local = open_prefix(prefix)
    try:
        found: dict[str, dict[str, Any]] = fs.find(root, detail=True)
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache()  # the next poll must see new objects, not a cached listing
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"listing objects under {prefix!r} failed: {exc}") from exc
    if len(found) > limit:
        raise StoreError(
            f"{prefix!r} holds {len(found)} objects, over the {limit} a trigger watches; "
            "narrow the prefix"
        )
    out = []
    for name, info in found.items():
        if info.get("type", "file") != "file":
            continue
        path = name if local else fs.unstrip_protocol(name)
        out.append(ObjectVersion(path, _version(info)))
    return sorted(out, key=lambda o: o.path)
