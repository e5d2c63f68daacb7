"""Cache keys: a step's result is reused only when everything that determines it is the same.

The key hashes the step's code (its own and the project code it can run, see
``usina.sdk.codedeps``), its constant parameters, the content hashes of its inputs, the
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


def cache_material(
    node: PlanNode,
    input_digests: Mapping[str, str],
    environment: str,
    env_values: Mapping[str, str | None],
) -> dict[str, Any]:
    """Everything a cache key is made of, kept to explain a miss (``miss_reason``)."""
    consts = {name: spec["const"] for name, spec in node.inputs.items() if "const" in spec}
    return {
        "code": node.code_hash,
        "code_deps": dict(node.code_deps),
        "outputs": node.outputs,
        "params": consts,
        "inputs": dict(sorted(input_digests.items())),
        "environment": environment,
        "env": dict(sorted(env_values.items())),
        "cache_version": node.cache_version,
    }


def key_of(material: Mapping[str, Any]) -> str:
    """The key of a material: ``code`` already covers ``code_deps``."""
    keyed = {k: v for k, v in material.items() if k != "code_deps"}
    blob = json.dumps(keyed, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def cache_key(
    node: PlanNode,
    input_digests: Mapping[str, str],
    environment: str,
    env_values: Mapping[str, str | None],
) -> str:
    """The cache key of ``node`` given its inputs' digests (name -> "sha256:...")."""
    return key_of(cache_material(node, input_digests, environment, env_values))


def material_key(key: str) -> str:
    """Where the material of ``key`` is kept in the artifact store's records."""
    return f"cache/{key.removeprefix('sha256:')}.json"


def last_key(pipeline: str, node: str) -> str:
    """Where the last key a node of a pipeline ran with is kept."""
    return f"cache/last/{pipeline}/{node}"


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def miss_reason(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """Why ``new`` did not hit the cache entry made from ``old``, in words."""
    if old is None:
        return "first run"
    reasons: list[str] = []
    old_deps, new_deps = old.get("code_deps") or {}, new.get("code_deps") or {}
    if old.get("code") != new.get("code"):
        changed = _changed(old_deps, new_deps)
        data = [c.removeprefix("data:") for c in changed if c.startswith("data:")]
        code = [c for c in changed if not c.startswith("data:")]
        if code:
            reasons.append("code of " + ", ".join(code[:5]) + (" ..." if len(code) > 5 else ""))
        if data:
            reasons.append("data file " + ", ".join(data))
        if not changed:
            reasons.append("code of the step")
    for field_name, words in (("params", "param"), ("inputs", "input"), ("env", "env var")):
        changed = _changed(old.get(field_name) or {}, new.get(field_name) or {})
        if changed:
            reasons.append(f"{words} " + ", ".join(changed))
    if old.get("environment") != new.get("environment"):
        reasons.append("the Python environment (installed packages)")
    if old.get("cache_version") != new.get("cache_version"):
        reasons.append("cache_version")
    if old.get("outputs") != new.get("outputs"):
        reasons.append("the number of outputs")
    if not reasons:
        return "no cached result"
    return " and ".join(reasons) + " changed"


def image_identity(image: str) -> str:
    """What of a container image reference enters the cache keys of the steps run in it.

    A reference pinned by digest (``repo[:tag]@sha256:<hex>``) is keyed by the digest alone:
    the same bytes under another name or tag give the same key. A reference without a digest
    (``repo:tag``) is keyed by its text: its digest is only known to the registry, which
    planning does not call (it runs offline, and private registries need the pods'
    credentials), so pushing new contents under the same tag does not change the key; pin
    images by digest (``--image repo@sha256:...``), or change the tag, to re-run the steps."""
    name, at, digest = image.rpartition("@")
    if at and name and digest.startswith("sha256:") and len(digest) == len("sha256:") + 64:
        return digest
    return image


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
