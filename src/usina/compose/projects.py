"""Backends per project: the server runs each project's steps where its settings say.

A platform team gives each project its own place to run: the ``risk`` project's steps as Jobs
in namespace ``risk-ml`` under Kueue queue ``risk``, with its service account and image; the
``sandbox`` project's as local processes. ``ProjectBackend`` is one project's choice (a backend
name and its options, e.g. ``namespace``); ``BackendConfig`` is the default plus the projects,
read from a JSON file (``usina server --backend-config``, the chart's
``jobs``/``jobs.projects`` values); ``ProjectBackends`` is the engine's ``Backend`` that sends
each attempt to its run's project's backend.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usina.engine.ports import Observation, TaskState
from usina.errors import DefinitionError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from usina.engine.ports import Backend, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProjectBackend:
    """Where one project's steps run: a backend by name and its own options (``kubernetes``:
    namespace, queue, image, service_account, priority_class, image_pull_secrets, env,
    secret_env, env_from_secrets, env_from_config_maps, node_selector, tolerations)."""

    backend: str = "local"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """The default backend and each project's own (a project's options are laid over the
    default's when both use the same backend)."""

    default: ProjectBackend = field(default_factory=ProjectBackend)
    projects: Mapping[str, ProjectBackend] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BackendConfig:
        """From ``{"backend": NAME, "options": {...}, "projects": {NAME: {...}}}``."""
        known = {"backend", "options", "projects"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DefinitionError(
                f"backend config: unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        default = ProjectBackend(str(raw.get("backend") or "local"), dict(raw.get("options") or {}))
        projects: dict[str, ProjectBackend] = {}
        for name, entry in dict(raw.get("projects") or {}).items():
            entry = dict(entry or {})
            extra = sorted(set(entry) - {"backend", "options"})
            if extra:
                raise DefinitionError(
                    f"backend config: project {name!r}: unknown key(s) {', '.join(extra)}; "
                    "known: backend, options"
                )
            backend = str(entry.get("backend") or default.backend)
            base = dict(default.options) if backend == default.backend else {}
            projects[str(name)] = ProjectBackend(
                backend, {**base, **dict(entry.get("options") or {})}
            )
        return cls(default, projects)

    @classmethod
    def load(cls, path: str) -> BackendConfig:
        """From a JSON file (the chart renders it with ``toJson``)."""
        with open(path, encoding="utf-8") as fh:
            try:
                raw = json.load(fh)
            except ValueError as exc:
                raise DefinitionError(f"{path}: the backend config is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise DefinitionError(f"{path}: the backend config must be a JSON object")
        return cls.parse(raw)

    def of(self, project: str) -> ProjectBackend:
        return self.projects.get(project, self.default)


class ProjectBackends:
    """The engine's ``Backend`` over one backend per project.

    ``backends`` maps a project to its backend (several projects may share one object);
    ``default`` serves the others. ``project_of(run_id)`` says a run's project (the metadata
    store knows it). An attempt is observed, cancelled and read on the backend that launched
    it; one this process did not launch (a restart) is asked of each backend in turn.
    """

    def __init__(
        self,
        default: Backend,
        backends: Mapping[str, Backend],
        project_of: Callable[[str], str],
    ) -> None:
        self.default = default
        self.backends = dict(backends)
        self.project_of = project_of
        self.name = default.name
        self._owner: dict[str, Backend] = {}
        self._lock = threading.Lock()
        distinct: list[Backend] = [default]
        for backend in self.backends.values():
            if all(backend is not b for b in distinct):
                distinct.append(backend)
        self._all = distinct

    def for_project(self, project: str) -> Backend:
        return self.backends.get(project, self.default)

    def launch(self, task: Task) -> None:
        backend = self.for_project(self.project_of(task.run_id))
        with self._lock:
            self._owner[task.attempt_id] = backend
        backend.launch(task)

    def _owner_of(self, attempt_id: str) -> Backend | None:
        with self._lock:
            return self._owner.get(attempt_id)

    def observe(self, attempt_ids: Sequence[str]) -> dict[str, Observation]:
        groups: dict[int, tuple[Backend, list[str]]] = {}
        unowned: list[str] = []
        for attempt_id in attempt_ids:
            owner = self._owner_of(attempt_id)
            if owner is None:
                unowned.append(attempt_id)
            else:
                groups.setdefault(id(owner), (owner, []))[1].append(attempt_id)
        out: dict[str, Observation] = {}
        for backend, ids in groups.values():
            out.update(backend.observe(ids))
        for backend in self._all:
            if not unowned:
                break
            seen = backend.observe(unowned)
            for attempt_id, obs in seen.items():
                if obs.state is not TaskState.UNKNOWN:
                    out[attempt_id] = obs
                    with self._lock:
                        self._owner[attempt_id] = backend
            unowned = [a for a in unowned if a not in out]
        for attempt_id in unowned:
            out[attempt_id] = Observation(TaskState.UNKNOWN)
        return out

    def _find(self, attempt_id: str) -> Backend:
        owner = self._owner_of(attempt_id)
        if owner is not None:
            return owner
        self.observe([attempt_id])
        return self._owner_of(attempt_id) or self.default

    def cancel(self, attempt_id: str) -> None:
        self._find(attempt_id).cancel(attempt_id)

    def logs(self, attempt_id: str) -> str:
        return self._find(attempt_id).logs(attempt_id)

    def wait(self, timeout: float) -> None:
        if len(self._all) == 1:
            self.default.wait(timeout)
            return
        # Several backends: none can wake for the others, so wait in short slices.
        self.default.wait(min(timeout, 0.25))

    def close(self) -> None:
        for backend in self._all:
            try:
                backend.close()
            except Exception as exc:
                log.warning("could not close backend %s: %s", backend.name, exc)
