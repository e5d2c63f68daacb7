"""Rollout decisions in the registry: each is tagged on the challenger's model version, and a
promotion moves the ``champion`` alias to it (the same move the registry gate makes)."""

from __future__ import annotations

import json
from typing import Any

from usina.tracking import adapter
from usina.tracking.registry import CHAMPION


def record_decision(
    tracking_uri: str, name: str, version: str, index: int, decision: dict[str, Any]
) -> None:
    """Tag decision number ``index`` of a rollout on version ``version`` of model ``name``;
    a ``promote`` also moves alias ``champion`` to that version."""
    client = adapter.client(tracking_uri)
    action = str(decision.get("action"))
    client.set_model_version_tag(name, version, f"rollout.{index:02d}", json.dumps(decision))
    client.set_model_version_tag(name, version, "rollout.last", action)
    if action == "promote":
        client.set_registered_model_alias(name, CHAMPION, version)
    if action in ("promote", "rollback"):
        client.set_model_version_tag(name, version, "rollout.outcome", action)
