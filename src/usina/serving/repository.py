"""The served model and its lifecycle: initial load, following a registry alias, hot reload.

When the alias moves, the new version is loaded in a thread while the old one keeps serving;
then one assignment switches traffic. Requests already admitted keep a reference to the old
version and finish on it; it is released when the last of them is answered. A failed load leaves
the old version serving, is logged and counted, and is retried at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from usina.serving.errors import ModelLoadError, ModelNotFoundError, ModelNotReadyError

if TYPE_CHECKING:
    from usina.serving.coordination import Coordinator
    from usina.serving.loader import ModelSource
    from usina.serving.metrics import ServingMetrics
    from usina.serving.model import LoadedModel

log = logging.getLogger(__name__)


_DRIFT_METRICS: dict[int, Any] = {}


def drift_metrics(registry: Any) -> Any:
    """The drift gauges of this process, registered once in ``registry``."""
    from usina.monitoring.drift import DriftMetrics

    key = id(registry)
    if key not in _DRIFT_METRICS:
        _DRIFT_METRICS[key] = DriftMetrics(registry)
    return _DRIFT_METRICS[key]


class ModelRepository:
    """Holds the current version of one served model and swaps it when its alias moves."""

    def __init__(
        self,
        source: ModelSource,
        name: str,
        metrics: ServingMetrics,
        *,
        poll_interval_s: float = 30.0,
        predict_threads: int = 1,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self.predict_threads = predict_threads
        self.coordinator = coordinator
        self.current: LoadedModel | None = None
        self.draining = False
        self.load_failures = 0
        self._failed_version: str | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.current is not None and not self.draining

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model to serve ``name`` (at ``version`` when given), or a 404/503 error."""
        if name != self.name:
            raise ModelNotFoundError(
                f"model {name!r} is not served here; this server serves {self.name!r}"
            )
        model = self.current
        if model is None:
            raise ModelNotReadyError(f"model {name!r} is not loaded yet")
        if version and version != model.version:
            raise ModelNotFoundError(
                f"version {version!r} of model {name!r} is not served; the current version is "
                f"{model.version!r}"
            )
        return model

    async def load_initial(self) -> LoadedModel:
        version = await asyncio.to_thread(self.source.resolve)
        model = await self._load(version)
        self._switch(model)
        if self.coordinator is not None:
            self.coordinator.report(self.name, model.version)
        return model

    def start_polling(self) -> None:
        if self.source.follows_alias and self._poller is None and self.poll_interval_s > 0:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll_forever(), name=f"usina-poll-{self.name}"
            )

    async def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poller must outlive any registry hiccup
                log.exception("polling the registry for %s failed", self.source.uri)

    async def poll_once(self) -> bool:
        """Re-resolve the alias; load and switch to a new version. True when it switched."""
        try:
            version = await asyncio.to_thread(self.source.resolve)
        except ModelLoadError as exc:
            log.warning("%s; still serving version %s", exc, self._version())
            return False
        if self.current is not None and version == self.current.version:
            return False
        try:
            model = await self._load(version)
        except ModelLoadError as exc:
            self.load_failures += 1
            self.metrics.load_failures.labels(self.name).inc()
            level = logging.ERROR if version != self._failed_version else logging.WARNING
            self._failed_version = version
            log.log(
                level,
                "alias %s moved to version %s but it failed to load; still serving version %s "
                "and retrying every %.0fs: %s",
                self.source.uri,
                version,
                self._version(),
                self.poll_interval_s,
                exc,
            )
            return False
        if self.coordinator is not None and not await self._agree(version):
            return False
        self._switch(model)
        return True

    async def _agree(self, version: str) -> bool:
        """Wait, serving the old version, until every worker has ``version`` loaded."""
        assert self.coordinator is not None

        async def still_wanted() -> bool:
            try:
                return await asyncio.to_thread(self.source.resolve) == version
            except ModelLoadError:
                return True  # the registry is unreachable: keep waiting

        log.info("version %s of %s is loaded; waiting for every worker", version, self.name)
        agreed = await self.coordinator.agree(
            self.name,
            version,
            still_wanted=still_wanted,
            recheck_s=max(self.poll_interval_s, 1.0),
        )
        if not agreed:
            log.info(
                "alias %s moved on from version %s before every worker had it",
                self.source.uri,
                version,
            )
            self.coordinator.report(self.name, self._version())
        return agreed

    async def _load(self, version: str) -> LoadedModel:
        start = time.perf_counter()
        model = await asyncio.to_thread(self.source.load, self.name, version, self.predict_threads)
        self.metrics.load_seconds.labels(self.name).observe(time.perf_counter() - start)
        monitor = await asyncio.to_thread(self._drift_monitor, model)
        return dataclasses.replace(model, drift=monitor) if monitor is not None else model

    def _drift_monitor(self, model: LoadedModel) -> Any:
        """A drift monitor fed by live traffic, when the version has a training reference
        (logged with ``usina.tracking.mlflow.log_drift_reference``); None otherwise."""
        name = getattr(self.source, "name", None)
        if not name or getattr(self.source, "local_path", None) is not None:
            return None
        try:
            from usina.monitoring.drift import DriftMonitor, DriftReference
            from usina.tracking.mlflow import load_drift_reference

            ref = load_drift_reference(
                f"models:/{name}/{model.version}",
                tracking_uri=getattr(self.source, "tracking_uri", None),
            )
            if ref is None:
                return None
            return DriftMonitor(
                DriftReference.from_json(ref),
                model=self.name,
                version=model.version,
                metrics=drift_metrics(self.metrics.registry),
            )
        except Exception as exc:  # drift is an extra: serving goes on without it
            log.warning("no drift monitoring for %s v%s: %s", self.name, model.version, exc)
            return None

    def _switch(self, model: LoadedModel) -> None:
        old = self.current
        self.current = model  # the atomic switch: new requests see the new version from here
        self._failed_version = None
        self.metrics.set_version(self.name, old.version if old else None, model.version)
        if old is not None:
            weakref.finalize(old, log.info, "released version %s of %s", old.version, self.name)
            log.info(
                "switched %s from version %s to %s (%s)",
                self.name,
                old.version,
                model.version,
                self.source.uri,
            )
        else:
            log.info(
                "serving %s version %s (%s, %s)",
                self.name,
                model.version,
                model.flavour,
                self.source.uri,
            )

    def adopt(self, model: LoadedModel) -> None:
        """Serve ``model`` from now on (a promoted challenger, already loaded and warm)."""
        if self.current is None or self.current.version != model.version:
            self._switch(dataclasses.replace(model, name=self.name))

    def release(self) -> None:
        """Stop serving: requests already admitted finish on the version they hold."""
        old = self.current
        self.current = None
        if old is not None:
            self.metrics.set_version(self.name, old.version, None)
            log.info("unloaded %s version %s", self.name, old.version)

    def _version(self) -> str:
        return self.current.version if self.current is not None else "none"
