"""The one-step pipeline every simulated job runs (the pod's work is simulated; only its shape,
resources and retry policy matter)."""

from __future__ import annotations

from usina import Retry, pipeline, step


@step(retry=Retry(user=0, oom=2, max_disruptions=30))
def train() -> None:
    """Stands in for a training or inference task of the trace."""


@pipeline
def sim_job() -> None:
    train()
