"""Fault injection for the chaos test (on PYTHONPATH of its servers, so every process of
theirs, step processes included, loads it): when ``USINA_CHAOS_WRITE_RATE`` is set, a step
process's artifact writes fail at that rate, chosen by a seeded hash of the attempt and the
artifact, so a run is repeatable and a retry of the same attempt id never exists."""

from __future__ import annotations

import hashlib
import os

_RATE = float(os.environ.get("USINA_CHAOS_WRITE_RATE") or 0)
_SEED = os.environ.get("USINA_CHAOS_SEED", "0")


def _install() -> None:
    from usina.errors import StoreError
    from usina.stores import artifacts

    original = artifacts.FsspecArtifactStore.put_bytes

    def put_bytes(self: artifacts.FsspecArtifactStore, data: bytes) -> str:
        attempt = os.environ.get("USINA_ATTEMPT_ID")
        if attempt:
            key = f"{_SEED}:{attempt}:{hashlib.sha256(data).hexdigest()}".encode()
            draw = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
            if draw < _RATE:
                marker = os.path.join(os.environ.get("USINA_CHAOS_DIR", "/tmp"), attempt)
                with open(marker, "w") as fh:
                    fh.write("failed")
                raise StoreError(f"chaos: artifact write failed on purpose ({attempt})")
        return original(self, data)

    artifacts.FsspecArtifactStore.put_bytes = put_bytes  # type: ignore[method-assign]


if _RATE > 0:
    _install()
