"""Models and their aliases in the MLflow registry: read and promote, nothing more.

Thin on purpose: MLflow is the registry (DESIGN.md); the server only shows it and moves
aliases. A model's project is its ``usina.project`` tag ("default" without one). ``mlflow`` is
imported only when a registry URI is configured; without it the routes answer 503.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

from usina.errors import NotFoundError, StoreError
from usina.server.schemas import ModelOut, ModelVersionOut

if TYPE_CHECKING:
    from collections.abc import Collection

PROJECT_TAG = "usina.project"
RUN_TAG = "usina.run_id"  # set by usina.tracking.registry.register_model
STEP_TAG = "usina.step"
_NAME = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,200}$")


class ModelRegistry(Protocol):
    def list_models(self, projects: Collection[str] | None) -> list[ModelOut]: ...
    def project_of(self, name: str) -> str: ...
    def get_model(self, name: str) -> ModelOut: ...
    def set_alias(self, name: str, alias: str, version: str) -> ModelOut: ...


class MlflowModels:
    """The MLflow model registry at ``registry_uri``."""

    def __init__(self, registry_uri: str) -> None:
        self.uri = registry_uri
        self._made: Any = None

    @property
    def _client(self) -> Any:
        # Imported on first use: mlflow takes seconds to import, and a server may never
        # be asked about models.
        if self._made is None:
            from usina.tracking import adapter

            self._made = adapter.new_client(self.uri)
        return self._made

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from usina.tracking import adapter

        try:
            return fn(*args, **kwargs)
        except adapter.error_type() as exc:
            code = adapter.error_code(exc)
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise NotFoundError(f"{what}: {getattr(exc, 'message', exc)}") from exc
            raise StoreError(f"MLflow registry {self.uri}: {what} failed: {exc}") from exc

    def _model(self, rm: Any) -> ModelOut:
        name = str(rm.name)
        if "'" in name:
            versions: list[Any] = []
        else:
            versions = self._call(
                f"listing versions of model {name!r}",
                self._client.search_model_versions,
                f"name='{name}'",
            )
        aliases = {str(a): str(v) for a, v in (getattr(rm, "aliases", None) or {}).items()}
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        out = [
            ModelVersionOut(
                version=str(v.version),
                run_id=v.run_id or None,
                source=v.source or None,
                status=str(v.status) if v.status else None,
                created_at=(v.creation_timestamp / 1000.0) if v.creation_timestamp else None,
                aliases=sorted(by_version.get(str(v.version), [])),
                usina_run_id=(getattr(v, "tags", None) or {}).get(RUN_TAG) or None,
                usina_step=(getattr(v, "tags", None) or {}).get(STEP_TAG) or None,
            )
            for v in versions
        ]
        out.sort(key=lambda v: int(v.version) if v.version.isdigit() else 0, reverse=True)
        return ModelOut(
            name=name, description=rm.description or None, aliases=aliases, versions=out
        )

    def _get(self, name: str) -> Any:
        if not _NAME.match(name):
            raise NotFoundError(f"model {name!r} does not exist")
        return self._call(f"reading model {name!r}", self._client.get_registered_model, name)

    def list_models(self, projects: Collection[str] | None) -> list[ModelOut]:
        found = self._call("listing models", self._client.search_registered_models)
        models = []
        for rm in found:
            project = (getattr(rm, "tags", None) or {}).get(PROJECT_TAG, "default")
            if projects is None or project in projects:
                models.append(self._model(rm))
        return sorted(models, key=lambda m: m.name)

    def project_of(self, name: str) -> str:
        tags = getattr(self._get(name), "tags", None) or {}
        return str(tags.get(PROJECT_TAG, "default"))

    def get_model(self, name: str) -> ModelOut:
        return self._model(self._get(name))

    def set_alias(self, name: str, alias: str, version: str) -> ModelOut:
        self._get(name)
        self._call(
            f"moving alias {alias!r} of model {name!r} to version {version}",
            self._client.set_registered_model_alias,
            name,
            alias,
            version,
        )
        return self.get_model(name)
