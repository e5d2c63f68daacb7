"""Deploying models: a serving endpoint rendered from usina's Helm chart, and applied.

``chart`` renders the chart (``deploy/helm/usina``) with Helm's own Go SDK through the
``helm-python-sdk`` package; ``apply`` server-side-applies the rendered objects; ``cli`` is the
``usina deploy`` command. Everything needs the ``deploy`` extra (``pip install 'usina[deploy]'``).
"""

from __future__ import annotations

from usina.deploy.chart import Endpoint, chart_path, render_chart, render_endpoint

__all__ = ["Endpoint", "chart_path", "render_chart", "render_endpoint"]
