"""Where a step's checkpoints live, and how they are published so that a torn one is never read.

Layout, next to the artifact store's blobs and records (same fsspec file system)::

    <store>/checkpoints/<run>/<step>/manifest.json           the complete checkpoints, oldest first
    <store>/checkpoints/<run>/<step>/step-<n>-<id>.<fmt>     one checkpoint's bytes
    <store>/checkpoints/<run>/<step>/rank-<r>/...            the same, per rank (``all_ranks``)

The location is per run and step, not per attempt, so every attempt of the step (and
``usina runs resume``) sees the same checkpoints. Publishing order: the bytes go to a
temporary name, are fsynced and renamed (on object stores an object appears only when its
upload completes), and only then is the manifest replaced (same way) to name them. A writer
killed at any point leaves the previous manifest, which names only complete files. Files
dropped from the manifest (beyond ``keep``) are deleted after it is published.

Formats: ``torch`` (``torch.save``) when the state holds tensors, else ``pickle``. Both are
loaded with pickle semantics: a checkpoint is written by the same step of the same run, in
the store the run's own artifacts come from.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import sys
import tempfile
import time
import uuid
from typing import Any

from usina.errors import StoreError

MANIFEST = "manifest.json"
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def checkpoint_url(store_url: str, run_id: str, node: str) -> str:
    """The durable checkpoint folder of step ``node`` of run ``run_id``."""
    return f"{store_url.rstrip('/')}/checkpoints/{run_id}/{node}"


def _has_tensor(value: Any, depth: int = 0) -> bool:
    torch = sys.modules.get("torch")
    if torch is None or depth > 64:
        return False
    if isinstance(value, torch.Tensor | torch.nn.Module):
        return True
    if isinstance(value, dict):
        return any(_has_tensor(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_tensor(v, depth + 1) for v in value)
    return False


class StoreCheckpointer:
    """``usina.sdk.checkpoint.Checkpointer`` over an fsspec folder (see the module docstring)."""

    def __init__(self, url: str, *, rank: int = 0, attempt: str = "") -> None:
        self.url = url.rstrip("/")
        self.rank = rank
        self.attempt = attempt
        self._opened: tuple[Any, str, bool, bool] | None = None

    def _open(self) -> tuple[Any, str, bool, bool]:
        """(file system, root path, local?, object store?), resolved on first use: every
        attempt gets a checkpointer, few save one, and importing fsspec costs a step ~0.1 s."""
        if self._opened is None:
            import fsspec
            from fsspec.implementations.local import LocalFileSystem

            fs, root = fsspec.core.url_to_fs(self.url)
            protocols = fs.protocol
            protocols = protocols if isinstance(protocols, tuple) else (protocols,)
            direct = bool(_OBJECT_STORES.intersection(protocols))
            self._opened = (fs, root.rstrip("/"), isinstance(fs, LocalFileSystem), direct)
        return self._opened

    @property
    def _fs(self) -> Any:
        return self._open()[0]

    @property
    def _root(self) -> str:
        return self._open()[1]

    @property
    def _local(self) -> bool:
        return self._open()[2]

    @property
    def _direct(self) -> bool:
        return self._open()[3]

    # -- Checkpointer protocol -------------------------------------------------------------

    def save(self, state: Any, step: int, *, keep: int = 3, all_ranks: bool = False) -> bool:
        if not all_ranks and self.rank != 0:
            return False
        folder = self._folder(all_ranks)
        fmt = "torch" if _has_tensor(state) else "pickle"
        name = f"step-{step:010d}-{uuid.uuid4().hex[:8]}.{'pt' if fmt == 'torch' else 'pkl'}"
        size = self._write(f"{folder}/{name}", lambda fh: _dump(state, fh, fmt))
        before = self._manifest(folder)
        entries = [e for e in before if e["step"] != step]
        entries.append(
            {
                "step": step,
                "file": name,
                "format": fmt,
                "bytes": size,
                "saved_at": time.time(),
                "attempt": self.attempt,
            }
        )
        entries.sort(key=lambda e: int(e["step"]))
        kept, dropped = entries[-keep:], entries[:-keep]
        replaced = [e for e in before if e["step"] == step]
        body = json.dumps({"checkpoints": kept}, indent=1).encode()
        self._write(f"{folder}/{MANIFEST}", lambda fh: fh.write(body))
        for entry in dropped + replaced:
            with contextlib.suppress(OSError):
                self._fs.rm_file(f"{folder}/{entry['file']}")
        return True

    def load_latest(self, *, all_ranks: bool = False) -> tuple[Any, int] | None:
        folder = self._folder(all_ranks)
        for entry in reversed(self._manifest(folder)):
            path = f"{folder}/{entry['file']}"
            try:
                with self._fs.open(path, "rb") as fh:
                    state = _load(fh, str(entry["format"]))
            except FileNotFoundError:
                continue  # deleted by a newer writer between our reads: take the next one
            return state, int(entry["step"])
        return None

    def latest_step(self) -> int | None:
        entries = self._manifest(self._folder(False))
        return int(entries[-1]["step"]) if entries else None

    # -- internals -------------------------------------------------------------------------

    def _folder(self, all_ranks: bool) -> str:
        return f"{self._root}/rank-{self.rank:05d}" if all_ranks else self._root

    def _manifest(self, folder: str) -> list[dict[str, Any]]:
        path = f"{folder}/{MANIFEST}"
        try:
            with self._fs.open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read the checkpoint manifest {path}: {exc}") from exc
        try:
            entries = list(json.loads(raw)["checkpoints"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"the checkpoint manifest {path} is not valid JSON ({exc}); it is only ever "
                "replaced whole, so the file system lost it: move it away to start over"
            ) from exc
        return entries

    def _write(self, final: str, writer: Any) -> int:
        """Write ``final`` so that it appears whole or not at all; returns its size."""
        folder = os.path.dirname(final)
        if self._local:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with open(fd, "wb") as out:
                    writer(out)
                    out.flush()
                    os.fsync(out.fileno())
                    size = out.tell()
                os.replace(tmp, final)
                dir_fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)  # the rename itself survives a machine crash
                finally:
                    os.close(dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return size
        buffer = io.BytesIO()
        writer(buffer)
        data = buffer.getvalue()
        if self._direct:
            self._fs.pipe_file(final, data)
        else:
            tmp = f"{folder}/.tmp-{uuid.uuid4().hex}"
            try:
                self._fs.pipe_file(tmp, data)
                self._fs.mv(tmp, final)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._fs.rm_file(tmp)
                raise
        return len(data)


def _dump(state: Any, fh: Any, fmt: str) -> None:
    if fmt == "torch":
        import torch

        torch.save(state, fh)
    else:
        pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)


def _load(fh: Any, fmt: str) -> Any:
    if fmt == "torch":
        try:
            import torch
        except ImportError as exc:
            from usina.errors import MissingExtraError

            raise MissingExtraError("torch", "torch") from exc
        # Written by this same step of this same run (see the module docstring).
        return torch.load(fh, map_location="cpu", weights_only=False)
    return pickle.load(fh)
