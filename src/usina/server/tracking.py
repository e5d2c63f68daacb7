"""Tracking for runs the server drives: each pipeline declared ``@pipeline(tracking="mlflow")``
is logged to MLflow as on the command line; runs of other pipelines are not tracked."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from usina.engine.ports import Tracker
    from usina.engine.records import AttemptRecord, RunRecord, StepRecord
    from usina.server.registry import PipelineRegistry

log = logging.getLogger(__name__)


class PipelineTrackers:
    """A ``Tracker`` that hands each run to its pipeline's tracker, if it declares one."""

    def __init__(self, pipelines: PipelineRegistry, tracking_uri: str) -> None:
        self.pipelines = pipelines
        self.tracking_uri = tracking_uri
        self._trackers: dict[str, Tracker] = {}

    def tracking(self) -> bool:
        """Whether any registered pipeline is tracked."""
        return any(r.pipeline.tracking for r in self.pipelines.all())

    def _for(self, run: RunRecord) -> Tracker | None:
        registered = self.pipelines.find(run.pipeline)
        if registered is None or registered.pipeline.tracking != "mlflow":
            return None
        experiment = registered.pipeline.experiment
        tracker = self._trackers.get(experiment)
        if tracker is None:
            from usina.tracking.tracker import MlflowTracker

            tracker = MlflowTracker(tracking_uri=self.tracking_uri, experiment=experiment)
            self._trackers[experiment] = tracker
        return tracker

    def run_started(self, run: RunRecord) -> None:
        if (tracker := self._for(run)) is not None:
            tracker.run_started(run)

    def step_started(self, run: RunRecord, node: str) -> Mapping[str, str]:
        tracker = self._for(run)
        return tracker.step_started(run, node) if tracker is not None else {}

    def step_finished(
        self, run: RunRecord, step: StepRecord, attempt: AttemptRecord | None
    ) -> None:
        if (tracker := self._for(run)) is not None:
            tracker.step_finished(run, step, attempt)

    def run_finished(self, run: RunRecord) -> None:
        if (tracker := self._for(run)) is not None:
            tracker.run_finished(run)
