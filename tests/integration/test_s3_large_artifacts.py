"""Large artifacts stream through a real S3 server (SeaweedFS): a 96 MiB file is stored as a
multipart upload and read back to a file, both verified by hash, while the process's peak
memory grows by far less than the file's size; a failed upload leaves no object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.seaweedfs import SeaweedS3
from usina.stores.artifacts import FsspecArtifactStore

SIZE = 96 * 2**20
#: Peak RSS growth allowed while moving SIZE bytes: two 8 MiB parts and the client's buffers.
BOUND = 48 * 2**20

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    from usina.stores.artifacts import FsspecArtifactStore

    url, path, work = sys.argv[1:4]
    store = FsspecArtifactStore(url)
    store.put_bytes(b"warm-up")  # imports and the client's connection pool: the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    digest = None
    if work == "1":
        digest = store.put_file(path)
        store.get_file(digest, path + ".back")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"digest": digest, "base": base, "peak": peak}))
    """
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # clients another module's server left
    server = SeaweedS3.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()
    # s3fs caches its clients by their options, not by the environment they read the
    # endpoint from: forget this server's, so later tests reach their own.
    s3fs.S3FileSystem.clear_instance_cache()


def _child(s3: SeaweedS3, url: str, path: Path, work: bool) -> dict[str, object]:
    env = {**os.environ, **s3.env()}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(path), "1" if work else "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_large_artifact_streams_through_s3(
    s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:  # not compressible, not held in memory here either
        for _ in range(SIZE // 2**20):
            fh.write(os.urandom(2**20))
    url = s3.url(f"large-{uuid.uuid4().hex[:8]}")
    moved = _child(s3, url, big, work=True)
    growth = int(moved["peak"]) - int(moved["base"])  # type: ignore[call-overload]
    assert growth < BOUND, f"peak RSS grew by {growth / 2**20:.0f} MiB moving 96 MiB"
    back = Path(str(big) + ".back")
    assert back.stat().st_size == SIZE
    assert back.read_bytes() == big.read_bytes()

    digest = str(moved["digest"])
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)  # s3fs reads the credentials from the environment
    store = FsspecArtifactStore(url)
    assert store.verify(digest)
    key = f"{url.removeprefix(f's3://{s3.bucket}/')}/sha256/{digest[7:9]}/{digest[7:]}"
    head = s3.client().head_object(Bucket=s3.bucket, Key=key)
    assert head["ContentLength"] == SIZE
    assert "-" in head["ETag"]  # a multipart upload's ETag is "<md5 of md5s>-<parts>"


def test_a_failed_upload_leaves_no_object(
    s3: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    store = FsspecArtifactStore(s3.url(f"fail-{uuid.uuid4().hex[:8]}"))

    def chunks() -> Iterator[bytes]:
        yield os.urandom(9 * 2**20)  # one part uploaded
        raise OSError("the producer died")

    final = f"{store.url.removeprefix('s3://')}/records/half.bin"
    with pytest.raises(OSError, match="producer died"):
        store._write_object(final, chunks())
    assert store.read_record("half.bin") is None
