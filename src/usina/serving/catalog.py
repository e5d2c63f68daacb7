"""The models one server serves, by name: each with its repository (versions) and its batcher.

Both protocols ask the catalog for a model and submit batches through it, so one server can
serve several models (``usina serve URI URI ...``). With the repository API on
(``--repository-api``), models are loaded and unloaded at run time through the Open Inference
Protocol's repository extension (``/v2/repository/index``, ``.../load``, ``.../unload``).
A model may run a rollout (``usina.serving.rollout``): the catalog routes each request to the
champion or the challenger, measures both, shadows requests to the challenger, and applies the
rollout's decisions (events, metrics, MLflow tags, the ``champion`` alias on promotion).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from usina.serving.batching import PredictError
from usina.serving.errors import ModelNotFoundError, ModelNotReadyError, OverloadedError
from usina.serving.rollout import Arm, Rollout, State

if TYPE_CHECKING:
    from collections.abc import Callable

    from usina.serving.batching import Batcher, Outputs
    from usina.serving.metrics import ServingMetrics
    from usina.serving.model import Batch, LoadedModel
    from usina.serving.repository import ModelRepository

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    repository: ModelRepository
    batcher: Batcher
    unloaded: bool = False
    challenger: ModelRepository | None = None
    challenger_batcher: Batcher | None = None
    rollout: Rollout | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


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
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics: ServingMetrics | None = None

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

    def route_header(self, name: str) -> bytes | None:
        """The request header whose value makes a rollout's routing sticky (lower case)."""
        entry = self.entries.get(name)
        if entry is None or entry.rollout is None:
            return None
        return entry.rollout.policy.route_header.lower().encode()

    def route(self, name: str, version: str | None, key: str | None) -> tuple[LoadedModel, Arm]:
        """The version that answers this request: the champion, or during a canary the
        challenger for the request's share (sticky by ``key``). An explicit version is served
        as asked."""
        entry = self.entry(name)
        rollout, challenger = entry.rollout, entry.challenger
        if (
            version
            or rollout is None
            or rollout.state is not State.RUNNING
            or challenger is None
            or challenger.current is None
        ):
            return self.get(name, version), Arm.CHAMPION
        if rollout.arm_for(key) is Arm.CHALLENGER:
            return challenger.current, Arm.CHALLENGER
        return self.get(name), Arm.CHAMPION

    async def submit(self, model: LoadedModel, batch: Batch, arm: Arm = Arm.CHAMPION) -> Outputs:
        entry = self.entry(model.name)
        rollout = entry.rollout
        batcher = entry.batcher
        if arm is Arm.CHALLENGER and entry.challenger_batcher is not None:
            batcher = entry.challenger_batcher
        if rollout is None or rollout.state is not State.RUNNING:
            return await batcher.submit(model, batch)
        start = time.perf_counter()
        try:
            outputs = await batcher.submit(model, batch)
        except PredictError:
            rollout.record(arm, ok=False, latency_s=time.perf_counter() - start, score=None)
            raise
        rollout.record(
            arm, ok=True, latency_s=time.perf_counter() - start, score=_score(model, outputs)
        )
        if rollout.shadowing and arm is Arm.CHAMPION:
            self._spawn(self._shadow(entry, batch))
        return outputs

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(self, entry: Entry, batch: Batch) -> None:
        """Score a copy on the challenger: measured and compared, never answered."""
        challenger, batcher, rollout = entry.challenger, entry.challenger_batcher, entry.rollout
        if challenger is None or batcher is None or rollout is None:
            return
        model = challenger.current
        if model is None:
            return
        start = time.perf_counter()
        try:
            outputs = await batcher.submit(model, batch)
        except OverloadedError:
            return  # the shadow's budget is spent: skip, never slow the champion
        except Exception:
            rollout.record(
                Arm.CHALLENGER, ok=False, latency_s=time.perf_counter() - start, score=None
            )
            return
        rollout.record(
            Arm.CHALLENGER,
            ok=True,
            latency_s=time.perf_counter() - start,
            score=_score(model, outputs),
        )

    # -- rollouts -----------------------------------------------------------------------

    def start_rollouts(
        self, metrics: ServingMetrics, record: Any, check_s: float | None = None
    ) -> None:
        """Judge each rollout every ``check_s`` seconds (default: a quarter of a step) and
        apply its decisions; ``record(entry, index, event)`` writes one to the registry."""
        self.metrics = metrics
        for name, entry in self.entries.items():
            if entry.rollout is not None:
                metrics.rollout_percent.labels(name).set(entry.rollout.percent)
                interval = check_s or max(0.05, min(1.0, entry.rollout.policy.step_s / 4))
                self._spawn(self._drive(name, entry, interval, record))

    async def _drive(self, name: str, entry: Entry, interval: float, record: Any) -> None:
        rollout = entry.rollout
        assert rollout is not None
        while rollout.state is State.RUNNING:
            await asyncio.sleep(interval)
            decision = rollout.evaluate()
            if decision is None:
                continue
            event = {
                "model": name,
                "mode": str(rollout.policy.mode),
                "champion_version": rollout.champion_version,
                "challenger_version": rollout.challenger_version,
                **decision.to_json(),
                "measurements": {
                    k: (v if np.isfinite(v) else None) for k, v in decision.measurements.items()
                },
            }
            entry.events.append(event)
            log.info("rollout decision: %s", json.dumps(event))
            if self.metrics is not None:
                self.metrics.rollout_decisions.labels(name, decision.action).inc()
                self.metrics.rollout_percent.labels(name).set(rollout.percent)
            if decision.action == "promote" and entry.challenger is not None:
                promoted = entry.challenger.current
                if promoted is not None:
                    entry.repository.adopt(promoted)
            try:
                await asyncio.to_thread(record, entry, len(entry.events), event)
            except Exception as exc:  # the registry being down must not stop the rollout
                log.warning("could not record the rollout decision in the registry: %s", exc)

    def rollout_status(self, name: str) -> dict[str, Any]:
        entry = self.entry(name)
        rollout = entry.rollout
        if rollout is None:
            return {"model": name, "state": "none"}
        return {
            "model": name,
            "mode": str(rollout.policy.mode),
            "state": str(rollout.state),
            "percent": rollout.percent,
            "champion_version": rollout.champion_version,
            "challenger_version": rollout.challenger_version,
            "decisions": list(entry.events),
        }

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


def _score(model: LoadedModel, outputs: Outputs) -> float | None:
    """The mean score of one answer, for the score-drift gate; None without a score."""
    if model.score_output is None or model.score_output not in outputs:
        return None
    scores = np.asarray(outputs[model.score_output], dtype=np.float64)
    if scores.ndim == 2 and model.score_column is not None:
        scores = scores[:, model.score_column]
    return float(scores.mean()) if scores.size else None
