"""A gang's headless Service lives as long as its Job: which Services are left to delete.

A Service goes when its Job finishes or disappears. On start, the backend also sweeps the
Services of Jobs deleted while no backend ran (their TTL); a young Service without a Job is
spared, since its Job may be being created right now. Also: reading a Job's gang shape and
whether it finished (pure functions over the Job's JSON).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from usina.backends.kubernetes.classify import parse_time
from usina.backends.kubernetes.distributed import GANG_ANNOTATION
from usina.backends.kubernetes.settings import ATTEMPT_ANNOTATION

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

Obj = dict[str, Any]
#: A gang Service without a Job is an orphan once it is this old (its Job was not created).
SERVICE_GRACE_SECONDS = 300.0


def gang_of(job: Obj) -> tuple[int, int] | None:
    """``(nodes, procs_per_node)`` of a gang's Job, from its annotation; ``None`` otherwise."""
    value = (job["metadata"].get("annotations") or {}).get(GANG_ANNOTATION)
    if not value:
        return None
    nodes, _, per_node = str(value).partition("x")
    try:
        return max(1, int(nodes)), max(1, int(per_node))
    except ValueError:
        return None


def job_finished(job: Obj) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def services_to_retire(
    services: Iterable[Obj],
    jobs: Mapping[str, Obj],
    deleted_jobs: Collection[str],
    launched: Collection[str],
    now: float,
    grace: float = SERVICE_GRACE_SECONDS,
) -> list[str]:
    """Names of usina's gang Services whose Job finished or is gone (see the module)."""
    names = []
    for service in services:
        meta = service.get("metadata") or {}
        name = str(meta.get("name"))
        if ATTEMPT_ANNOTATION not in (meta.get("annotations") or {}):
            continue
        job = jobs.get(name)
        alive = job is not None and name not in deleted_jobs
        if alive and not job_finished(job or {}):
            continue
        created = parse_time(meta.get("creationTimestamp")) or now
        young = now - created < grace
        if job is None and (name in launched or young):
            continue
        names.append(name)
    return names
