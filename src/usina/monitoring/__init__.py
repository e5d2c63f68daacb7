"""Monitoring: the platform's numbers, read from what the engine records.

- ``usina.monitoring.pipeline_metrics``: ``PipelineMetrics``, a Prometheus collector that
  computes run, step, attempt, queue-wait and GPU-second metrics from the metadata store on
  each scrape (GPU-seconds wasted by failure class included), and ways to expose it.
- ``usina.monitoring.drift``: ``psi`` and ``DriftMonitor``: a model's training reference
  (feature and score distributions) against a sliding window of live traffic, as gauges.
- ``usina.monitoring.logs``: ``JsonFormatter``, JSON log lines carrying run, step, attempt and
  request ids. The CLI and the servers install it; the library never configures logging.
- ``usina.monitoring.kpi``: ``compute_kpis``, the KPIs of a period for ``usina kpi``.

An adapter: it reads the engine's records through the ``MetadataStore`` Protocol and imports no
other adapter. The Prometheus parts need ``prometheus-client`` (``pip install
'usina[monitoring]'``); PSI, logs and KPIs need only numpy and the standard library.
"""

from __future__ import annotations

__all__: list[str] = []
