"""Dynamic batching: requests that arrive together are predicted in one model call.

One :class:`Batcher` per served model and worker runs a loop on the event loop. A batch opens
with the oldest waiting request and grows while requests keep arriving, until it holds
``max_batch_size`` rows or its first request has waited ``max_wait_ms``; as soon as an event-loop
pass brings nothing new it is sent, so an idle server adds no delay. The queue is bounded: past
``max_queue`` waiting requests :meth:`Batcher.submit` raises :class:`OverloadedError` at once.

Each request carries the model version it was admitted with; a batch holds one version only, so
a hot reload never mixes versions and the old version is released when its last batch is done.
Cancelled requests (a client went away) are dropped before predicting and never poison a batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from usina.serving.errors import OverloadedError
from usina.serving.model import batch_rows, concat_batches

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.serving.metrics import ServingMetrics
    from usina.serving.model import Batch, LoadedModel
    from usina.serving.settings import BatchSettings

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


@dataclass(slots=True)
class _Item:
    model: LoadedModel
    batch: Batch
    future: asyncio.Future[Outputs]
    rows: int
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects requests for one model into batches and predicts them on the event loop."""

    def __init__(self, name: str, settings: BatchSettings, metrics: ServingMetrics) -> None:
        self.name = name
        self.max_rows = max(1, settings.max_batch_size)
        self.max_wait = max(0.0, settings.max_wait_ms) / 1000.0
        self.max_queue = max(1, settings.max_queue)
        self.metrics = metrics
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"usina-batcher-{self.name}"
            )

    async def stop(self) -> None:
        """Finish every queued request, then stop the loop."""
        while not self.idle:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, model: LoadedModel, batch: Batch) -> Outputs:
        """Queue ``batch`` (rows on axis 0) for ``model``; wait for its slice of the outputs."""
        if len(self._queue) >= self.max_queue:
            raise OverloadedError(
                f"model {self.name!r} has {len(self._queue)} requests waiting (the limit); "
                "retry later"
            )
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(model, batch, future, batch_rows(batch)))
        if not self._wakeup.is_set():
            self._wakeup.set()
        return await future

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather(queue)
            self._busy = True
            try:
                items = self._take(queue)
                if items:
                    self._predict(items, len(queue))
            except Exception:  # never let one bad batch stop the loop
                log.exception("batch loop error on model %r", self.name)
            finally:
                self._busy = False
            # Let the event loop deliver responses and read new requests between batches.
            await asyncio.sleep(0)

    async def _gather(self, queue: collections.deque[_Item]) -> None:
        """Wait, within the budget, while more requests keep arriving."""
        if self.max_wait <= 0:
            return
        deadline = queue[0].enqueued + self.max_wait
        seen = len(queue)
        quiet = 0
        # Every request has at least one row, so max_rows requests always fill a batch.
        while len(queue) < self.max_rows:
            if time.perf_counter() >= deadline:
                return
            await asyncio.sleep(0)
            if len(queue) == seen:
                quiet += 1
                # Two quiet loop passes: nothing in flight is about to reach the queue.
                if quiet >= 2:
                    return
            else:
                quiet = 0
                seen = len(queue)

    def _take(self, queue: collections.deque[_Item]) -> list[_Item]:
        first = queue.popleft()
        items = [first] if not first.future.done() else []
        rows = first.rows
        model = first.model
        while queue and queue[0].model is model and rows + queue[0].rows <= self.max_rows:
            item = queue.popleft()
            if item.future.done():  # cancelled by its caller
                continue
            items.append(item)
            rows += item.rows
        if not items and queue:
            return self._take(queue)
        return items

    def _observe_drift(self, model: LoadedModel, batch: Batch, scores: np.ndarray) -> None:
        try:
            if isinstance(batch, dict):
                columns = {k: v for k, v in batch.items() if v.ndim == 1 and v.dtype.kind in "biuf"}
            else:
                columns = {meta.name: batch[:, i] for i, meta in enumerate(model.inputs)}
            model.drift.observe(columns, scores)
        except Exception as exc:  # drift must never fail a prediction
            log.warning("drift monitoring of %s failed: %s", self.name, exc)

    def _predict(self, items: list[_Item], depth: int) -> None:
        model = items[0].model
        start = time.perf_counter()
        self.metrics.queued(self.name, [start - i.enqueued for i in items])
        batch = concat_batches([i.batch for i in items])
        rows = sum(i.rows for i in items)
        try:
            outputs: Mapping[str, np.ndarray] = model.predict(batch)
        except Exception as exc:
            log.exception("model %r version %s failed on a batch", model.name, model.version)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(
                        PredictError(
                            f"model {model.name!r} version {model.version} failed on this "
                            f"batch ({type(exc).__name__}); the server log has the details"
                        )
                    )
            return
        elapsed = time.perf_counter() - start
        self.metrics.batch(self.name, model.version, rows, elapsed, depth)
        if model.score_output is not None and model.score_output in outputs:
            scores = np.asarray(outputs[model.score_output])
            if scores.ndim == 2 and model.score_column is not None:
                scores = scores[:, model.score_column]
            if scores.ndim == 1:
                self.metrics.observe_scores(self.name, model.version, scores)
                if model.drift is not None and (isinstance(batch, dict) or batch.ndim == 2):
                    self._observe_drift(model, batch, scores)
        offset = 0
        for item in items:
            n = item.rows
            if not item.future.done():
                item.future.set_result(
                    {k: np.asarray(v)[offset : offset + n] for k, v in outputs.items()}
                )
            offset += n


class PredictError(RuntimeError):
    """The model raised on a batch that passed validation (a server-side failure: 500). Its
    message names the model, never repeats the model library's (which goes to the log)."""
