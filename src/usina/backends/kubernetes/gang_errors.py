"""A failed gang's error record: the rank that failed it, named with its pod.

Each rank's runtime writes ``attempts/<id>/ranks/<r>/error.json``; the engine reads the
attempt's ``error.json``. The ranks of the pod that caused the failure are read (every rank
when that pod is not known), and the earliest error among them is copied as the attempt's,
naming the rank and its pod. The ranks of other pods only failed because the gang broke; their
records stay where they are.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from usina.engine.ports import error_key, rank_error_key

if TYPE_CHECKING:
    from usina.engine.ports import ArtifactStore

log = logging.getLogger(__name__)


def surface_rank_error(
    artifacts: ArtifactStore,
    attempt_id: str,
    gang: tuple[int, int],
    index: int | None,
    cause: str | None,
) -> None:
    """Write the attempt's error record from its ranks' (once; evidence only, never raises).

    gang: ``(nodes, procs_per_node)``; index: the node of the pod that caused the failure
    (None: unknown); cause: that pod's name.
    """
    nodes, per_node = gang
    world = nodes * per_node
    ranks = range(index * per_node, (index + 1) * per_node) if index is not None else range(world)
    try:
        if artifacts.read_record(error_key(attempt_id)) is not None:
            return
        records: list[dict[str, Any]] = []
        for rank in ranks:
            raw = artifacts.read_record(rank_error_key(attempt_id, rank))
            if raw is None:
                continue
            try:
                detail = json.loads(raw)
            except ValueError:
                continue
            if isinstance(detail, dict):
                records.append({**detail, "rank": detail.get("rank", rank)})
        if not records:
            return
        first = min(records, key=lambda d: float(d.get("at") or 0.0) or float("inf"))
        rank = int(first["rank"])
        where = f"rank {rank} of {world} (node {rank // per_node}"
        where += f", pod {cause})" if cause else ")"
        record = {**first, "message": f"{where} failed: {first.get('message', '')}"}
        others = len(records) - 1
        if others:
            record["message"] += f"; {others} other rank(s) of that pod failed too"
        artifacts.write_record(error_key(attempt_id), json.dumps(record).encode())
    except Exception as exc:  # evidence only: the attempt's class stands without it
        log.warning("could not read the rank error records of attempt %s: %s", attempt_id, exc)
