"""The ``ArtifactStore`` contract against a real S3 server (SeaweedFS on loopback), through
``FsspecArtifactStore("s3://bucket/prefix")`` with s3fs, credentials and endpoint taken from the
environment as in production (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.test_artifact_store import (
    DATA,
    Subject,
    _flip,
    sha,
    test_a_corrupt_artifact_has_no_local_path,
    test_a_corrupt_artifact_is_never_returned,
    test_concurrent_writers_of_the_same_bytes,
    test_missing_digest,
    test_put_file_of_a_missing_file,
    test_put_file_streams_large_files,
    test_put_get_exists_verify_delete,
    test_record_keys_stay_inside_the_store,
    test_records,
    test_same_bytes_same_digest,
    test_url_reopens_the_same_store,
)
from tests.seaweedfs import SeaweedS3
from usina.engine.ports import ArtifactStore
from usina.stores.artifacts import FsspecArtifactStore

__all__ = [  # the contract, collected again here with the S3 subject
    "test_a_corrupt_artifact_has_no_local_path",
    "test_a_corrupt_artifact_is_never_returned",
    "test_concurrent_writers_of_the_same_bytes",
    "test_missing_digest",
    "test_put_file_of_a_missing_file",
    "test_put_file_streams_large_files",
    "test_put_get_exists_verify_delete",
    "test_record_keys_stay_inside_the_store",
    "test_records",
    "test_same_bytes_same_digest",
    "test_url_reopens_the_same_store",
]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def subject(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Subject:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    store = FsspecArtifactStore(s3.url(f"contract-{uuid.uuid4().hex[:8]}"))
    prefix = store.url.removeprefix(f"s3://{s3.bucket}/")

    def corrupt(digest: str) -> None:
        key = f"{prefix}/sha256/{digest[7:9]}/{digest[7:]}"
        client = s3.client()
        body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        client.put_object(Bucket=s3.bucket, Key=key, Body=_flip(body))

    return Subject(store, lambda _patch: None, list, corrupt)


@pytest.fixture
def store(subject: Subject) -> ArtifactStore:
    return subject.store


def test_objects_are_where_the_layout_says(s3: SeaweedS3, store: ArtifactStore) -> None:
    digest = store.put_bytes(DATA)
    prefix = store.url.removeprefix(f"s3://{s3.bucket}/")
    key = f"{prefix}/sha256/{digest[7:9]}/{digest[7:]}"
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert body == DATA
    assert sha(body) == digest


def test_a_second_process_reads_what_one_wrote(
    s3: SeaweedS3, store: ArtifactStore, tmp_path: Path
) -> None:
    import subprocess
    import sys

    digest = store.put_bytes(DATA)
    code = (
        "import sys; from usina.stores.artifacts import FsspecArtifactStore;"
        f"sys.stdout.buffer.write(FsspecArtifactStore({store.url!r}).get_bytes({digest!r}))"
    )
    import os

    env = {**os.environ, **s3.env()}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=60
    ).stdout
    assert out == DATA
