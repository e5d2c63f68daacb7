"""Ship a run's code as a bundle: ``bundle_plan`` packs the pipeline's project into the
artifact store (``usina.bundles.put_bundle``, content-addressed: equal code is stored once) and
rewrites the plan's paths (the steps' files, ``sys_path``) as ``bundle:`` paths, which the pod's
runtime resolves inside the bundle it fetched (``usina.bundles.bootstrap_task``, named by the
``USINA_BUNDLE`` environment variable ``bundle_env`` gives the Jobs)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from usina.bundles import ENV_BUNDLE, find_root, pack, put_bundle, to_bundle_path

if TYPE_CHECKING:
    from pathlib import Path

    from usina.bundles import BundleRef
    from usina.engine.ports import ArtifactStore
    from usina.sdk.pipeline import Plan


def project_root(plan: Plan, root: str | None = None) -> Path:
    """The folder whose files make ``plan``'s bundle."""
    if plan.source is None:
        from usina.errors import DefinitionError

        raise DefinitionError(
            f"pipeline {plan.pipeline!r} has no source file to bundle; run it from a file "
            "(usina run FILE.py[:NAME])"
        )
    return find_root(plan.source, root)


def bundled_paths(plan: Plan, top: Path) -> Plan:
    """``plan`` with its paths under ``top`` as ``bundle:`` paths."""

    def moved(path: str | None) -> str | None:
        return to_bundle_path(path, top) if path else path

    nodes = tuple(dataclasses.replace(n, file=moved(n.file)) for n in plan.nodes)
    return dataclasses.replace(
        plan,
        nodes=nodes,
        source=moved(plan.source),
        sys_path=tuple(to_bundle_path(p, top) for p in plan.sys_path),
    )


def bundle_plan(
    plan: Plan, artifacts: ArtifactStore, *, root: str | None = None
) -> tuple[Plan, BundleRef]:
    """Store the bundle of ``plan``'s project and return the plan with bundle paths."""
    top = project_root(plan, root)
    return bundled_paths(plan, top), put_bundle(artifacts, top)


def bundle_digest(plan: Plan, *, root: str | None = None) -> tuple[Plan, str]:
    """What ``bundle_plan`` would give, without storing anything (``usina k8s render``): the
    plan with bundle paths and the bundle's id (equal files, equal id)."""
    top = project_root(plan, root)
    return bundled_paths(plan, top), pack(top).digest


def bundle_env(ref: BundleRef) -> dict[str, str]:
    """What every attempt's environment needs to fetch the bundle."""
    return {ENV_BUNDLE: ref.digest}
