"""The pipelines a server accepts: loaded once from the files given at start.

A submission names a pipeline by name; the server never imports a file a request names, so
an API token cannot make the server run code that its operator did not deploy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usina.errors import DefinitionError, NotFoundError
from usina.runtime.loader import load_file, load_pipeline
from usina.sdk.pipeline import Pipeline, Plan

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


@dataclass(frozen=True, slots=True)
class Registered:
    pipeline: Pipeline
    file: str

    def compile(self, params: Mapping[str, Any]) -> Plan:
        plan = self.pipeline.compile(params)
        folder = os.path.dirname(self.file)
        return Plan(plan.pipeline, plan.params, plan.nodes, plan.source, (folder,))


class PipelineRegistry:
    """Pipelines by name, from ``FILE.py`` (all its pipelines) or ``FILE.py:NAME`` targets."""

    def __init__(self, targets: Iterable[str] = ()) -> None:
        self._by_name: dict[str, Registered] = {}
        for target in targets:
            self.add(target)

    def add(self, target: str) -> list[str]:
        path, _, attr = target.partition(":")
        real = os.path.realpath(path)
        if attr:
            found = {attr: load_pipeline(target)}
        else:
            module = load_file(real)
            found = {v.name: v for v in vars(module).values() if isinstance(v, Pipeline)}
            if not found:
                raise DefinitionError(f"{path} defines no @pipeline")
        for pipe in found.values():
            self._by_name[pipe.name] = Registered(pipe, real)
        return [p.name for p in found.values()]

    def get(self, name: str) -> Registered:
        found = self._by_name.get(name)
        if found is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise NotFoundError(
                f"this server has no pipeline {name!r}; its pipelines: {known} "
                "(start it with --pipelines FILE.py to add one)"
            )
        return found

    def find(self, name: str) -> Registered | None:
        return self._by_name.get(name)

    def all(self) -> list[Registered]:
        return [self._by_name[n] for n in sorted(self._by_name)]

    @property
    def files(self) -> list[str]:
        return sorted({r.file for r in self._by_name.values()})
