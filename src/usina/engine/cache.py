"""Cache keys: a step's result is reused only when everything that determines it is the same.

The key hashes the step's code, its constant parameters, the content hashes of its inputs, the
runtime environment, the declared environment variables and the optional ``cache_version``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

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
    """A hash of the Python version and the installed distributions (a locked environment).

    Read from the names of the ``*.dist-info`` folders (they carry name and version), which
    takes a directory listing instead of parsing every distribution's metadata.
    """
    import os
    import sysconfig

    folders = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    dists: list[str] = []
    for folder in folders:
        try:
            dists += [n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
    blob = "\n".join([sys.version, extra, *sorted(dists)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
