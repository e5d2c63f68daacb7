"""Cache keys: a step's result is reused only when everything that determines it is the same.

The key hashes the step's code, its constant parameters, the content hashes of its inputs, the
runtime environment, the declared environment variables and the optional ``cache_version``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from typing import Any

from usina.sdk.pipeline import PlanNode


def cache_key(
    node: PlanNode,
    input_digests: Mapping[str, str],
    environment: str,
    env_values: Mapping[str, str | None],
) -> str:
    """The cache key of ``node`` given its inputs' digests (name -> "sha256:...")."""
    consts = {name: spec["const"] for name, spec in node.inputs.items() if "const" in spec}
    material: dict[str, Any] = {
        "code": node.code_hash,
        "outputs": node.outputs,
        "params": consts,
        "inputs": dict(sorted(input_digests.items())),
        "environment": environment,
        "env": dict(sorted(env_values.items())),
        "cache_version": node.cache_version,
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def environment_fingerprint(extra: str = "") -> str:
    """A hash of the Python version and the installed distributions (a locked environment)."""
    from importlib import metadata  # local: only the engine's caller pays for the scan

    dists = sorted(
        f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]
    )
    blob = "\n".join([sys.version, extra, *dists])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
