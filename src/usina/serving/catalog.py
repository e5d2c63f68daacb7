"""The models one server serves, by name: each with its repository (versions) and its batcher.

Both protocols ask the catalog for a model and submit batches through it, so one server can
serve several models (``usina serve URI URI ...``). With the repository API on
(``--repository-api``), models are loaded and unloaded at run time through the Open Inference
Protocol's repository extension (``/v2/repository/index``, ``.../load``, ``.../unload``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usina.serving.errors import ModelNotFoundError, ModelNotReadyError

if TYPE_CHECKING:
    from collections.abc import Callable

    from usina.serving.batching import Batcher, Outputs
    from usina.serving.model import Batch, LoadedModel
    from usina.serving.repository import ModelRepository


@dataclass(slots=True)
class Entry:
    repository: ModelRepository
    batcher: Batcher
    unloaded: bool = False


class Catalog:
    """Every served model by name. make: builds the entry of a model name that the repository
    API is asked to load and that is not served yet (None: only the models given at start)."""

    def __init__(
        self,
        entries: dict[str, Entry],
        *,
        repository_api: bool = False,
        make: Callable[[str, str], Entry] | None = None,
    ) -> None:
        self.entries = entries
        self.repository_api = repository_api
        self._make = make

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    @property
    def ready(self) -> bool:
        """Every model that is loaded (not unloaded on request) is ready."""
        live = [e for e in self.entries.values() if not e.unloaded]
        return bool(live) and all(e.repository.ready for e in live)

    @property
    def max_rows(self) -> int:
        return max(e.batcher.max_rows for e in self.entries.values())

    def entry(self, name: str) -> Entry:
        found = self.entries.get(name)
        if found is None:
            raise ModelNotFoundError(
                f"model {name!r} is not served here; this server serves "
                f"{', '.join(repr(n) for n in self.entries) or 'no model'}"
            )
        return found

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        entry = self.entry(name)
        if entry.unloaded:
            raise ModelNotReadyError(f"model {name!r} is unloaded; load it to serve it again")
        return entry.repository.get(name, version)

    def set_draining(self) -> None:
        for e in self.entries.values():
            e.repository.draining = True

    async def submit(self, model: LoadedModel, batch: Batch) -> Outputs:
        return await self.entry(model.name).batcher.submit(model, batch)

    # -- the repository extension -------------------------------------------------------

    def index(self) -> list[dict[str, Any]]:
        out = []
        for name, e in self.entries.items():
            current = e.repository.current
            state = "UNAVAILABLE" if e.unloaded or current is None else "READY"
            item: dict[str, Any] = {"name": name, "state": state}
            if current is not None and not e.unloaded:
                item["version"] = current.version
            if e.unloaded:
                item["reason"] = "unloaded"
            out.append(item)
        return out

    async def load(self, name: str, model_uri: str | None) -> None:
        """Load ``name`` (again), or a new model from ``model_uri``; ModelNotFoundError when
        the name is unknown and no URI is given."""
        entry = self.entries.get(name)
        if entry is None:
            if self._make is None or model_uri is None:
                raise ModelNotFoundError(
                    f"model {name!r} is not in this server's repository; pass "
                    '{"parameters": {"model_uri": "models:/NAME@ALIAS"}} to load a new one'
                )
            entry = self._make(name, model_uri)
        await entry.repository.load_initial()
        entry.batcher.start()
        entry.repository.start_polling()
        entry.unloaded = False
        self.entries[name] = entry

    async def unload(self, name: str) -> None:
        entry = self.entry(name)
        entry.unloaded = True
        await entry.repository.stop_polling()
        await entry.batcher.stop()
        entry.repository.release()
