"""Backends found by name: the ``usina.backends`` entry-point group.

A backend package declares, in its ``pyproject.toml``::

    [project.entry-points."usina.backends"]
    slurm = "usina_slurm:backend"

where ``backend`` is a ``BackendFactory``: it takes a ``BackendRequest`` (the artifact store,
the attempts folder, the files to preload and the backend's own options, e.g. ``namespace``)
and returns an object of the engine's ``Backend`` port. ``usina run --backend slurm`` and
``usina server --backend slurm`` then use it. The two built-in backends, ``local`` and
``kubernetes``, are declared the same way, and are also found without installed metadata (a
source checkout on ``PYTHONPATH``). Their names are usina's: an installed entry called ``local``
or ``kubernetes`` does not replace them, so naming a built-in never scans the installed
packages' metadata (~50 ms of every ``usina run``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from usina.errors import DefinitionError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from importlib import metadata

    from usina.engine.ports import ArtifactStore, Backend

GROUP = "usina.backends"


@dataclass(frozen=True, slots=True)
class BackendRequest:
    """What a backend factory is given.

    artifacts: the artifact store (attempt logs and records are read and written there).
    attempts_dir: a local folder the backend may use for its attempts (the local backend's
        working folders and logs).
    preload: pipeline files the backend may import ahead of its attempts (local: fork server).
    options: the backend's own settings by name, e.g. ``namespace``, ``queue``, ``image``,
        ``context`` for ``kubernetes``; ``None`` values mean "the backend's default".
    """

    artifacts: ArtifactStore
    attempts_dir: str
    preload: Sequence[str] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> Any:
        return self.options.get(name)


BackendFactory: TypeAlias = "Callable[[BackendRequest], Backend]"

#: The built-in backends, used when the installed package metadata does not list them.
BUILTIN: dict[str, str] = {
    "local": "usina.compose.backends:local_backend",
    "kubernetes": "usina.backends.kubernetes.factory:kubernetes_backend",
}


def local_backend(request: BackendRequest) -> Backend:
    """The local backend: each attempt is a process on this machine."""
    from usina.backends.local import LocalBackend

    os.makedirs(request.attempts_dir, exist_ok=True)
    return LocalBackend(request.attempts_dir, request.artifacts, preload=request.preload)


def entry_points() -> dict[str, metadata.EntryPoint]:
    """Every backend by name: the installed ``usina.backends`` entries, and the built-ins
    (which an installed entry of the same name does not replace)."""
    from importlib import metadata

    found = {ep.name: ep for ep in metadata.entry_points(group=GROUP)}
    return found | {
        name: metadata.EntryPoint(name=name, value=value, group=GROUP)
        for name, value in BUILTIN.items()
    }


def backend_names() -> list[str]:
    return sorted(entry_points())


def backend_factory(name: str) -> BackendFactory:
    """The factory of the backend called ``name``; a ``DefinitionError`` listing the known
    names when there is none."""
    if name in BUILTIN:  # without importing importlib.metadata (~70 ms) or scanning
        module, _, attribute = BUILTIN[name].partition(":")
        value = BUILTIN[name]
        factory = getattr(importlib.import_module(module), attribute)
    else:
        ep = entry_points().get(name)
        if ep is None:
            raise DefinitionError(
                f"unknown backend {name!r}; known backends: {', '.join(backend_names())} "
                f"(a third-party backend is a package with a {GROUP!r} entry point)"
            )
        value = ep.value
        factory = ep.load()
    if not callable(factory):
        raise DefinitionError(f"backend {name!r} ({value}) is not a callable factory")
    return factory  # type: ignore[no-any-return]


def make_backend(name: str, request: BackendRequest) -> Backend:
    return backend_factory(name)(request)
