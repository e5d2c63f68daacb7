"""Contract of ``ArtifactStore``: the local file system, fsspec ``memory://`` and the fake."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFile

from usina.engine.ports import ArtifactStore, result_key, task_key
from usina.errors import ArtifactCorruptError, ArtifactMissingError, StoreError
from usina.stores import artifacts as artifacts_module
from usina.stores.artifacts import FsspecArtifactStore
from usina.testing import InMemoryArtifactStore

DATA = b"fraud scores \x00\x01 " * 100


@dataclass
class Subject:
    store: ArtifactStore
    # Makes every later write fail half-way through, as a crash or a full disk would.
    break_writes: Callable[[pytest.MonkeyPatch], None]
    # The stray files a crashed write left behind, for the stores that have files.
    leftovers: Callable[[], list[str]]
    # Changes one byte of the stored artifact, keeping its size (bit rot, a careless edit).
    corrupt: Callable[[str], None]


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def _failing_write(real: Callable[..., int]) -> Callable[..., int]:
    def write(self: object, data: bytes) -> int:
        real(self, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device (simulated)")

    return write


class _HalfWriter(io.FileIO):
    def write(self, data: object) -> int:
        super().write(bytes(data)[: len(bytes(data)) // 2])  # type: ignore[arg-type]
        raise OSError(28, "No space left on device (simulated)")


def _local(tmp_path: Path) -> Subject:
    root = tmp_path / "artifacts"
    real_open = open

    def break_writes(monkeypatch: pytest.MonkeyPatch) -> None:
        def fake_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
            if "w" in mode:
                return _HalfWriter(file, "wb")  # type: ignore[arg-type]
            return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(artifacts_module, "open", fake_open, raising=False)

    def leftovers() -> list[str]:
        return [
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and (p.name.startswith(".tmp-") or "tmp" in p.parts)
        ]

    def corrupt(digest: str) -> None:
        hex_ = digest.removeprefix("sha256:")
        blob = root / "sha256" / hex_[:2] / hex_
        blob.write_bytes(_flip(blob.read_bytes()))

    return Subject(FsspecArtifactStore(str(root)), break_writes, leftovers, corrupt)


def _memory() -> Subject:
    bucket = f"memory://usina-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")

    def break_writes(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(MemoryFile, "write", _failing_write(io.BytesIO.write))

    def leftovers() -> list[str]:
        return [p for p in fs.find(bucket) if "/tmp/" in p]

    def corrupt(digest: str) -> None:
        hex_ = digest.removeprefix("sha256:")
        blob = f"{bucket}/sha256/{hex_[:2]}/{hex_}"
        fs.pipe_file(blob, _flip(fs.cat_file(blob)))

    return Subject(FsspecArtifactStore(bucket), break_writes, leftovers, corrupt)


def _fake() -> Subject:
    store = InMemoryArtifactStore()

    def break_writes(monkeypatch: pytest.MonkeyPatch) -> None:
        def read(src: io.BufferedIOBase) -> bytes:
            raise OSError(28, "No space left on device (simulated)")

        monkeypatch.setattr(store, "_read", read)

    def corrupt(digest: str) -> None:
        store._blobs[digest] = _flip(store._blobs[digest])

    return Subject(store, break_writes, list, corrupt)


def _forget(url: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(url, recursive=True)


@pytest.fixture(params=["local", "memory", "fake"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    if request.param == "local":
        yield _local(tmp_path)
    elif request.param == "memory":
        subject = _memory()
        yield subject
        _forget(subject.store.url)
    else:
        yield _fake()


@pytest.fixture
def store(subject: Subject) -> ArtifactStore:
    return subject.store


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_get_exists_verify_delete(store: ArtifactStore) -> None:
    digest = store.put_bytes(DATA)
    assert digest == sha(DATA)
    assert store.exists(digest)
    assert store.get_bytes(digest) == DATA
    assert store.verify(digest)
    store.delete(digest)
    assert not store.exists(digest)
    assert not store.verify(digest)
    store.delete(digest)  # deleting what is gone is a no-op
    with pytest.raises(ArtifactMissingError, match=digest):
        store.get_bytes(digest)


def test_a_corrupt_artifact_is_never_returned(subject: Subject) -> None:
    store = subject.store
    digest = store.put_bytes(DATA)
    other = store.put_bytes(b"untouched")
    subject.corrupt(digest)
    assert not store.verify(digest)
    assert store.exists(digest)  # verify only looks
    with pytest.raises(ArtifactCorruptError, match=f"artifact {digest} .* is corrupt") as caught:
        store.get_bytes(digest)
    assert caught.value.digest == digest
    assert isinstance(caught.value, ArtifactMissingError)
    # Moved aside: the artifact is missing from now on, so a cache lookup sees it gone ...
    assert not store.exists(digest)
    with pytest.raises(ArtifactMissingError) as again:
        store.get_bytes(digest)
    assert not isinstance(again.value, ArtifactCorruptError)
    # ... and the producer's next write stores it afresh.
    assert store.put_bytes(DATA) == digest
    assert store.get_bytes(digest) == DATA
    assert store.get_bytes(other) == b"untouched"


def test_a_corrupt_artifact_has_no_local_path(subject: Subject) -> None:
    store = subject.store
    has_files = store.local_path(store.put_bytes(b"probe")) is not None
    digest = store.put_bytes(DATA)
    subject.corrupt(digest)
    if has_files:
        with pytest.raises(ArtifactCorruptError) as caught:
            store.local_path(digest)
        assert caught.value.digest == digest
        assert not store.exists(digest)
    else:  # stores without local files hand out no path; their reads are checked
        assert store.local_path(digest) is None
        with pytest.raises(ArtifactCorruptError):
            store.get_bytes(digest)


def test_the_corruption_error_survives_pickling() -> None:
    import pickle

    exc = ArtifactCorruptError("artifact sha256:ab is corrupt", "sha256:ab")
    back = pickle.loads(pickle.dumps(exc))
    assert (type(back), str(back), back.digest) == (ArtifactCorruptError, str(exc), exc.digest)


def test_same_bytes_same_digest(store: ArtifactStore, tmp_path: Path) -> None:
    first = store.put_bytes(DATA)
    assert store.put_bytes(DATA) == first
    path = tmp_path / "value.bin"
    path.write_bytes(DATA)
    assert store.put_file(str(path)) == first
    assert store.put_bytes(DATA + b"!") != first
    assert store.put_bytes(b"") == sha(b"")
    assert store.get_bytes(sha(b"")) == b""


def test_put_file_streams_large_files(
    store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts_module, "_CHUNK", 1000)  # many chunks, on a small file
    data = os.urandom(25_000)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = store.put_file(str(path))
    assert digest == sha(data)
    assert store.get_bytes(digest) == data
    assert store.verify(digest)


def test_put_file_of_a_missing_file(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"missing\.bin"):
        store.put_file(str(tmp_path / "missing.bin"))


def test_missing_digest(store: ArtifactStore) -> None:
    digest = sha(b"never stored")
    assert not store.exists(digest)
    assert not store.verify(digest)
    with pytest.raises(ArtifactMissingError):
        store.get_bytes(digest)


def test_malformed_digest_is_refused(store: ArtifactStore) -> None:
    for bad in ("sha256:xyz", "md5:" + "0" * 32, "../../etc/passwd", "sha256:" + "A" * 64):
        with pytest.raises(StoreError, match="digest"):
            store.exists(bad)


def test_records(store: ArtifactStore) -> None:
    key = result_key("r1-train-1")
    assert store.read_record(key) is None
    store.write_record(key, b'{"ok": true}')
    assert store.read_record(key) == b'{"ok": true}'
    store.write_record(key, b'{"ok": false}')  # overwrite
    assert store.read_record(key) == b'{"ok": false}'
    assert store.read_record(task_key("r1-train-1")) is None


@pytest.mark.parametrize("key", ["", "/abs", "a/../../b", "a//b", "./a"])
def test_record_keys_stay_inside_the_store(store: ArtifactStore, key: str) -> None:
    with pytest.raises(StoreError, match="record key"):
        store.write_record(key, b"x")


def test_a_write_that_crashes_leaves_nothing_under_the_final_name(
    subject: Subject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = subject.store
    path = tmp_path / "value.bin"
    path.write_bytes(DATA)
    key = result_key("r1-train-1")
    with monkeypatch.context() as patch:
        subject.break_writes(patch)
        with pytest.raises(StoreError, match="simulated"):
            store.put_bytes(DATA)
        with pytest.raises(StoreError, match="simulated"):
            store.put_file(str(path))
        with pytest.raises(StoreError, match="simulated"):
            store.write_record(key, DATA)
    assert not store.exists(sha(DATA))
    assert store.read_record(key) is None
    assert subject.leftovers() == []
    # and the store works once the disk does
    assert store.put_file(str(path)) == sha(DATA)
    assert store.verify(sha(DATA))
    store.write_record(key, DATA)
    assert store.read_record(key) == DATA


def test_concurrent_writers_of_the_same_bytes(store: ArtifactStore) -> None:
    errors: list[BaseException] = []

    def put() -> None:
        try:
            store.put_bytes(DATA)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get_bytes(sha(DATA)) == DATA


def test_url_reopens_the_same_store(subject: Subject) -> None:
    store = subject.store
    digest = store.put_bytes(DATA)
    if isinstance(store, InMemoryArtifactStore):
        assert store.url.startswith("memory-fake://")
        return
    again = FsspecArtifactStore(store.url)
    assert again.get_bytes(digest) == DATA


# -- specific to FsspecArtifactStore -----------------------------------------------------------


def test_local_layout_and_local_path(tmp_path: Path) -> None:
    store = FsspecArtifactStore(f"file://{tmp_path}/a")
    assert store.url == (tmp_path / "a").as_uri()
    digest = store.put_bytes(DATA)
    hex_ = digest.removeprefix("sha256:")
    blob = tmp_path / "a" / "sha256" / hex_[:2] / hex_
    assert blob.read_bytes() == DATA
    assert store.local_path(digest) == str(blob)
    store.write_record("attempts/x/result.json", b"{}")
    assert (tmp_path / "a" / "records" / "attempts" / "x" / "result.json").read_bytes() == b"{}"
    store.delete(digest)
    with pytest.raises(ArtifactMissingError):
        store.local_path(digest)


def test_corrupted_blob_fails_verify(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path))
    digest = store.put_bytes(DATA)
    path = store.local_path(digest)
    assert path is not None
    Path(path).write_bytes(DATA[:-1] + b"?")
    assert not store.verify(digest)


def test_corrupt_bytes_are_kept_in_quarantine(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path))
    digest = store.put_bytes(DATA)
    path = store.local_path(digest)
    assert path is not None
    Path(path).write_bytes(DATA[:-1] + b"?")
    with pytest.raises(ArtifactCorruptError, match=r"moved to .*quarantine"):
        store.local_path(digest)
    (kept,) = (tmp_path / "quarantine").iterdir()
    assert kept.name.startswith(digest.removeprefix("sha256:") + ".")
    assert kept.read_bytes() == DATA[:-1] + b"?"


def test_memory_store_has_no_local_path() -> None:
    store = FsspecArtifactStore(f"memory://usina-{uuid.uuid4().hex[:8]}")
    digest = store.put_bytes(DATA)
    assert store.local_path(digest) is None
    _forget(store.url)


def test_fake_has_no_local_path() -> None:
    store = InMemoryArtifactStore()
    assert store.local_path(store.put_bytes(DATA)) is None
