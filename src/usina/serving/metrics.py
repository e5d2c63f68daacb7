"""Prometheus metrics of the serving data plane, exported at ``/metrics``.

With several worker processes the values live in prometheus_client's multiprocess files (the
CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start) and every scrape merges them, so
any worker answers for all of them.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from usina import __version__ as usina_version

if TYPE_CHECKING:
    from collections.abc import Sequence

_LATENCY = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_SCORE = tuple(round(i * 0.05, 2) for i in range(1, 21))
_LOAD = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServingMetrics:
    """All serving metrics; children for hot label sets are cached to keep the hot path cheap."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "usina_serving_requests",
            "Inference and metadata requests, by model, version, protocol and status.",
            ["model", "version", "protocol", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "usina_serving_request_duration_seconds",
            "Total time of an inference request inside the server.",
            ["model", "protocol"],
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "usina_serving_queue_duration_seconds",
            "Time an inference request waited for its batch to start.",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "usina_serving_compute_duration_seconds",
            "Time the model took to predict one batch.",
            ["model", "version"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_size = Histogram(
            "usina_serving_batch_size",
            "Rows predicted per model call.",
            ["model"],
            buckets=_BATCH,
            registry=r,
        )
        self.rollout_decisions = Counter(
            "usina_serving_rollout_decisions",
            "Rollout decisions (advance, hold, promote, rollback), by model.",
            ["model", "action"],
            registry=r,
        )
        self.rollout_percent = Gauge(
            "usina_serving_rollout_challenger_percent",
            "Share of answers the rollout's challenger gives now, in percent.",
            ["model"],
            multiprocess_mode="max",
            registry=r,
        )
        self.queue_depth = Gauge(
            "usina_serving_queue_depth",
            "Requests waiting for a batch, summed over workers.",
            ["model"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.scores = Histogram(
            "usina_serving_prediction_score",
            "Predicted scores (the positive-class probability for classifiers).",
            ["model", "version"],
            buckets=_SCORE,
            registry=r,
        )
        self.load_seconds = Histogram(
            "usina_serving_model_load_duration_seconds",
            "Time to download, load and warm up a model version.",
            ["model"],
            buckets=_LOAD,
            registry=r,
        )
        self.load_failures = Counter(
            "usina_serving_model_load_failures",
            "Model versions that failed to load (the previous version kept serving).",
            ["model"],
            registry=r,
        )
        self.model_version = Gauge(
            "usina_serving_model_version_info",
            "1 for the version each model is serving now.",
            ["model", "version"],
            multiprocess_mode="max",
            registry=r,
        )
        self.build_info = Gauge(
            "usina_serving_build_info",
            "The usina version serving (an info metric: the value is always 1).",
            ["version", "python"],
            multiprocess_mode="max",
            registry=r,
        )
        self.build_info.labels(usina_version, platform.python_version()).set(1)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, model: str, version: str, protocol: str, status: str) -> None:
        self._child(self.requests, model, version, protocol, status).inc()

    def request_done(self, model: str, protocol: str, seconds: float) -> None:
        self._child(self.request_seconds, model, protocol).observe(seconds)

    def queued(self, model: str, seconds: Sequence[float]) -> None:
        hist = self._child(self.queue_seconds, model)
        for s in seconds:
            hist.observe(s)

    def batch(self, model: str, version: str, rows: int, seconds: float, depth: int) -> None:
        self._child(self.compute_seconds, model, version).observe(seconds)
        self._child(self.batch_size, model).observe(rows)
        self._child(self.queue_depth, model).set(depth)

    def observe_scores(self, model: str, version: str, scores: np.ndarray) -> None:
        hist = self._child(self.scores, model, version)
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        if values.size < 4:
            for v in values.tolist():
                hist.observe(v)
            return
        # Vectorized: count per bucket once instead of one observe() per row.
        buckets = getattr(hist, "_buckets", None)
        total = getattr(hist, "_sum", None)
        if buckets is None or total is None or len(buckets) != len(_SCORE) + 1:
            for v in values.tolist():
                hist.observe(v)
            return
        counts = np.bincount(np.searchsorted(_SCORE, values, side="left"), minlength=len(buckets))
        for i, n in enumerate(counts.tolist()):
            if n:
                buckets[i].inc(n)
        total.inc(float(values.sum()))

    def set_version(self, model: str, old: str | None, new: str | None) -> None:
        """Mark ``new`` as the served version of ``model`` (None: no version, unloaded)."""
        if old is not None and old != new:
            self.model_version.labels(model, old).set(0)
        if new is not None:
            self.model_version.labels(model, new).set(1)

    def render(self) -> bytes:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


def mark_worker_dead(multiprocess_dir: str, pid: int) -> None:
    """Drop a dead worker's live gauges (queue depth) from the merged view."""
    from prometheus_client import multiprocess

    if os.path.isdir(multiprocess_dir):
        multiprocess.mark_process_dead(pid, multiprocess_dir)  # type: ignore[no-untyped-call]
