"""Validation of rendered objects: built-in kinds with ``kubernetes-validate`` (strict), CRD
kinds against their CRD's OpenAPI schema (``crds/``), with unknown fields rejected as the API
server's strict field validation does."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils

CRDS = Path(__file__).parent / "crds"
OLDEST = "1.31.0"
NEWEST = kv_utils.latest_version()
VERSIONS = (OLDEST, NEWEST)
Obj = dict[str, Any]


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    """``{(apiVersion, kind): strict JSON schema}`` of every served version of every CRD."""
    out: dict[tuple[str, str], Obj] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict(version["schema"]["openAPIV3Schema"])
                out[(f"{group}/{version['name']}", kind)] = schema
    return out


def strict(schema: Obj) -> Obj:
    """The schema with ``additionalProperties: false`` on every object that lists its
    properties and does not preserve unknown fields (a typo fails instead of being pruned)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            pattern = node.get("pattern")
            if isinstance(pattern, str) and "(?i)" in pattern[1:]:
                # Go's RE2 takes a flag anywhere; Python's re only at the start.
                node["pattern"] = "(?i)" + pattern.replace("(?i)", "")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # ``metadata`` is the API server's (ObjectMeta); the CRD schema only says "object".
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def is_custom(obj: Obj) -> bool:
    return (obj["apiVersion"], obj["kind"]) in crd_schemas()


def validate(obj: Obj) -> None:
    """Raise if ``obj`` is not valid for every supported Kubernetes version (or its CRD)."""
    plain = json.loads(json.dumps(obj))  # as sent: no YAML-only types
    schema = crd_schemas().get((plain["apiVersion"], plain["kind"]))
    if schema is not None:
        jsonschema.validate(plain, schema, cls=jsonschema.Draft7Validator)
        return
    for version in VERSIONS:
        kubernetes_validate.validate(plain, version, strict=True)


def describe(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"
