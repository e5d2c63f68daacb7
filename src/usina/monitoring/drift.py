"""Drift: how far live inference traffic has moved from the data a model was trained on.

The measure is the population stability index, per feature and for the model's score:
``PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i)`` over bins cut at the reference's quantiles
(so each bin holds about the same share of training rows). Read as: below 0.1 stable, 0.1-0.2
moderate, above ``PSI_ALERT`` (0.2) a shift worth a person's look.

- ``DriftReference.from_training(features, scores)`` summarises training data (quantile edges and
  bin shares per feature and for the score); it is a small JSON document that is stored with the
  model version (``usina.tracking.mlflow.log_drift_reference``).
- ``DriftMonitor(reference, model=..., version=...)`` keeps a sliding window of the last
  ``window`` live rows; the serving engine calls ``observe(batch, scores)`` per predicted batch,
  and every ``update_every`` rows it recomputes PSI into the gauges of ``DriftMetrics``:
  ``usina_drift_psi{model,version,feature}``, ``usina_drift_score_psi{model,version}`` and
  ``usina_drift_window_rows{model,version}``. The hot path only copies rows into a ring buffer.

Numeric features only; missing values (NaN) are left out of both sides.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from usina.monitoring.pipeline_metrics import prometheus_client

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike, NDArray

PSI_ALERT = 0.2  # the alert rules' threshold (deploy/helm/usina/files/prometheus-rules.yaml)
DEFAULT_BINS = 10
_EPS = 1e-4  # floor of a bin's share, so an empty bin gives a large but finite PSI
FORMAT = "usina.drift-reference/1"


def _finite(values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[np.isfinite(array)]


def quantile_edges(values: ArrayLike, bins: int = DEFAULT_BINS) -> NDArray[np.float64]:
    """The interior cut points that split ``values`` into ``bins`` equally full bins (fewer
    where values repeat: a binary feature gets one edge)."""
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    data = _finite(values)
    if data.size == 0:
        raise ValueError("cannot build drift bins from no finite values")
    cuts = np.quantile(data, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(cuts)


def _shares(values: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.float64]:
    # Bin i holds edges[i-1] < x <= edges[i]; the last bin everything above the last edge.
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return counts / max(1, values.size)


@dataclass(frozen=True, slots=True)
class Distribution:
    """A reference distribution: interior bin edges and the share of rows in each bin."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]  # len(edges) + 1 values summing to 1

    @classmethod
    def of(cls, values: ArrayLike, bins: int | Sequence[float] = DEFAULT_BINS) -> Distribution:
        data = _finite(values)
        if isinstance(bins, int):
            edges = quantile_edges(data, bins)
        else:
            edges = np.unique(np.asarray(bins, dtype=np.float64))
        return cls(tuple(edges.tolist()), tuple(_shares(data, edges).tolist()))

    def psi(self, live: ArrayLike) -> float:
        """PSI of ``live`` against this distribution; NaN when ``live`` has no finite value."""
        data = _finite(live)
        if data.size == 0:
            return float("nan")
        edges = np.asarray(self.edges, dtype=np.float64)
        actual = np.maximum(_shares(data, edges), _EPS)
        expected = np.maximum(np.asarray(self.shares, dtype=np.float64), _EPS)
        return float(np.sum((actual - expected) * np.log(actual / expected)))

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "shares": list(self.shares)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Distribution:
        return cls(tuple(float(x) for x in data["edges"]), tuple(float(x) for x in data["shares"]))


def psi(
    reference: ArrayLike | Distribution,
    live: ArrayLike,
    bins: int | Sequence[float] = DEFAULT_BINS,
) -> float:
    """The population stability index of ``live`` against ``reference``.

    reference: raw reference values (binned at their quantiles, ``bins`` bins) or a
    ``Distribution``. bins: a number of bins, or the interior edges themselves.
    """
    dist = reference if isinstance(reference, Distribution) else Distribution.of(reference, bins)
    return dist.psi(live)


def _columns(features: Any, names: Sequence[str]) -> NDArray[np.float64]:
    """Rows x features in ``names`` order, from a 2-D array or a mapping/DataFrame by name."""
    if isinstance(features, Mapping) or hasattr(features, "columns"):
        missing = [n for n in names if n not in features]
        if missing:
            raise ValueError(f"the batch lacks the reference's features {missing}")
        return np.column_stack([np.asarray(features[n], dtype=np.float64) for n in names])
    array = np.asarray(features, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != len(names):
        raise ValueError(
            f"a batch of shape {array.shape} does not match the reference's {len(names)} "
            f"features {list(names)}; pass rows x features in that order"
        )
    return array


@dataclass(frozen=True, slots=True)
class DriftReference:
    """What the model was trained on: per-feature and score distributions (quantile bins)."""

    features: tuple[str, ...]
    distributions: Mapping[str, Distribution]
    score: Distribution | None = None
    rows: int = 0

    @classmethod
    def from_training(
        cls,
        features: Any,
        scores: ArrayLike | None = None,
        *,
        names: Sequence[str] | None = None,
        bins: int = DEFAULT_BINS,
    ) -> DriftReference:
        """From the training (or validation) rows and the model's scores on them.

        features: a mapping or DataFrame of columns (every column is used unless ``names`` says
        which), or a rows x features array with ``names``.
        """
        if names is None:
            if not (isinstance(features, Mapping) or hasattr(features, "columns")):
                raise ValueError("an array of features needs names=[...] in column order")
            names = [
                str(n) for n in (features.columns if hasattr(features, "columns") else features)
            ]
        table = _columns(features, names)
        dists = {n: Distribution.of(table[:, i], bins) for i, n in enumerate(names)}
        score = Distribution.of(scores, bins) if scores is not None else None
        return cls(tuple(names), dists, score, int(table.shape[0]))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rows": self.rows,
            "features": [{"name": n, **self.distributions[n].to_json()} for n in self.features],
            "score": self.score.to_json() if self.score is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftReference:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a drift reference ({FORMAT}): format {data.get('format')!r}")
        feats = list(data["features"])
        return cls(
            features=tuple(str(f["name"]) for f in feats),
            distributions={str(f["name"]): Distribution.from_json(f) for f in feats},
            score=Distribution.from_json(data["score"]) if data.get("score") else None,
            rows=int(data.get("rows", 0)),
        )


class DriftMetrics:
    """The drift gauges, registered once per process (like the serving metrics).

    multiprocess_mode: how gauges of several worker processes merge when prometheus_client runs
    in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): the worst live worker by default.
    """

    def __init__(self, registry: Any = None, *, multiprocess_mode: str = "livemax") -> None:
        prom = prometheus_client()
        registry = registry if registry is not None else prom.REGISTRY
        self.feature_psi = prom.Gauge(
            "usina_drift_psi",
            "Population stability index of a feature: live window against the training data.",
            ["model", "version", "feature"],
            registry=registry,
            multiprocess_mode=multiprocess_mode,
        )
        self.score_psi = prom.Gauge(
            "usina_drift_score_psi",
            "Population stability index of the model's score: live window against training.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode=multiprocess_mode,
        )
        self.window_rows = prom.Gauge(
            "usina_drift_window_rows",
            "Live rows in the drift window (PSI is exported once it holds min_rows).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode=multiprocess_mode,
        )


@dataclass(frozen=True, slots=True)
class DriftReport:
    features: dict[str, float]
    score: float | None
    rows: int

    def drifted(self, threshold: float = PSI_ALERT) -> list[str]:
        """Names of the features whose PSI is above ``threshold``."""
        return [n for n, v in self.features.items() if v > threshold]


class DriftMonitor:
    """Live traffic of one model version against its training reference.

    window: rows kept (the newest); min_rows: rows needed before PSI is exported (fewer gives
    noise); update_every: rows between two recomputations of the gauges. Thread-safe.
    """

    def __init__(
        self,
        reference: DriftReference,
        *,
        model: str,
        version: str,
        metrics: DriftMetrics | None = None,
        window: int = 5000,
        min_rows: int = 500,
        update_every: int = 500,
    ) -> None:
        if window < 1 or min_rows < 1 or update_every < 1:
            raise ValueError("window, min_rows and update_every must be >= 1")
        self.reference = reference
        self.model, self.version = model, version
        self.metrics = metrics
        self.window, self.min_rows, self.update_every = window, min(min_rows, window), update_every
        self._x = np.full((window, len(reference.features)), np.nan)
        self._s = np.full(window, np.nan)
        self._pos = 0
        self._rows = 0
        self._since_update = 0
        self._lock = threading.Lock()

    def observe(self, features: Any, scores: ArrayLike | None = None) -> None:
        """Add a predicted batch: rows x features (reference order) or columns by name, and the
        scores of those rows. Recomputes the gauges every ``update_every`` rows."""
        table = _columns(features, self.reference.features)
        score = (
            np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores is not None
            else np.full(table.shape[0], np.nan)
        )
        if score.shape[0] != table.shape[0]:
            raise ValueError(f"{table.shape[0]} rows but {score.shape[0]} scores")
        with self._lock:
            n = table.shape[0]
            if n >= self.window:
                table, score = table[-self.window :], score[-self.window :]
                n = self.window
            end = self._pos + n
            first = min(n, self.window - self._pos)
            self._x[self._pos : self._pos + first] = table[:first]
            self._s[self._pos : self._pos + first] = score[:first]
            if first < n:
                self._x[: n - first] = table[first:]
                self._s[: n - first] = score[first:]
            self._pos = end % self.window
            self._rows = min(self.window, self._rows + n)
            self._since_update += n
            due = self._since_update >= self.update_every
        if due:
            self.update()

    def report(self) -> DriftReport:
        """PSI per feature and for the score over the current window."""
        with self._lock:
            rows = self._rows
            x = self._x[:rows].copy() if rows < self.window else self._x.copy()
            s = self._s[:rows].copy() if rows < self.window else self._s.copy()
        ref = self.reference
        feats = {n: ref.distributions[n].psi(x[:, i]) for i, n in enumerate(ref.features)}
        score = ref.score.psi(s) if ref.score is not None and np.isfinite(s).any() else None
        return DriftReport(feats, score, rows)

    def update(self) -> DriftReport:
        """Recompute PSI and set the gauges (only once the window holds ``min_rows``)."""
        report = self.report()
        with self._lock:
            self._since_update = 0
        m = self.metrics
        if m is not None:
            m.window_rows.labels(self.model, self.version).set(report.rows)
            if report.rows >= self.min_rows:
                for name, value in report.features.items():
                    if np.isfinite(value):
                        m.feature_psi.labels(self.model, self.version, name).set(value)
                if report.score is not None and np.isfinite(report.score):
                    m.score_psi.labels(self.model, self.version).set(report.score)
        return report

    def retire(self) -> None:
        """Drop this version's series (call when the server switches to another version)."""
        m = self.metrics
        if m is None:
            return
        for gauge, labels in (
            (m.window_rows, [(self.model, self.version)]),
            (m.score_psi, [(self.model, self.version)]),
            (m.feature_psi, [(self.model, self.version, n) for n in self.reference.features]),
        ):
            for values in labels:
                with contextlib.suppress(KeyError):
                    gauge.remove(*values)


__all__ = [
    "PSI_ALERT",
    "Distribution",
    "DriftMetrics",
    "DriftMonitor",
    "DriftReference",
    "DriftReport",
    "psi",
    "quantile_edges",
]
